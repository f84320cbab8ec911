"""Any image set in MNIST's IDX format, each image cut into modalities (docs/paper.md §2, generalised).

The four IDX files of ``data_dir`` (gzip or not, optional sha256 checks); train = the first
N − ``n_val`` training images, val = the last ``n_val``, test = the test file; ``uint8`` pixels
/ 255; the cut (:class:`ImageCut`: ``columns``, ``rows`` or a ``grid``, pieces as even as
``numpy.array_split`` makes them, flattened row-major): docs/data.md §2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmvi.data.base import MultimodalDataModule, Split, one_hot
from mmvi.data.files import read_bytes_maybe_gzip
from mmvi.data.preprocess import float32_overflow
from mmvi.errors import DataError

# IDX type codes (third magic byte) → big-endian numpy dtypes
IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IDX_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CUTS = ("columns", "rows", "grid")
HOW_TO_GET_IDX = (
    "Put the four IDX files (training images and labels, test images and labels; gzip or not) in "
    "data.data_dir and name them with data.files={train_images: ..., train_labels: ..., test_images: ..., "
    "test_labels: ...} when they are not MNIST's names."
)


def parse_idx(raw: bytes, source: str, how_to_get: str = HOW_TO_GET_IDX) -> np.ndarray:
    """The array stored in IDX bytes: magic 0 0 <type> <ndim>, ndim big-endian int32 sizes, data.

    Raises:
        DataError: not IDX (wrong magic), or the data are shorter/longer than the header says.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES or raw[3] == 0:
        raise DataError(f"{source}: not an IDX file (magic bytes {raw[:4].hex() or 'none'}). {how_to_get}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source}: IDX header cut short ({len(raw)} bytes). {how_to_get}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_TYPES[raw[2]]
    count = math.prod(dims)
    if len(raw) - header != count * dtype.itemsize:
        raise DataError(
            f"{source}: the IDX header says shape {dims} ({count * dtype.itemsize} data bytes) but the file "
            f"holds {len(raw) - header}; it is truncated or corrupt. {how_to_get}"
        )
    return np.frombuffer(raw, dtype, count=count, offset=header).reshape(dims)


def find_file(folder: Path, name: str) -> Path:
    """``folder/name``, else the same name with ``.gz`` added or removed (whichever exists)."""
    path = folder / name
    if path.is_file():
        return path
    other = path.with_suffix("") if path.suffix == ".gz" else path.with_name(path.name + ".gz")
    return other if other.is_file() else path


class ImageCut:
    """How (H, W) images are cut into modalities and joined back (docs/data.md §2).

    Args:
        height, width: image size in pixels.
        cut: ``columns`` | ``rows`` | ``grid``.
        grid: ``(r, c)`` pieces for ``cut="grid"`` (ignored otherwise).

    Raises:
        DataError: an unknown cut, a grid that is not two positive integers with r·c ≥ 2, or more
            pieces than pixels along a side.
    """

    def __init__(self, height: int, width: int, cut: str = "columns", grid: Sequence[int] | None = None):
        if cut not in CUTS:
            raise DataError(f"data.cut={cut!r}; allowed: {', '.join(CUTS)}")
        if cut == "grid":
            shape = tuple(grid) if grid is not None else ()
            if len(shape) != 2 or not all(isinstance(k, int) and not isinstance(k, bool) for k in shape):
                raise DataError(f"data.grid={grid!r}: give [rows, columns] as two integers, e.g. [2, 2]")
            r, c = shape
            if r < 1 or c < 1 or r * c < 2:
                raise DataError(f"data.grid={list(shape)}: need r, c >= 1 and r*c >= 2 pieces")
        else:
            r, c = (1, 2) if cut == "columns" else (2, 1)
        if r > height or c > width:
            raise DataError(
                f"data.grid=[{r}, {c}] has more pieces than the {height}x{width} images have pixels"
            )
        self.height, self.width, self.cut, self.shape = int(height), int(width), cut, (r, c)
        rows = [slice(int(p[0]), int(p[-1]) + 1) for p in np.array_split(np.arange(height), r)]
        cols = [slice(int(p[0]), int(p[-1]) + 1) for p in np.array_split(np.arange(width), c)]
        if cut == "columns":
            names = ["left", "right"]
        elif cut == "rows":
            names = ["top", "bottom"]
        else:
            names = [f"r{i}c{j}" for i in range(r) for j in range(c)]
        boxes = [(rs, cs) for rs in rows for cs in cols]
        #: ``{modality: (row slice, column slice)}`` in modality order
        self.pieces: dict[str, tuple[slice, slice]] = dict(zip(names, boxes, strict=True))

    @property
    def names(self) -> list[str]:
        return list(self.pieces)

    def sizes(self) -> dict[str, int]:
        return {m: (rs.stop - rs.start) * (cs.stop - cs.start) for m, (rs, cs) in self.pieces.items()}

    def split(self, images: np.ndarray | Tensor) -> dict[str, Tensor]:
        """(N, H, W) images → ``{modality: (N, h·w) float32}``, each piece flattened row-major."""
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images)
        if x.dim() != 3 or tuple(x.shape[1:]) != (self.height, self.width):
            raise ValueError(f"images must be (N, {self.height}, {self.width}), got {tuple(x.shape)}")
        n = x.shape[0]
        return {m: x[:, rs, cs].reshape(n, -1).float().contiguous() for m, (rs, cs) in self.pieces.items()}

    def join(self, pieces: Mapping[str, Tensor]) -> Tensor:
        """Inverse of :meth:`split` for the pieces given: (N, H, W), pixels of absent pieces NaN.

        Raises:
            ValueError: a piece of an unknown name or size, or none given.
        """
        known = {m: x for m, x in pieces.items() if m in self.pieces}
        if not known:
            raise ValueError(f"no piece of the image given; pieces: {self.names}")
        first = next(iter(known.values()))
        n = first.shape[0]
        out = torch.full((n, self.height, self.width), float("nan"), dtype=torch.float32)
        sizes = self.sizes()
        for m, x in known.items():
            if x.dim() != 2 or x.shape != (n, sizes[m]):
                raise ValueError(f"piece {m!r} must be ({n}, {sizes[m]}), got {tuple(x.shape)}")
            rs, cs = self.pieces[m]
            out[:, rs, cs] = x.detach().float().cpu().reshape(n, rs.stop - rs.start, cs.stop - cs.start)
        return out


