"""Training speed: the objective step alone, the step inside the Lightning loop, and seconds per epoch.

    python scripts/bench_train.py [--device cpu|cuda] [--threads N] [--steps S] [--bf16] [--no-epochs]

On the paper's MNIST multimodal RBM (392 + 392 → 1000, batch 100, float32): (1) per objective,
examples/s of the step alone and inside the real Lightning Trainer, the loop's overhead, FLOPs and
achieved GFLOP/s against measured matmul throughput; (2) seconds per epoch on mnist5k in the full
loop, beside the reference code's figures. Settings and method: docs/workflow.md §4.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from mmvi.data.base import Split
from mmvi.data.mnist import MNIST5kHalves
from mmvi.deep.stages import SplitsDataModule
from mmvi.lit.module import MultimodalLitModule
from mmvi.objectives import cost

N_VIS, N_HID, BATCH = 392, 1000, 100
MODEL = {
    "_target_": "mmvi.models.MultimodalRBM",
    "modalities": {
        "left": {"size": N_VIS, "units": "bernoulli"},
        "right": {"size": N_VIS, "units": "bernoulli"},
    },
    "n_hidden": N_HID,
    "init_std": 0.01,
}
OPTIM = {
    "lr": 0.01,
    "lr_decay": 0.005,
    "momentum_initial": 0.33,
    "momentum": 0.47,
    "momentum_switch_epoch": 5,
    "momentum_dampening": True,
    "weight_decay": 1e-4,
}
# the reference code's early-epoch settings (docs/paper.md §2: k_t = 1 and K_t = 1 in the first epochs), with
# the paper presets' data binarisation, sparsity forms and MP hidden clamp
OBJECTIVES = {
    "pcd_k1": {
        "_target_": "mmvi.objectives.ContrastiveDivergence",
        "k": 1,
        "persistent": True,
        "n_chains": 500,
        "sparsity_weight": 0.3,
        "sparsity_target": 0.05,
        "sparsity_form": "running_average",
        "binarize_data": True,
    },
    "cdpl_k10": {
        "_target_": "mmvi.objectives.CDPercLoss",
        "k": 10,
        "sparsity_weight": 0.1,
        "sparsity_target": 0.1,
        "sparsity_form": "running_average",
        "binarize_data": True,
    },
    "mp_T5_K1": {
        "_target_": "mmvi.objectives.MultiPrediction",
        "mask_rate": 0.25,
        "mf_steps": 5,
        "bptt_steps": 1,
        "grow_every": 0,
        "hidden_clamp": 1e-6,
        "sparsity_weight": 0.1,
        "sparsity_target": 0.1,
    },
    "mp_T5_full": {
        "_target_": "mmvi.objectives.MultiPrediction",
        "mask_rate": 0.25,
        "mf_steps": 5,
        "bptt_steps": 5,
        "grow_every": 0,
        "hidden_clamp": 1e-6,
        "sparsity_weight": 0.1,
        "sparsity_target": 0.1,
    },
}
# Seconds per mnist5k epoch of the reference MATLAB code under GNU Octave (float64, one thread, this
# machine type, the settings above), as reported in the project's tracker entry "Speed: three times the
# reference code per epoch at equal settings" (its table, column "reference").
REFERENCE_SECONDS_PER_EPOCH = {"pcd_k1": 4.02, "cdpl_k10": 9.75, "mp_T5_K1": 4.15}
TARGET_SPEEDUP = 3.0
HERE = Path(__file__).resolve().parent


def shared_mnist_dir() -> str | None:
    """The shared data folder's MNIST IDX files (``$MMVI_SHARED_DATA``/mnist, else ../shared/data/mnist
    beside the repository), or None when absent; used by every benchmark that reads MNIST."""
    shared = Path(os.environ.get("MMVI_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
    return str(shared / "mnist") if (shared / "mnist").is_dir() else None


def default_evaluation_settings() -> dict:
    """``conf/evaluation/default.yaml`` as keyword arguments of :func:`mmvi.evaluation.protocol.evaluate`."""
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(
        OmegaConf.load(HERE.parent / "conf" / "evaluation" / "default.yaml"), resolve=True
    )
    return {k: v for k, v in settings.items() if not k.startswith("_")}


def matmul_flops(rows: int, inner: int, cols: int) -> float:
    return 2.0 * rows * inner * cols


def flops_per_example(objective: dict) -> float:
    """Matmul FLOPs per training example of the first epoch (:mod:`mmvi.objectives.cost`)."""
    lit = lit_module(objective)
    return cost.flops_per_example(lit.objective, lit.model, BATCH)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measured_matmul_gflops(device: torch.device, reps: int) -> float:
    """Median GFLOP/s of the training step's matmul shapes (B×392 @ 392×1000 and back)."""
    a = torch.rand(BATCH, N_VIS, device=device)
    w = torch.rand(N_VIS, N_HID, device=device)
    h = torch.rand(BATCH, N_HID, device=device)
    flops = matmul_flops(BATCH, N_VIS, N_HID)
    results = []
    for fn in (lambda: a @ w, lambda: h @ w.T):
        for _ in range(10):
            fn()
        sync(device)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(10):
                fn()
            sync(device)
            times.append((time.perf_counter() - t0) / 10)
        results.append(flops / statistics.median(times) / 1e9)
    return sum(results) / len(results)


def lit_module(objective: dict, model_cfg: dict | None = None) -> MultimodalLitModule:
    torch.manual_seed(0)
    return MultimodalLitModule(model=model_cfg or MODEL, objective=objective, optim=OPTIM)


