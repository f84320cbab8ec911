"""GPU check (``make gpu-check``, at most ~8 minutes on one GPU): what a CUDA machine gives mmvi.

    python scripts/gpu_check.py [--out DIR] [--budget-s 480] [--data-dir PATH/TO/mnist]

With a CUDA device it measures and records, in ``DIR/gpu_check.json`` and ``DIR/gpu_check.md``
(default ``logs/gpu_check/<time>``):

1. seconds per full-MNIST epoch (50,000 training digits, batch 100) for each paper preset
   (``experiment=paper_mnist_{pcd,cdpl,mp,hybrid}``) in ``32-true`` and ``bf16-mixed``: the real
   training loop (our LightningModule, data module, checkpointing) of a 2-epoch fit; the first
   epoch includes the warm-up, the second is the figure reported;
2. the GPU rows of the training benchmark (``scripts/bench_train.py --device cuda --no-epochs``,
   float32 and ``--bf16``);
3. a 2-epoch DDP run on the GPUs (``trainer=ddp trainer.accelerator=gpu``, every visible GPU) of the MP preset,
   its wall time and status;
4. agreement with the CPU: the same small deterministic run (2,000 digits, MinVI-MP without the
   random mask, 2 epochs) on the CPU and on the GPU; float32 must agree within the stated
   tolerances (parameters 1e-3 absolute, cross-entropies 1e-3 relative, errors 2 points: the
   probe's fit), bf16 within 5e-2 relative on the cross-entropies.

A step that would overrun the time budget is recorded as skipped. On a machine without CUDA it
prints one line saying so and exits 0, writing nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl

REPO = Path(__file__).resolve().parents[1]
PRESETS = ["paper_mnist_pcd", "paper_mnist_cdpl", "paper_mnist_mp", "paper_mnist_hybrid"]
PRECISIONS = ["32-true", "bf16-mixed"]
QUIET = ["~callbacks.rich_progress_bar", "trainer.enable_progress_bar=false", "logger=csv"]
#: a small evaluation: the timings and the agreement check are about training
SMALL_EVAL = [
    "evaluation.n_generation=0",
    "evaluation.mf_steps=20",
    "evaluation.classifier.max_extensions=0",
    "evaluation.classifier.max_train=5000",
]
AGREE = [
    "data.max_examples={train:2000,val:200,test:500}",
    "model.n_hidden=128",
    "objective=minvi_mp",
    "objective.mask_rate=0.0",
    "trainer.max_epochs=2",
    "seed=0",
]
#: (metric prefix, float32 tolerance, bf16 tolerance): absolute for errors (percent), else relative
TOLERANCES = {"classify/err": (2.0, 5.0), "cond_ce/": (1e-3, 5e-2)}
PARAM_TOL_FP32 = 1e-3


class EpochTimer(pl.Callback):
    """Lightning callback: wall seconds of each training epoch (CUDA synchronised)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def _sync(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_epoch_start(self, trainer, module) -> None:  # noqa: ANN001
        self._sync()
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:  # noqa: ANN001
        self._sync()
        self.seconds.append(time.perf_counter() - self._start)


def epoch_seconds(overrides: list[str], run_dir: Path) -> list[float]:
    """Seconds per epoch of the real training loop for ``overrides`` (no evaluation)."""
    from mmvi.api import compose_config
    from mmvi.lifecycle import run_metadata
    from mmvi.train import prepare

    cfg = compose_config("train", overrides, run_dir)
    meta = run_metadata(cfg)
    run = prepare(cfg, meta, run_dir)
    timer = EpochTimer()
    run.trainer.callbacks.append(timer)
    run.lit.model.init_visible_bias_from_data(run.dm.modality_means())
    run.trainer.fit(run.lit, datamodule=run.dm)
    return timer.seconds


def run_cli(args: list[str], timeout: float) -> tuple[int, float, str]:
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    start = time.perf_counter()
    try:
        proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, time.perf_counter() - start, f"timed out after {timeout:.0f}s"
    return proc.returncode, time.perf_counter() - start, proc.stdout + proc.stderr


def compare(cpu: dict, gpu: dict, precision: str) -> dict:
    """Each shared headline metric of the two runs, its difference and whether it is within tolerance."""
    rows = {}
    for key in sorted(set(cpu) & set(gpu)):
        for prefix, (tol32, tol16) in TOLERANCES.items():
            if key.startswith(prefix):
                tol = tol32 if precision == "32-true" else tol16
                diff = abs(gpu[key] - cpu[key])
                bound = tol if prefix == "classify/err" else tol * abs(cpu[key])
                rows[key] = {
                    "cpu": cpu[key],
                    "gpu": gpu[key],
                    "diff": diff,
                    "bound": bound,
                    "ok": diff <= bound,
                }
    return rows


def max_param_difference(a: str, b: str) -> float:
    import torch

    sa = torch.load(a, map_location="cpu", weights_only=False)["state_dict"]
    sb = torch.load(b, map_location="cpu", weights_only=False)["state_dict"]
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa if k.startswith("model."))


