"""Exact joint tables of small two-modality Bernoulli RBMs by enumeration.

Bit order: a state of n bits ``s = (s_0, …, s_{n−1})`` has index Σ_j s_j·2^(n−1−j), i.e. bit 0 is
the most significant; row i of :func:`binary_states` is the binary expansion of i.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

MAX_BITS = 20


def binary_states(n_bits: int) -> np.ndarray:
    """All 2^n binary states as a float64 array (2^n, n); row i is i written in binary, MSB first."""
    if n_bits < 0:
        raise ValueError(f"n_bits must be non-negative, got {n_bits}")
    if n_bits > MAX_BITS:
        raise ValueError(f"refusing to enumerate 2^{n_bits} states (limit {MAX_BITS} bits)")
    idx = np.arange(2**n_bits, dtype=np.int64)
    shifts = np.arange(n_bits - 1, -1, -1, dtype=np.int64)
    return ((idx[:, None] >> shifts[None, :]) & 1).astype(np.float64)


def state_index(bits: Any) -> np.ndarray:
    """Index Σ_j s_j·2^(n−1−j) of each binary row of ``bits`` (batch, n) → int64 (batch,)."""
    if hasattr(bits, "detach"):
        bits = bits.detach().cpu().numpy()
    arr = np.asarray(bits)
    if arr.ndim != 2:
        raise ValueError(f"bits must have shape (batch, n_bits), got {arr.shape}")
    if arr.shape[1] > 62:
        raise ValueError(f"too many bits for an int64 index: {arr.shape[1]}")
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError("bits must be binary (0/1)")
    weights = 2 ** np.arange(arr.shape[1] - 1, -1, -1, dtype=np.int64)
    return arr.astype(np.int64) @ weights


def _two_bernoulli_modalities(model: torch.nn.Module, names: tuple[str, str] | None) -> tuple[str, str]:
    names = tuple(model.names) if names is None else tuple(names)
    if len(names) != 2 or len(model.names) != 2 or set(names) != set(model.names):
        raise ValueError(f"need exactly two modalities (x, y); the model has {model.names}, given {names}")
    for m in names:
        if model.units[m].name != "bernoulli":
            raise ValueError(f"modality {m!r} has {model.units[m].name} units; only bernoulli is enumerable")
    return names[0], names[1]


@torch.no_grad()
def rbm_log_joint_table(
    model: torch.nn.Module, names: tuple[str, str] | None = None, max_bits: int = MAX_BITS
) -> np.ndarray:
    """log P_θ(x, y) = −F(x, y) − log Σ_{x', y'} exp(−F(x', y')), float64, shape (2^n_x, 2^n_y).

    ``names`` = (x modality, y modality), default the model's order. Rows index x, columns y,
    with the bit order of :func:`binary_states`.
    """
    mx, my = _two_bernoulli_modalities(model, names)
    nx, ny = model.sizes[mx], model.sizes[my]
    if nx + ny > max_bits:
        raise ValueError(f"{nx} + {ny} = {nx + ny} visible bits exceed the enumeration limit of {max_bits}")
    m64 = copy.deepcopy(model).to(device="cpu", dtype=torch.float64)
    xs = torch.from_numpy(binary_states(nx))
    ys = torch.from_numpy(binary_states(ny))
    v = {mx: xs.repeat_interleave(len(ys), dim=0), my: ys.repeat(len(xs), 1)}
    neg_f = -m64.free_energy(v)
    logp = (neg_f - torch.logsumexp(neg_f, dim=0)).reshape(len(xs), len(ys))
    return logp.numpy()


def rbm_joint_table(
    model: torch.nn.Module, names: tuple[str, str] | None = None, max_bits: int = MAX_BITS
) -> np.ndarray:
    """P_θ(x, y) = exp(−F(x, y)) / Z of a two-modality Bernoulli RBM, by enumeration (float64)."""
    p = np.exp(rbm_log_joint_table(model, names, max_bits))
    return p / p.sum()
