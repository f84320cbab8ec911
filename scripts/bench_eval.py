"""Benchmark of the evaluation measures: retrieval mAP vs torchmetrics, AIS conditional likelihood.

    python scripts/bench_eval.py [--threads 2] [--parts retrieval,ais,probe] [--full-torchmetrics]

(a) retrieval mAP/P@50 on 10,000 × 10,000 against torchmetrics ``RetrievalMAP``; (b) seconds of
the likelihoods at the default settings (both conditionals and the joint) on 10,000 test items of a
392 + 392 → 1000 RBM, measured on a few items and βs and scaled linearly, with 1 and 2 threads; (c) with ``--probe``: the multi-label
probe, torch L-BFGS against scikit-learn one-vs-rest. What each part measures: docs/workflow.md §4.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mmvi.evaluation import partition as P
from mmvi.evaluation.retrieval import cosine_scores, per_query_retrieval, relevance
from mmvi.models.mrbm import MultimodalRBM


def _bench_train():
    """scripts/bench_train.py as a module (loaded on demand: it imports Lightning)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_train", Path(__file__).with_name("bench_train.py"))
    bt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bt)
    return bt


def bench_retrieval(n: int, n_labels: int, multi: bool, tm_queries: int, full_tm: bool, k: int = 50) -> None:
    from torchmetrics.retrieval import RetrievalMAP

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 64, generator=gen)
    if multi:
        labels = (torch.rand(n, n_labels, generator=gen) < 0.05).float()
        kind = f"{n_labels} multi-labels (p=0.05 each)"
    else:
        labels = torch.nn.functional.one_hot(
            torch.randint(0, n_labels, (n,), generator=gen), n_labels
        ).float()
        kind = f"{n_labels} classes"
    per_query_retrieval(x[:500], x[:500], labels[:500], labels[:500], k=k)  # warm-up
    t = time.perf_counter()
    ap, _ = per_query_retrieval(x, x, labels, labels, k=k, exclude_self=True)
    ours = time.perf_counter() - t
    ours_map = float(ap.mean())

    nq = n if full_tm else min(tm_queries, n)
    t = time.perf_counter()
    scores = cosine_scores(x[:nq], x).double() + 2.0
    rel = relevance(labels[:nq], labels)
    keep = torch.ones(nq, n, dtype=torch.bool)
    keep[torch.arange(nq), torch.arange(nq)] = False
    idx = torch.arange(nq).unsqueeze(1).expand(nq, n)
    tm_map = float(RetrievalMAP()(scores[keep], rel[keep], idx[keep]))
    tm_time = (time.perf_counter() - t) * (n / nq)
    diff = abs(float(ap[:nq].mean()) - tm_map)
    how = "full" if nq == n else f"{nq} queries x {n} db, time scaled x{n / nq:g}"
    ratio = tm_time / ours
    print(f"[retrieval] {n}x{n}, {kind}, cosine, exclude self, k={k}")
    print(f"  ours:        {ours:7.2f} s   mAP = {ours_map:.6f}")
    print(f"  torchmetrics:{tm_time:7.2f} s   ({how})")
    print(f"  speed ratio: {ratio:.1f}x   max |mAP diff| on the same queries = {diff:.2e}")
    print(
        f"  targets: <= 2 s: {'met' if ours <= 2 else 'NOT met'};  >= 10x: {'met' if ratio >= 10 else 'NOT met'}"
    )