def markdown(summary: dict) -> str:
    lines = [
        f"# GPU check: {summary['device']}",
        "",
        f"torch {summary['torch']}, {summary['seconds']:.0f} s",
        "",
    ]
    lines += ["## Seconds per full-MNIST epoch (second epoch; first in brackets)", ""]
    lines += ["| preset | " + " | ".join(PRECISIONS) + " |", "| --- |" + " --- |" * len(PRECISIONS)]
    for preset in PRESETS:
        cells = []
        for precision in PRECISIONS:
            row = summary["epochs"].get(f"{preset}/{precision}", {})
            s = row.get("seconds") or []
            cells.append(f"{s[-1]:.2f} ({s[0]:.2f})" if s else row.get("status", "-"))
        lines.append(f"| {preset} | " + " | ".join(cells) + " |")
    for name, bench in summary["bench"].items():
        lines += [
            "",
            f"## bench_train.py --device cuda {name}",
            "",
            "```",
            bench.get("output", "").strip(),
            "```",
        ]
    ddp = summary["ddp"]
    lines += [
        "",
        "## DDP, trainer=gpu, 2 epochs",
        "",
        f"{ddp.get('status')}: {ddp.get('wall_s', 0):.0f} s wall",
    ]
    lines += ["", "## Agreement with the CPU", ""]
    for precision, rows in summary["agreement"].items():
        if "metrics" not in rows:
            lines.append(f"* {precision}: {rows.get('status')}")
            continue
        lines.append(
            f"* {precision}: max |parameter difference| {rows.get('max_param_diff', float('nan')):.3g}"
        )
        for key, r in rows["metrics"].items():
            flag = "ok" if r["ok"] else "OUTSIDE TOLERANCE"
            lines.append(
                f"  * {key}: cpu {r['cpu']:.4f}, gpu {r['gpu']:.4f}, |diff| {r['diff']:.3g} <= {r['bound']:.3g}: {flag}"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=None, help="folder of gpu_check.json/.md")
    p.add_argument("--budget-s", type=float, default=480.0, help="stop starting new steps after this time")
    p.add_argument("--data-dir", default=None, help="the MNIST IDX folder (default: the config's)")
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device on this machine (torch {torch.__version__}); nothing to measure")
        return 0

    start = time.perf_counter()
    left = lambda: args.budget_s - (time.perf_counter() - start)  # noqa: E731
    out = args.out or REPO / "logs" / "gpu_check" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    data = [f"data.data_dir={args.data_dir}"] if args.data_dir else []
    if not data and os.environ.get("MMVI_SHARED_DATA"):
        data = [f"data.data_dir={Path(os.environ['MMVI_SHARED_DATA']) / 'mnist'}"]
    torch.set_float32_matmul_precision("highest")  # float32 means float32 (no TF32) for the agreement
    summary: dict = {
        "device": torch.cuda.get_device_name(0),
        "n_gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "budget_s": args.budget_s,
        "epochs": {},
        "bench": {},
        "ddp": {},
        "agreement": {},
        "tolerances": {"param_fp32": PARAM_TOL_FP32, **{k: list(v) for k, v in TOLERANCES.items()}},
    }
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))

    def save() -> None:
        summary["seconds"] = time.perf_counter() - start
        (out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
        (out / "gpu_check.md").write_text(markdown(summary))

    # 4 first: the agreement is the check that must not be skipped
    from mmvi.api import run as run_mmvi

    cpu = run_mmvi(
        [*AGREE, *QUIET, *SMALL_EVAL, *data, "trainer.accelerator=cpu"], run_dir=work / "agree-cpu"
    )
    for precision in PRECISIONS:
        over = [*AGREE, *QUIET, *SMALL_EVAL, *data, "trainer=gpu", f"trainer.precision={precision}"]
        gpu = run_mmvi(over, run_dir=work / f"agree-{precision}")
        summary["agreement"][precision] = {
            "metrics": compare(cpu["metrics"], gpu["metrics"], precision),
            "max_param_diff": max_param_difference(
                f"{cpu['run_dir']}/checkpoints/last.ckpt", f"{gpu['run_dir']}/checkpoints/last.ckpt"
            ),
        }
    save()
    # 1. seconds per epoch
    for preset in PRESETS:
        for precision in PRECISIONS:
            key = f"{preset}/{precision}"
            if left() < 60:
                summary["epochs"][key] = {"status": "skipped (time budget)"}
                continue
            over = [f"experiment={preset}", "trainer=gpu", f"trainer.precision={precision}"]
            over += ["trainer.max_epochs=2", *QUIET, *data]
            try:
                seconds = epoch_seconds(over, work / key.replace("/", "-"))
                summary["epochs"][key] = {"status": "measured", "seconds": seconds}
            except Exception as exc:  # noqa: BLE001 - recorded, the check goes on
                summary["epochs"][key] = {"status": f"failed: {type(exc).__name__}: {exc}"}
            save()
    # 2. the benchmark's GPU rows
    for name, extra in (("float32", []), ("bf16", ["--bf16"])):
        if left() < 45:
            summary["bench"][name] = {"status": "skipped (time budget)"}
            continue
        cmd = [
            sys.executable,
            str(REPO / "scripts" / "bench_train.py"),
            "--device",
            "cuda",
            "--no-epochs",
            *extra,
        ]
        rc, wall, text = run_cli(cmd, timeout=max(30.0, left() - 30))
        summary["bench"][name] = {
            "status": "ok" if rc == 0 else f"exit {rc}",
            "wall_s": wall,
            "output": text[-4000:],
        }
        save()
    # 3. DDP on every visible GPU
    if left() < 60:
        summary["ddp"] = {"status": "skipped (time budget)"}
    else:
        n = torch.cuda.device_count()
        cmd = [sys.executable, "-m", "mmvi.train", "experiment=paper_mnist_mp", "trainer=ddp"]
        cmd += [
            "trainer.accelerator=gpu",
            f"trainer.devices={n}",
            "trainer.max_epochs=2",
            *QUIET,
            *SMALL_EVAL,
            *data,
        ]
        cmd += [f"hydra.run.dir={work / 'ddp'}"]
        rc, wall, text = run_cli(cmd, timeout=max(30.0, left()))
        res = work / "ddp" / "results.json"
        status = json.loads(res.read_text()).get("status") if res.is_file() else "no results.json"
        summary["ddp"] = {
            "status": f"{status} (exit {rc})",
            "devices": n,
            "wall_s": wall,
            "tail": text[-2000:],
        }
    save()
    agree = all(r["ok"] for rows in summary["agreement"].values() for r in rows.get("metrics", {}).values())
    agree = agree and summary["agreement"]["32-true"]["max_param_diff"] <= PARAM_TOL_FP32
    print(markdown(summary))
    print(
        f"gpu_check: {out / 'gpu_check.json'}, {out / 'gpu_check.md'}; CPU agreement {'ok' if agree else 'FAILED'}"
    )
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
