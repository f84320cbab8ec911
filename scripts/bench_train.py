"""Training throughput of the paper's MNIST MRBM against the machine's measured matmul limit.

    python scripts/bench_train.py [--device cpu|cuda] [--threads N] [--steps S] [--compile] [--bf16]

For 784 visibles (two 392-unit halves), 1000 hidden units, batch 100, it measures in one run:
examples/second of one training step (objective forward + backward + SGD step) for each
objective (MP with T = 5 and T = 10); the matmul FLOPs per example counted from the shapes;
the measured fp32 matmul GFLOP/s of the same shapes; and the ratio achieved / limit.
On a GPU it also prints the seconds per full-MNIST epoch (50,000 examples).
"""

from __future__ import annotations

import argparse
import time

import torch

from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives import CDPercLoss, ContrastiveDivergence, Mixture, MultiPrediction

N_VIS, N_HID, BATCH = 392, 1000, 100


def matmul_flops(rows: int, inner: int, cols: int) -> float:
    return 2.0 * rows * inner * cols


def flops_per_example(name: str, T: int = 5, k: int = 10, chains: int = 500) -> float:
    """Matmul FLOPs per training example, counted from the shapes (backward = 2 × forward)."""
    one = matmul_flops(1, N_VIS, N_HID)  # one modality's W product for one example
    if name.startswith("mp"):
        # per direction: h0 (2 products), T × (visible + hidden of the predicted half), final visible
        fwd = 2 * one + T * 2 * one + one
        return 2 * 3 * fwd  # two directions, forward + backward (2×)
    if name == "cdpl":
        # per direction: h0 (1), sample (1), k steps × (hidden input + sample) (2), F terms by autograd
        chain = 2 * one + k * 2 * one
        fe = 2 * (2 * one) * 3  # F(data) and F(neg) with backward
        return 2 * chain + fe
    if name == "pcd":
        chain = chains / BATCH * k * 4 * one  # chains amortised over the batch
        fe = 2 * (2 * one) * 3 + 2 * one  # F(data), F(neg) with backward, hidden for sparsity
        return chain + fe
    raise ValueError(name)


def objectives(T_values: list[int]) -> dict[str, tuple[object, float]]:
    out = {}
    for T in T_values:
        out[f"mp_T{T}"] = (
            MultiPrediction(mask_rate=0.25, mf_steps=T, bptt_steps=T, grow_every=0),
            flops_per_example("mp", T),
        )
    out["cdpl"] = (CDPercLoss(k=10), flops_per_example("cdpl"))
    out["pcd"] = (ContrastiveDivergence(k=10, persistent=True, n_chains=500), flops_per_example("pcd"))
    hyb = Mixture(
        minvi=MultiPrediction(mask_rate=0.1, mf_steps=5, bptt_steps=5, grow_every=0),
        nll=ContrastiveDivergence(k=10, persistent=True, n_chains=500),
        alpha=0.5,
    )
    out["hybrid"] = (hyb, flops_per_example("mp", 5) + flops_per_example("pcd"))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measured_matmul_gflops(device: torch.device, reps: int) -> float:
    """Best-of median GFLOP/s over the training step's matmul shapes (B×392 @ 392×1000 and back)."""
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
        times.sort()
        results.append(flops / times[len(times) // 2] / 1e9)
    return sum(results) / len(results)


def bench_objective(obj, device: torch.device, steps: int, autocast: bool) -> float:
    """Examples per second of full training steps (median over ``steps`` timed steps)."""
    torch.manual_seed(0)
    model = MultimodalRBM({"left": {"size": N_VIS}, "right": {"size": N_VIS}}, N_HID).to(device)
    obj.setup(model)
    obj.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.5)
    batches = [{m: torch.rand(BATCH, N_VIS, device=device) for m in ("left", "right")} for _ in range(4)]

    def step(v):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
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
    times.sort()
    return BATCH / times[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 gives stable timings on 2 cores)"
    )
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    limit = measured_matmul_gflops(device, reps=30)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} thread(s)"
    )
    print(f"device: {name}; torch {torch.__version__}")
    print(
        f"measured fp32 matmul on the step's shapes (100x392 @ 392x1000, 100x1000 @ 1000x392): {limit:.1f} GFLOP/s"
    )
    print(
        f"{'objective':<10} {'examples/s':>11} {'MFLOP/example':>14} {'GFLOP/s':>8} {'ratio':>6}"
        + ("  s/MNIST-epoch" if device.type == "cuda" else "")
    )
    for name, (obj, fpe) in objectives([5, 10]).items():
        eps = bench_objective(obj, device, args.steps, args.bf16)
        achieved = eps * fpe / 1e9
        line = f"{name:<10} {eps:>11.0f} {fpe / 1e6:>14.1f} {achieved:>8.1f} {achieved / limit:>6.2f}"
        if device.type == "cuda":
            line += f"  {50000 / eps:>13.2f}"
        print(line, flush=True)
    print("target (CPU): MP ratio >= 0.50; (GPU): MP <= 1 s per full-MNIST epoch on one H100")


if __name__ == "__main__":
    main()
