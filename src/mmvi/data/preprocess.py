"""Preprocessing shared by the loaders: z-scoring with training statistics, stratified splits."""

from __future__ import annotations

import numpy as np

FLOAT32_MAX = float(np.finfo(np.float32).max)


def zscore_stats(train: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of ``train`` (N, n), float64 (n,); a std below ``eps`` becomes 1.

    Computed in float64 whatever ``train``'s dtype, and kept so: values on a large offset (e.g.
    timestamps ≈ 1.7e9 s, where float32's spacing is 128) keep their variation only if the centring
    happens before the cast to float32 (:func:`apply_zscore`).
    """
    mean = train.mean(0, dtype=np.float64)
    std = train.std(0, dtype=np.float64)
    return mean, np.where(std < eps, 1.0, std)


def apply_zscore(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x − mean) / std`` computed in float64, returned as a new float32 array (same shape as x).

    Row blocks keep the float64 temporary small for large float32 inputs.
    """
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    out = np.empty(x.shape, dtype=np.float32)
    step = max(1, (1 << 22) // max(1, int(np.prod(x.shape[1:]))))
    for start in range(0, max(1, x.shape[0]), step):
        block = np.asarray(x[start : start + step], dtype=np.float64)
        out[start : start + step] = (block - mean) / std
    return out


def standardize(parts: dict[str, np.ndarray], fit: str = "train", eps: float = 1e-6) -> dict[str, np.ndarray]:
    """Z-score every array with the mean/std of ``parts[fit]`` (in float64, returned as float32; std < eps → 1)."""
    mean, std = zscore_stats(parts[fit], eps)
    return {k: apply_zscore(x, mean, std) for k, x in parts.items()}


def float32_overflow(x: np.ndarray, what: str) -> str | None:
    """The message for finite values of ``x`` that float32 (the training precision) cannot hold.

    ``|v| > 3.4e38`` in a float64 array: their count, range and first row, prefixed by ``what``
    (the file and modality); None when there are none (or ``x`` is not wider than float32).
    """
    if x.dtype.kind != "f" or x.dtype.itemsize <= 4 or x.size == 0:
        return None
    big = np.isfinite(x) & (np.abs(x) > FLOAT32_MAX)
    if not big.any():
        return None
    rows = big.reshape(x.shape[0], -1).any(1) if x.ndim > 1 else big
    values = x[big]
    return (
        f"{what}: {int(big.sum())} finite values beyond float32's range (|x| > {FLOAT32_MAX:.3g}, the "
        f"precision models train in), in [{values.min():.4g}, {values.max():.4g}], the first in row "
        f"{int(np.argmax(rows))}; rescale them (e.g. to other units) or remove them"
    )


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Split row indices class by class into ``len(fractions)`` shuffled parts.

    Each class's rows are permuted with ``default_rng(seed)``; part j gets ``round(f_j · n_c)``
    of them (the last part the rest). Each part's indices are shuffled again, so no part is
    ordered by class.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or len(fr) < 2 or (fr <= 0).any() or abs(fr.sum() - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be ≥ 2 positive numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fr]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(np.cumsum(fr[:-1]) * len(idx)).astype(int)
        for j, chunk in enumerate(np.split(idx, cuts)):
            parts[j].append(chunk)
    return [rng.permutation(np.concatenate(p)) for p in parts]
