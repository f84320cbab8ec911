"""Simple global image descriptors computed from RGB pixels (vectorised numpy).

:func:`image_features` of one ``uint8`` image ``(H, W, 3)`` or a batch ``(B, H, W, 3)`` is float32
``(D,)`` or ``(B, D)``: an HSV colour histogram, a grey thumbnail and an edge-orientation histogram
on a grid, concatenated (docs/data.md §7). :func:`load_tar_images` reads JPEG members of a tar with
Pillow and resizes them to one size.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmvi.errors import DataError


@dataclass(frozen=True)
class FeatureParams:
    """Parameters of :func:`image_features` (also the cache key of computed features)."""

    size: int = 128
    hist_bins: tuple[int, int, int] = (8, 4, 4)
    grey_size: int = 16
    edge_bins: int = 8
    edge_grid: int = 2
    version: int = 1

    @property
    def dim(self) -> int:
        h, s, v = self.hist_bins
        return h * s * v + self.grey_size**2 + self.edge_bins * self.edge_grid**2

    def digest(self) -> str:
        """sha256 of the parameters as canonical JSON."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def _as_batch(images: np.ndarray) -> tuple[np.ndarray, bool]:
    images = np.asarray(images)
    single = images.ndim == 3
    batch = images[None] if single else images
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected RGB images (H, W, 3) or (B, H, W, 3), got shape {images.shape}")
    return batch, single


def _unbatch(x: np.ndarray, single: bool) -> np.ndarray:
    x = x.astype(np.float32)
    return x[0] if single else x


def rgb_to_hsv(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., H, W, 3) → uint8 HSV (Pillow's conversion: every channel 0..255, hue 0..360° → 0..255)."""
    from PIL import Image

    rgb = np.ascontiguousarray(images, dtype=np.uint8)
    flat = rgb.reshape(-1, rgb.shape[-2], 3)
    return np.asarray(Image.fromarray(flat, "RGB").convert("HSV")).reshape(rgb.shape)


def _batched_hist(bins: np.ndarray, n_bins: int, weights: np.ndarray | None = None) -> np.ndarray:
    """(B, ...) integer bins → (B, n_bins) counts (or weighted sums) with one bincount."""
    b = bins.shape[0]
    flat = (bins.reshape(b, -1) + np.arange(b)[:, None] * n_bins).ravel()
    w = None if weights is None else weights.reshape(-1)
    return np.bincount(flat, weights=w, minlength=b * n_bins).reshape(b, n_bins)


def colour_histogram(images: np.ndarray, bins: tuple[int, int, int] = (8, 4, 4)) -> np.ndarray:
    """Joint HSV histogram with ``bins`` (hue, saturation, value), normalised to sum 1."""
    batch, single = _as_batch(images)
    hsv = rgb_to_hsv(batch).astype(np.int32)
    q = [(hsv[..., i] * n) >> 8 for i, n in enumerate(bins)]
    idx = (q[0] * bins[1] + q[1]) * bins[2] + q[2]
    hist = _batched_hist(idx, bins[0] * bins[1] * bins[2])
    return _unbatch(hist / hist.sum(1, keepdims=True), single)


def grey_image(images: np.ndarray) -> np.ndarray:
    """RGB uint8 → grey (…, H, W) float in [0, 1] (ITU-R 601 luma)."""
    rgb = np.asarray(images, dtype=np.float32) / 255.0
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def grey_thumbnail(images: np.ndarray, size: int = 16) -> np.ndarray:
    """Block-mean downsampling of the grey image to ``size × size`` (rows/cols cropped to a multiple)."""
    batch, single = _as_batch(images)
    _, h, w, _ = batch.shape
    if h < size or w < size:
        raise ValueError(f"images of {h}×{w} pixels are smaller than the {size}×{size} thumbnail")
    grey = grey_image(batch[:, : h // size * size, : w // size * size])
    b = grey.shape[0]
    thumb = grey.reshape(b, size, h // size, size, w // size).mean(axis=(2, 4))
    return _unbatch(thumb.reshape(b, size * size), single)


def edge_orientation_histogram(images: np.ndarray, n_bins: int = 8, grid: int = 2) -> np.ndarray:
    """Magnitude-weighted gradient-orientation histograms in a ``grid × grid`` layout (sum 1)."""
    batch, single = _as_batch(images)
    grey = grey_image(batch)
    gx = grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2]
    gy = grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1]
    mag = np.hypot(gx, gy)
    ang = np.arctan2(gy, gx) % np.pi
    obin = np.minimum((ang / np.pi * n_bins).astype(np.int64), n_bins - 1)
    h, w = mag.shape[1:]
    cell = (np.arange(h)[:, None] * grid // h) * grid + (np.arange(w)[None, :] * grid // w)
    hist = _batched_hist(cell[None] * n_bins + obin, grid * grid * n_bins, mag.astype(np.float64))
    total = hist.sum(1, keepdims=True)
    return _unbatch(hist / np.where(total > 0, total, 1.0), single)


def image_features(images: np.ndarray, params: FeatureParams | None = None) -> np.ndarray:
    """Concatenated colour histogram, grey thumbnail and edge-orientation histogram."""
    p = params or FeatureParams()
    parts = [
        colour_histogram(images, p.hist_bins),
        grey_thumbnail(images, p.grey_size),
        edge_orientation_histogram(images, p.edge_bins, p.edge_grid),
    ]
    return np.concatenate(parts, axis=-1)


def tar_member_names(path: Path) -> list[str]:
    """Names of the regular-file members of a tar, with a :class:`DataError` if it is unreadable."""
    try:
        with tarfile.open(path) as tar:
            return [m.name for m in tar.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read tar file {path} ({exc}); it is missing, truncated or corrupt") from None


def _decode(data: bytes, size: int | None, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if size is not None:
                img.draft("RGB", (size, size))
            img = img.convert("RGB")
            if size is not None:
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{where}: corrupt or undecodable image ({exc})") from None


def load_tar_images(
    path: Path | str, names: list[str], size: int | None = 128
) -> np.ndarray | list[np.ndarray]:
    """Decode the JPEG members ``names`` of the tar at ``path`` to RGB uint8.

    With ``size`` every image is resized (aspect ratio not kept) to ``size × size`` and one
    ``(B, size, size, 3)`` array is returned; with ``size=None`` a list of native-size arrays.
    Raises :class:`DataError` naming the tar and member when one is missing or corrupt.
    """
    path = Path(path)
    out: list[np.ndarray] = []
    try:
        with tarfile.open(path) as tar:
            for name in names:
                where = f"{path} member {name}"
                try:
                    fh = tar.extractfile(name)
                except KeyError:
                    raise DataError(f"{where}: not found in the tar") from None
                if fh is None:
                    raise DataError(f"{where}: not a regular file")
                out.append(_decode(fh.read(), size, where))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read tar file {path} ({exc}); it is missing, truncated or corrupt") from None
    if size is None:
        return out
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)