def bench_ais(n_items: int, measured_items: int, measured_betas: int, threads: list[int]) -> None:
    """Seconds of ``likelihood_metrics`` at the default settings on ``n_items`` test items of a
    392 + 392 → 1000 RBM: the conditional AIS of both directions (timed on ``measured_items`` items
    and ``measured_betas`` βs, scaled) plus the joint log Z (timed on ``measured_betas`` βs, scaled)."""
    lik = _bench_train().default_evaluation_settings()["likelihood"]
    R, K, hidden = int(lik["n_ais_runs"]), int(lik["n_betas"]), lik["ais_hidden_base"]
    JR, JK = int(lik["joint_ais_runs"]), int(lik["joint_betas"])
    items = n_items if lik["n_examples"] is None else min(n_items, int(lik["n_examples"]))
    torch.manual_seed(0)
    model = MultimodalRBM({"left": {"size": 392}, "right": {"size": 392}}, 1000, init_std=0.01)
    gen = torch.Generator().manual_seed(1)
    v = {m: (torch.rand(measured_items, 392, generator=gen) < 0.13).float() for m in model.names}
    mk, jk = min(measured_betas, K), min(measured_betas, JK)
    print("[AIS] 392+392 -> 1000 RBM, N(0, 0.01^2) weights, float32 chains, conf/evaluation/default.yaml")
    print(
        f"  conditionals: {items:,} items x 2 directions x {R} runs x {K} betas ({lik['ais_base']} base, "
        f"{hidden} hidden base), timed on {measured_items} items x {mk} betas and scaled"
    )
    print(f"  joint log Z: {JR} runs x {JK} betas, timed on {jk} betas and scaled")
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        with torch.no_grad():
            model.init_visible_bias_from_data({m: x.mean(0) for m, x in v.items()})
            base = P.meanfield_base_mean(model, {"left": v["left"]}, "right")
            P.ais_conditional_logz(model, {"left": v["left"]}, "right", base, R, 3, hidden_base=hidden)
            t = time.perf_counter()
            base = P.meanfield_base_mean(model, {"left": v["left"]}, "right")
            P.ais_conditional_logz(model, {"left": v["left"]}, "right", base, R, mk, hidden_base=hidden)
            step_us = (time.perf_counter() - t) / (measured_items * R * mk) * 1e6
            t = time.perf_counter()
            P.ais_logz(model, None, JR, jk)
            joint_s = (time.perf_counter() - t) * JK / jk
        cond_s = step_us * 1e-6 * items * 2 * R * K
        total = cond_s + joint_s
        print(
            f"  threads={n_threads}: {step_us:.1f} us per item, run and beta -> conditionals {cond_s:.0f} s, "
            f"joint {joint_s:.0f} s, total {total:.0f} s; target <= 300 s (one core): "
            f"{'met' if total <= 300 else 'NOT met'}"
        )


def bench_probe() -> None:
    from sklearn.linear_model import LogisticRegression

    from mmvi.evaluation.classify import fit_logistic_l2

    gen = torch.Generator().manual_seed(0)
    n, D, K = 10000, 2000, 38
    Z = torch.randn(n, 20, generator=gen)
    X = torch.sigmoid(Z @ torch.randn(20, D, generator=gen) + torch.randn(n, D, generator=gen))
    Y = ((Z @ torch.randn(20, K, generator=gen) + torch.randn(n, K, generator=gen)) > 1.5).float()
    Cs = (0.01, 0.1, 1.0, 10.0, 100.0)
    t = time.perf_counter()
    fit_logistic_l2(X, Y, Cs)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    for c in range(3):
        LogisticRegression(C=1.0, max_iter=500).fit(X.numpy(), Y[:, c].numpy())
    sk = (time.perf_counter() - t) / 3 * K * len(Cs)
    print(f"[probe] {n}x{D} features, {K} classes, {len(Cs)} Cs")
    print(f"  joint torch L-BFGS: {ours:.1f} s;  sklearn one-vs-rest (3 classes x C=1, scaled): {sk:.1f} s")