class CutImageData(MultimodalDataModule):
    """Base of data modules whose examples are grey images cut into modalities by an :class:`ImageCut`.

    Args:
        cut, grid: see :class:`ImageCut`.
        **kwargs: :class:`MultimodalDataModule` arguments.
    """

    def __init__(self, cut: str = "columns", grid: Sequence[int] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cut = str(cut)
        self.grid = None if grid is None else list(grid)
        self.image_cut: ImageCut | None = None

    def make_cut(self, height: int, width: int) -> ImageCut:
        self.image_cut = ImageCut(height, width, self.cut, self.grid)
        return self.image_cut

    def image_split(self, images: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> Split:
        """One split: images (N, H, W) cut into modalities, labels one-hot over ``classes``."""
        if images.dtype == np.uint8:
            pixels = images.astype(np.float32) / np.float32(255.0)
        else:
            problem = float32_overflow(images, f"{type(self).__name__}: the images")
            if problem:
                raise DataError(problem)
            pixels = images.astype(np.float32)
        mods = self.image_cut.split(pixels)
        y = torch.from_numpy(np.searchsorted(classes, labels).astype(np.int64))
        return Split(mods, one_hot(y, len(classes)))

    def default_units(self, m: str) -> str:
        """Grey levels in [0, 1]: Bernoulli."""
        return "bernoulli"

    def unit_fix(self, m: str, units: str) -> str:
        if units == "bernoulli":
            return "store the images as uint8 (scaled by / 255) or as values in [0, 1]"
        return super().unit_fix(m, units)

    def example_images(self, modalities: Mapping[str, Tensor]) -> Tensor | None:
        """The images assembled from whichever pieces are given (absent pieces NaN): (N, H, W)."""
        if self.image_cut is None or not any(m in self.image_cut.pieces for m in modalities):
            return None
        return self.image_cut.join(modalities)


class IDXImages(CutImageData):
    """Images and labels from four IDX files, cut into modalities (docs/data.md §2).

    Args:
        data_dir: folder of the four files.
        files: ``{train_images, train_labels, test_images, test_labels: file name}`` (default MNIST's).
        sha256: ``{same keys: sha256 of the decompressed content}`` or None (no check).
        cut, grid: how each image is cut (:class:`ImageCut`).
        n_val: the last ``n_val`` training images form the validation split.
        **kwargs: :class:`MultimodalDataModule` arguments.
    """

    how_to_get: str = HOW_TO_GET_IDX

    def __init__(
        self,
        data_dir: str | None = None,
        files: Mapping[str, str] | None = None,
        sha256: Mapping[str, str] | None = None,
        cut: str = "columns",
        grid: Sequence[int] | None = None,
        n_val: int = 10000,
        **kwargs,
    ) -> None:
        super().__init__(cut=cut, grid=grid, **kwargs)
        self.data_dir = Path(data_dir) if data_dir else None
        self.files = dict(files or {})
        self.sha256 = None if sha256 is None else dict(sha256)
        self.n_val = n_val

    def _check_options(self) -> None:
        if self.data_dir is None:
            raise DataError("data.data_dir is not set: give the folder that holds the four IDX files")
        for what, value in (("data.files", self.files), ("data.sha256", self.sha256 or {})):
            unknown = sorted(set(value) - set(IDX_KEYS))
            if unknown:
                raise DataError(f"{what} has unknown keys {unknown}; allowed: {', '.join(IDX_KEYS)}")
        if isinstance(self.n_val, bool) or not isinstance(self.n_val, int) or self.n_val < 1:
            raise DataError(
                f"data.n_val={self.n_val!r}: give the number of validation images (an integer >= 1)"
            )

    def read(self, key: str) -> np.ndarray:
        """The array of one of the four files (``key`` in :data:`IDX_KEYS`), checked against its sha256."""
        path = find_file(self.data_dir, self.files.get(key, MNIST_NAMES[key]))
        sha = (self.sha256 or {}).get(key)
        array = parse_idx(read_bytes_maybe_gzip(path, self.how_to_get, sha), str(path), self.how_to_get)
        want = 3 if key.endswith("images") else 1
        if array.ndim != want:
            kind = "images (N, H, W)" if want == 3 else "labels (N,)"
            raise DataError(f"{path}: IDX array of shape {array.shape}, expected {kind}. {self.how_to_get}")
        return array

    def load_splits(self) -> dict[str, Split]:
        self._check_options()
        arrays = {key: self.read(key) for key in IDX_KEYS}
        for part in ("train", "test"):
            images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
            if len(images) != len(labels):
                raise DataError(
                    f"{self.data_dir}: the {part} label file holds {len(labels)} labels for {len(images)} "
                    f"images. {self.how_to_get}"
                )
        tr_x, tr_y = arrays["train_images"], arrays["train_labels"]
        te_x = arrays["test_images"]
        if te_x.shape[1:] != tr_x.shape[1:]:
            raise DataError(
                f"{self.data_dir}: test images are {te_x.shape[1]}x{te_x.shape[2]}, training images "
                f"{tr_x.shape[1]}x{tr_x.shape[2]}. {self.how_to_get}"
            )
        if self.n_val >= len(tr_x):
            raise DataError(
                f"data.n_val={self.n_val} leaves no training images (the training file holds {len(tr_x)})"
            )
        classes = np.unique(np.concatenate([tr_y, arrays["test_labels"]]))
        if self.label_names is None or len(self.label_names) != len(classes):
            self.label_names = [str(c) for c in classes.tolist()]
        self.make_cut(tr_x.shape[1], tr_x.shape[2])
        cut = len(tr_x) - self.n_val
        return {
            "train": self.image_split(tr_x[:cut], tr_y[:cut], classes),
            "val": self.image_split(tr_x[cut:], tr_y[cut:], classes),
            "test": self.image_split(te_x, arrays["test_labels"], classes),
        }
