"""Preprocessing shared by the loaders: z-scoring with training statistics, stratified splits."""

from __future__ import annotations

import numpy as np


def zscore_stats(train: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (float32) of ``train``; a std below ``eps`` becomes 1."""
    mean = train.mean(0, dtype=np.float64)
    std = train.std(0, dtype=np.float64)
    return mean.astype(np.float32), np.where(std < eps, 1.0, std).astype(np.float32)


def apply_zscore(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x − mean) / std`` as a new float32 array."""
    out = np.array(x, dtype=np.float32)
    out -= mean
    out /= std
    return out


def standardize(parts: dict[str, np.ndarray], fit: str = "train", eps: float = 1e-6) -> dict[str, np.ndarray]:
    """Z-score every array with the mean/std of ``parts[fit]`` (float32; std < eps → 1)."""
    mean, std = zscore_stats(parts[fit], eps)
    return {k: apply_zscore(x, mean, std) for k, x in parts.items()}


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
