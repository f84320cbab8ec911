"""The paper's generation figure: a missing half generated from the given half (PAPER.md §2)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from mmvi.data.mnist import join_halves  # noqa: E402
from mmvi.models.mrbm import MultimodalRBM  # noqa: E402
from mmvi.utils import atomic_path  # noqa: E402


@torch.no_grad()
def halves_generation_grid(
    model: MultimodalRBM,
    left: torch.Tensor,
    right: torch.Tensor,
    path: Path,
    steps: int = 100,
    tol: float | None = 1e-5,
    title: str = "",
) -> Path:
    """PNG with three rows: true digit; left half + generated right; generated left + right half."""
    device = model.c.device
    left, right = left.to(device), right.to(device)
    gen_right = model.infer_missing({"left": left}, steps=steps, tol=tol)[0]["right"]
    gen_left = model.infer_missing({"right": right}, steps=steps, tol=tol)[0]["left"]
    rows = [
        ("true", join_halves(left, right)),
        ("left → right", join_halves(left, gen_right)),
        ("left ← right", join_halves(gen_left, right)),
    ]
    n = left.shape[0]
    fig, axes = plt.subplots(3, n, figsize=(1.1 * n, 3.6), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for i in range(n):
            ax = axes[r][i]
            ax.imshow(imgs[i].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
