"""Retrieval figure: a few queries, each followed by its top-k retrieved items (one PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from mmvi.evaluation.retrieval import topk_indices  # noqa: E402
from mmvi.utils import atomic_path  # noqa: E402


def retrieval_topk(
    query_reps: Tensor, db_reps: Tensor, query_idx: Sequence[int] | Tensor, k: int, exclude_self: bool = True
) -> Tensor:
    """(len(query_idx), k) indices of the k database items most cosine-similar to the chosen queries.

    ``query_idx`` indexes the rows of ``query_reps``; with ``exclude_self`` (query set = database)
    the query's own row is never returned. Ties go to the lower database index.
    """
    idx = torch.as_tensor(query_idx, dtype=torch.long)
    return topk_indices(query_reps[idx], db_reps, k, exclude_self=exclude_self, query_index=idx)


def _as_images(images) -> np.ndarray | None:
    if images is None:
        return None
    arr = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] != 3):
        raise ValueError(f"images must be (N, H, W) or (N, H, W, 3), got {arr.shape}")
    return arr


def _tile(
    ax, images: np.ndarray | None, i: int, caption: str | None, title: str | None, colour: str | None
) -> None:
    if images is not None:
        img = images[i]
        if img.ndim == 2:
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=max(1.0, float(img.max())))
        else:
            ax.imshow(np.clip(img, 0, 1) if img.dtype.kind == "f" else img)
    else:
        ax.text(0.5, 0.5, caption or str(i), ha="center", va="center", wrap=True, fontsize=6)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    ax.set_xticks([])
    ax.set_yticks([])
    if colour is not None:
        for side in ax.spines.values():
            side.set_edgecolor(colour)
            side.set_linewidth(2.5)
    if title:
        ax.set_title(title, fontsize=7)
    if caption and images is not None:
        ax.set_xlabel(caption, fontsize=6)


def retrieval_figure(
    query_images,
    db_images,
    query_idx: Sequence[int] | Tensor,
    topk_idx: Tensor | np.ndarray,
    path: str | Path,
    captions: Sequence[str] | None = None,
    query_captions: Sequence[str] | None = None,
    relevant: Tensor | np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Save one PNG: row r shows query ``query_idx[r]`` then its retrieved items ``topk_idx[r]``.

    Images are (N, H, W) grey or (N, H, W, 3) RGB arrays/tensors, or None (a text tile showing the
    caption instead). ``captions`` are the database items' labels/tags (written under each tile);
    ``query_captions`` the queries' (default: ``captions`` when the queries are database rows,
    i.e. ``query_images is db_images``). ``relevant`` (rows × k bool) frames retrieved items
    green (relevant) or red.
    """
    q_imgs, d_imgs = _as_images(query_images), _as_images(db_images)
    q_idx = [int(i) for i in (query_idx.tolist() if isinstance(query_idx, Tensor) else query_idx)]
    top = np.asarray(topk_idx.cpu() if isinstance(topk_idx, Tensor) else topk_idx)
    if top.ndim != 2 or top.shape[0] != len(q_idx):
        raise ValueError(f"topk_idx must be (n_queries={len(q_idx)}, k), got {top.shape}")
    if query_captions is None and query_images is db_images:
        query_captions = captions
    rel = (
        None if relevant is None else np.asarray(relevant.cpu() if isinstance(relevant, Tensor) else relevant)
    )
    rows, k = top.shape
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.2 * (k + 1), 1.4 * rows), squeeze=False)
    for r, qi in enumerate(q_idx):
        qcap = None if query_captions is None else str(query_captions[qi])
        _tile(axes[r][0], q_imgs, qi, qcap, "query" if r == 0 else None, "black")
        for j in range(k):
            di = int(top[r, j])
            cap = None if captions is None else str(captions[di])
            colour = None if rel is None else ("tab:green" if rel[r, j] else "tab:red")
            _tile(axes[r][j + 1], d_imgs, di, cap, f"#{j + 1}" if r == 0 else None, colour)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