def random_batches(
    n: int, device: torch.device, sizes: dict[str, int] | None = None, batch: int = BATCH
) -> list[dict[str, torch.Tensor]]:
    """``n`` batches of uniform [0, 1) data (each objective's own binarisation applies)."""
    g = torch.Generator().manual_seed(0)
    sizes = sizes or {"left": N_VIS, "right": N_VIS}
    return [{m: torch.rand(batch, k, generator=g).to(device) for m, k in sizes.items()} for _ in range(n)]


def bench_step_alone(
    objective: dict,
    device: torch.device,
    steps: int,
    bf16: bool,
    model_cfg: dict | None = None,
    batch: int = BATCH,
) -> float:
    """Median seconds of one training step outside Lightning: loss, backward, SGD step
    (``model_cfg``: a model config, default :data:`MODEL`; ``batch`` examples per step)."""
    lit = lit_module(objective, model_cfg).to(device)
    model, obj = lit.model, lit.objective
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.5)
    batches = random_batches(4, device, dict(model.sizes), batch)

    def step(v):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = obj(model, v)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(3):
        step(batches[i % 4])
    sync(device)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(batches[i % 4])
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class StepTimer(Callback):
    """Times every training-loop iteration: from one batch's start to the next one's."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        sync(self.device)
        self.starts.append(time.perf_counter())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        sync(self.device)
        self.starts.append(time.perf_counter())

    def median(self, skip: int) -> float:
        gaps = [b - a for a, b in zip(self.starts, self.starts[1:])][skip:]
        return statistics.median(gaps)


def trainer(device: torch.device, folder: str, callbacks: list, bf16: bool, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if bf16 else "32-true",
        default_root_dir=folder,
        logger=CSVLogger(folder, name="csv"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def bench_step_in_loop(objective: dict, device: torch.device, steps: int, bf16: bool) -> float:
    """Median seconds of one training-loop iteration of the real Trainer (in-memory data)."""
    warm = 3
    n = (steps + warm + 1) * BATCH
    g = torch.Generator().manual_seed(0)
    split = Split({m: torch.rand(n, N_VIS, generator=g) for m in ("left", "right")}, torch.zeros(n, 1))
    dm = SplitsDataModule(
        {"train": split, "val": split.subset(slice(0, BATCH)), "test": split}, batch_size=BATCH
    )
    timer = StepTimer(device)
    lit = lit_module(objective)
    with tempfile.TemporaryDirectory() as folder:
        trainer(device, folder, [timer], bf16, max_epochs=1, limit_val_batches=0).fit(lit, datamodule=dm)
    return timer.median(skip=warm)


def mnist5k_fit_seconds(objective: dict, epochs: int, device: torch.device, bf16: bool) -> float:
    """Wall seconds of a fresh fit on mnist5k: the full loop with validation and checkpoints."""
    dm = MNIST5kHalves(batch_size=BATCH, eval_batch_size=1000)
    dm.setup()
    lit = lit_module(objective)
    lit.model.init_visible_bias_from_data(dm.modality_means())
    with tempfile.TemporaryDirectory() as folder:
        ckpt = ModelCheckpoint(dirpath=Path(folder) / "checkpoints", save_last=True, save_top_k=1)
        tr = trainer(device, folder, [ckpt], bf16, max_epochs=epochs)
        sync(device)
        t0 = time.perf_counter()
        tr.fit(lit, datamodule=dm)
        sync(device)
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable timings on 2 cores)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--no-epochs", action="store_true", help="skip the mnist5k seconds-per-epoch table")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    limit = measured_matmul_gflops(device, reps=30)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} thread(s)"
    )
    print(f"device: {name}; torch {torch.__version__}; {'bf16 autocast' if args.bf16 else 'float32'}")
    print(
        f"measured matmul on the step's shapes (100x392 @ 392x1000, 100x1000 @ 1000x392): {limit:.1f} GFLOP/s\n"
    )
    header = (
        f"{'objective':<11} {'step ex/s':>10} {'loop ex/s':>10} {'overhead':>9} "
        f"{'MFLOP/ex':>9} {'GFLOP/s':>8} {'ratio':>6}"
    )
    print(header)
    for key, objective in OBJECTIVES.items():
        alone = bench_step_alone(objective, device, args.steps, args.bf16)
        loop = bench_step_in_loop(objective, device, args.steps, args.bf16)
        fpe = flops_per_example(objective)
        achieved = BATCH / alone * fpe / 1e9
        print(
            f"{key:<11} {BATCH / alone:>10.0f} {BATCH / loop:>10.0f} {100 * (loop - alone) / alone:>8.1f}% "
            f"{fpe / 1e6:>9.1f} {achieved:>8.1f} {achieved / limit:>6.2f}",
            flush=True,
        )
    print("targets: loop overhead <= 10 % for every objective; mp_T5_full ratio >= 0.85\n")
    if args.no_epochs:
        return
    print(f"{'objective':<11} {'s/epoch':>8} {'reference':>10} {'speed-up':>9} {'target s/epoch':>15}")
    for key, ref in REFERENCE_SECONDS_PER_EPOCH.items():
        one = mnist5k_fit_seconds(OBJECTIVES[key], 1, device, args.bf16)
        five = mnist5k_fit_seconds(OBJECTIVES[key], 5, device, args.bf16)
        per_epoch = (five - one) / 4
        print(
            f"{key:<11} {per_epoch:>8.2f} {ref:>10.2f} {ref / per_epoch:>8.2f}x {ref / TARGET_SPEEDUP:>15.2f}",
            flush=True,
        )
    print(
        f"s/epoch = (5-epoch fit - 1-epoch fit) / 4 on the 3,500 mnist5k digits; target {TARGET_SPEEDUP:g}x"
    )


if __name__ == "__main__":
    main()