def bench_protocol(data_dir: str | None, objective: str, epochs: int, n_train: int | None) -> None:
    """The default evaluation of a paper-size run, part by part, against its training time.

    392 + 392 -> 1000 RBM on full MNIST (50,000 / 10,000 / 10,000), trained ``epochs`` epochs
    (>= 1) in the real Lightning loop at the reference settings of ``objective``; its training
    seconds are scaled to 10 epochs. Then ``conf/evaluation/default.yaml`` as a run evaluates it.
    """
    import logging
    import tempfile
    import warnings
    from pathlib import Path

    import lightning.pytorch as pl

    from mmvi.data.mnist import MNISTHalves
    from mmvi.evaluation.protocol import evaluate
    from mmvi.lit.module import MultimodalLitModule

    bt = _bench_train()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    if data_dir is None:
        data_dir = bt.shared_mnist_dir()
    dm = MNISTHalves(data_dir=data_dir, batch_size=bt.BATCH, eval_batch_size=1000)
    dm.setup()
    if n_train is not None:
        dm.splits["train"] = dm.splits["train"].subset(slice(0, n_train))
    sizes = "/".join(f"{len(dm.splits[k]):,}" for k in ("train", "val", "test"))
    torch.manual_seed(0)
    lit = MultimodalLitModule(model=bt.MODEL, objective=bt.OBJECTIVES[objective], optim=bt.OPTIM)
    lit.model.init_visible_bias_from_data(dm.modality_means())
    with tempfile.TemporaryDirectory() as folder:
        tr = pl.Trainer(
            accelerator="cpu",
            devices=1,
            default_root_dir=folder,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            max_epochs=epochs,
        )
        t0 = time.perf_counter()
        tr.fit(lit, datamodule=dm)
        train_s = (time.perf_counter() - t0) * 10 / epochs
        settings = bt.default_evaluation_settings()
        native = lit.objective.native_inference_steps
        t0 = time.perf_counter()
        metrics, _ = evaluate(lit.model, dm, Path(folder), native_steps=native, **settings)
        eval_s = time.perf_counter() - t0
    print(
        f"[protocol] 392+392 -> 1000 RBM, MNIST {sizes}, {objective} trained {epochs} epoch(s), "
        f"default evaluation (native inference: {native} steps), threads={torch.get_num_threads()}"
    )
    print(
        f"  10-epoch training: {train_s:8.1f} s" + (f" ({epochs} measured, scaled)" if epochs != 10 else "")
    )
    parts = {k[len("eval/seconds/") :]: float(v) for k, v in metrics.items() if k.startswith("eval/seconds/")}
    for part, secs in parts.items():
        print(f"  {part:<28} {secs:8.1f} s  {100 * secs / train_s:6.2f} % of training")
    print(f"  {'evaluation, total':<28} {eval_s:8.1f} s  {100 * eval_s / train_s:6.2f} % of training")
    shown = {k: float(v) for k, v in metrics.items() if k.startswith(("classify/", "cond_ce/"))}
    print("  measures: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
    print(f"  target <= 10 % of training: {'met' if eval_s <= 0.1 * train_s else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--tm-queries", type=int, default=1000)
    ap.add_argument("--full-torchmetrics", action="store_true")
    ap.add_argument("--ais-items", type=int, default=10000, help="test items the likelihoods cover")
    ap.add_argument("--ais-measured-items", type=int, default=256)
    ap.add_argument("--ais-measured-betas", type=int, default=100)
    ap.add_argument("--ais-threads", default="1,2", help="thread counts to time AIS with")
    ap.add_argument(
        "--parts", default="retrieval,ais,protocol", help="comma list of retrieval, ais, probe, protocol"
    )
    ap.add_argument(
        "--protocol-threads", type=int, default=1, help="threads of the protocol part (training + evaluation)"
    )
    ap.add_argument("--protocol-objective", default="pcd_k1", help="a key of bench_train.OBJECTIVES")
    ap.add_argument("--protocol-epochs", type=int, default=1, help="epochs trained and timed (scaled to 10)")
    ap.add_argument(
        "--protocol-train", type=int, default=None, help="first n training digits (default: all 50,000)"
    )
    ap.add_argument("--data-dir", default=None, help="the MNIST IDX files (default: the shared data folder)")
    ap.add_argument("--probe", action="store_true", help="same as adding 'probe' to --parts")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, numpy {np.__version__}, threads used: {torch.get_num_threads()}")
    parts = set(args.parts.split(",")) | ({"probe"} if args.probe else set())
    if "retrieval" in parts:
        bench_retrieval(args.n, 38, True, args.tm_queries, args.full_torchmetrics)
        bench_retrieval(args.n, 10, False, args.tm_queries, args.full_torchmetrics)
    if "ais" in parts:
        threads = [int(t) for t in args.ais_threads.split(",")]
        bench_ais(args.ais_items, args.ais_measured_items, args.ais_measured_betas, threads)
        torch.set_num_threads(args.threads)
    if "probe" in parts:
        bench_probe()
    if "protocol" in parts:
        torch.set_num_threads(args.protocol_threads)
        bench_protocol(args.data_dir, args.protocol_objective, args.protocol_epochs, args.protocol_train)


if __name__ == "__main__":
    main()
