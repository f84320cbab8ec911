"""How cost grows: seconds per epoch and per evaluation against the hidden layer, the number of
modalities, the batch and the threads, with each growth exponent beside the FLOP count's.

    python scripts/bench_growth.py [--objectives pcd_k1,mp_T5_K1] [--steps 10] [--no-eval]

Training: the median seconds of one step (loss, backward, SGD step; bench_train's settings and
objectives) times the steps of a 50,000-example epoch, on random binary batches. Axes: hidden
256 → 4096 (392 + 392 visible, batch 100); modalities 2, 4, 8 at an equal total of 784 visible
units (784/M each, 1000 hidden); batch 25 → 400 (paper size); 1 and 2 threads (paper size).
Evaluation: ``conf/evaluation/default.yaml``'s evaluation (native inference of the first
objective) of a model trained one epoch on the first 5,000 MNIST training images (1,000
validation, 2,000 test), the images cut into the axis's modalities (columns for 2, a 2×2 grid for
4, 2×4 for 8). Exponent: the slope of log seconds on log size over the axis; the FLOP exponent is
the same slope of :mod:`mmvi.objectives.cost`'s count per epoch (training) and of the evaluation's
matmul count (inference over every query type, linear in the hidden units). Method:
docs/workflow.md §4.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
EPOCH = 50_000
HIDDEN = (256, 512, 1024, 2048, 4096)
MODALITIES = {2: (1, 2), 4: (2, 2), 8: (2, 4)}
BATCHES = (25, 50, 100, 200, 400)


def _bench_train():
    spec = importlib.util.spec_from_file_location("bench_train", HERE / "bench_train.py")
    bt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bt)
    return bt


BT = _bench_train()


def model_config(sizes: dict[str, int], n_hidden: int) -> dict:
    return {
        **BT.MODEL,
        "modalities": {m: {"size": n, "units": "bernoulli"} for m, n in sizes.items()},
        "n_hidden": n_hidden,
    }


def split_sizes(M: int, total: int = 784) -> dict[str, int]:
    return {f"m{i}": total // M for i in range(M)}


def epoch_point(
    key: str, sizes: dict[str, int], n_hidden: int, batch: int, steps: int
) -> tuple[float, float]:
    """(seconds, FLOPs) of one 50,000-example epoch: median step × steps per epoch."""
    from mmvi.objectives import cost

    model = model_config(sizes, n_hidden)
    step = BT.bench_step_alone(
        BT.OBJECTIVES[key], torch.device("cpu"), steps, False, model_cfg=model, batch=batch
    )
    lit = BT.lit_module(BT.OBJECTIVES[key], model)
    n_steps = math.ceil(EPOCH / batch)
    return step * n_steps, cost.step_flops(lit.objective, lit.model, batch) * n_steps


def exponent(xs, ys) -> float:
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def print_axis(name: str, xs, rows: dict[str, list[tuple[float, float]]], unit: str) -> None:
    print(f"\n[{name}] seconds per {unit}")
    print(f"  {'objective':<10} " + " ".join(f"{x:>8}" for x in xs) + f" {'exponent':>9} {'FLOP exp.':>9}")
    for key, pts in rows.items():
        secs = [p[0] for p in pts]
        flops = [p[1] for p in pts]
        flop_exp = exponent(xs, flops) if all(f > 0 for f in flops) else float("nan")
        print(
            f"  {key:<10} "
            + " ".join(f"{s:>8.2f}" for s in secs)
            + f" {exponent(xs, secs):>9.2f} {flop_exp:>9.2f}",
            flush=True,
        )


def eval_point(key: str, M: int, n_hidden: int, data_dir: str) -> tuple[float, float]:
    """(seconds, inference FLOPs) of the default evaluation of a model trained one epoch."""
    from mmvi.data.idx import IDXImages
    from mmvi.evaluation.protocol import evaluate
    from mmvi.evaluation.representations import query_given, query_types

    rows, cols = MODALITIES[M]
    dm = IDXImages(
        data_dir=data_dir,
        cut="columns" if M == 2 else "grid",
        grid=None if M == 2 else [rows, cols],
        batch_size=BT.BATCH,
        eval_batch_size=1000,
        max_examples={"train": 5000, "val": 1000, "test": 2000},
    )
    dm.setup()
    sizes = {m: int(x.shape[1]) for m, x in dm.splits["train"].modalities.items()}
    lit = BT.lit_module(BT.OBJECTIVES[key], model_config(sizes, n_hidden))
    lit.model.init_visible_bias_from_data(dm.modality_means())
    opt = torch.optim.SGD(lit.model.parameters(), lr=0.01, momentum=0.5)
    train = dm.splits["train"].modalities
    for i in range(0, 5000, BT.BATCH):
        loss, _ = lit.objective(lit.model, {m: (x[i : i + BT.BATCH] > 0.5).float() for m, x in train.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    lit.model.eval()
    settings = BT.default_evaluation_settings()
    steps = lit.objective.native_inference_steps
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        t0 = time.perf_counter()
        evaluate(lit.model, dm, Path(folder), native_steps=steps, **settings)
        secs = time.perf_counter() - t0
    n_items = sum(len(dm.splits[k]) for k in ("train", "val", "test"))
    names = list(sizes)
    flops = 0.0
    for q in query_types(lit.model):  # mean-field: up from the given, then steps × (down + up) of the rest
        given = query_given(q, names)
        rest = [m for m in names if m not in given]
        per = 2 * n_hidden * (sum(sizes[m] for m in given) + steps * 2 * sum(sizes[m] for m in rest))
        flops += per * n_items
    return secs, flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objectives", default="pcd_k1,mp_T5_K1", help="keys of bench_train.OBJECTIVES")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per point")
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluation points")
    ap.add_argument("--data-dir", default=None, help="the MNIST IDX files (default: the shared data folder)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("mmvi").setLevel(logging.WARNING)
    keys = args.objectives.split(",")
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}; CPU, float32; one thread unless stated; epoch = {EPOCH:,} examples")
    halves = {"left": 392, "right": 392}

    print_axis(
        "hidden units (392 + 392 visible, batch 100)",
        HIDDEN,
        {k: [epoch_point(k, halves, h, BT.BATCH, args.steps) for h in HIDDEN] for k in keys},
        "epoch",
    )
    print_axis(
        "modalities at 784 visible in all (1000 hidden, batch 100)",
        list(MODALITIES),
        {k: [epoch_point(k, split_sizes(M), 1000, BT.BATCH, args.steps) for M in MODALITIES] for k in keys},
        "epoch",
    )
    by_batch = {k: [epoch_point(k, halves, 1000, b, args.steps) for b in BATCHES] for k in keys}
    print_axis("batch (392 + 392 -> 1000)", BATCHES, by_batch, "epoch")
    print("\n[threads] seconds per epoch (392 + 392 -> 1000, batch 100)")
    print(f"  {'objective':<10} {'1 thread':>9} {'2 threads':>9} {'speed-up':>9} {'ideal':>6}")
    for k in keys:
        one = by_batch[k][BATCHES.index(BT.BATCH)][0]  # the batch axis's point at batch 100, one thread
        torch.set_num_threads(2)
        two = epoch_point(k, halves, 1000, BT.BATCH, args.steps)[0]
        torch.set_num_threads(1)
        print(f"  {k:<10} {one:>9.2f} {two:>9.2f} {one / two:>8.2f}x {2:>6}", flush=True)
    if args.no_eval:
        return
    data_dir = args.data_dir or BT.shared_mnist_dir()
    key = keys[-1]
    hid = (256, 1024, 4096)
    print(f"\nevaluation: default measures, native inference of {key}, 5,000 / 1,000 / 2,000 MNIST images")
    print_axis(
        "evaluation, hidden units (2 halves)",
        hid,
        {key: [eval_point(key, 2, h, data_dir) for h in hid]},
        "evaluation",
    )
    by_modalities = {key: [eval_point(key, M, 1000, data_dir) for M in MODALITIES]}
    print_axis("evaluation, modalities (1000 hidden)", list(MODALITIES), by_modalities, "evaluation")
    one = by_modalities[key][list(MODALITIES).index(2)][0]  # two halves, one thread
    torch.set_num_threads(2)
    two = eval_point(key, 2, 1000, data_dir)[0]
    torch.set_num_threads(1)
    print(
        f"\n[threads] evaluation (2 halves, 1000 hidden): 1 thread {one:.1f} s, 2 threads {two:.1f} s, {one / two:.2f}x"
    )


if __name__ == "__main__":
    main()
