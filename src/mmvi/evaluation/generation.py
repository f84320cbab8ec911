"""The paper's generation figure: missing modalities generated from the given ones (docs/paper.md §2).

The data module draws the examples (:meth:`mmvi.data.base.MultimodalDataModule.example_images`),
whatever the cut of the image into modalities: row 1 the true images; then, for each modality m,
the image with only m given and the rest inferred by mean-field; with three or more modalities,
also each image with every modality but m given and m inferred. Data that are not images get no
figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from mmvi.data.base import MultimodalDataModule  # noqa: E402
from mmvi.models.mrbm import MultimodalRBM  # noqa: E402
from mmvi.utils import atomic_path  # noqa: E402


def generation_queries(names: list[str]) -> list[tuple[str, list[str]]]:
    """``(row label, given modalities)`` of each generated row, in order.

    Two modalities: ``left → right`` (left given), ``right → left``; three or more: ``m → rest``
    for each m, then ``rest → m``.
    """
    if len(names) == 2:
        a, b = names
        return [(f"{a} → {b}", [a]), (f"{b} → {a}", [b])]
    single = [(f"{m} → rest", [m]) for m in names]
    if len(names) < 3:
        return single
    return single + [(f"rest → {m}", [n for n in names if n != m]) for m in names]


@torch.no_grad()
def generation_grid(
    model: MultimodalRBM,
    dm: MultimodalDataModule,
    modalities: Mapping[str, Tensor],
    path: Path,
    steps: int = 100,
    tol: float | None = 1e-5,
    title: str = "",
) -> Path | None:
    """PNG: the true examples, then one row per query of :func:`generation_queries`.

    ``modalities`` holds the examples to draw, ``{m: (n, n_m)}`` for every modality of the model.
    Returns the path, or None when the data module does not draw its examples as images.
    """
    true = dm.example_images(modalities)
    if true is None:
        return None
    device = model.c.device
    v = {m: modalities[m].to(device) for m in model.names}
    rows = [("true", true)]
    for label, given in generation_queries(list(model.names)):
        completed = model.infer_missing({m: v[m] for m in given}, steps=steps, tol=tol)[0]
        rows.append((label, dm.example_images(completed)))
    n = true.shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n + 0.6, 1.2 * len(rows)), squeeze=False)
    cmap = plt.get_cmap("gray").with_extremes(bad="white")  # pieces not drawn
    for r, (name, imgs) in enumerate(rows):
        for i in range(n):
            ax = axes[r][i]
            img = imgs[i].detach().cpu().numpy()
            if img.ndim == 2:
                ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
            else:
                ax.imshow(img.clip(0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
