"""Brute-force enumeration helpers for exact tests on tiny state spaces."""

from __future__ import annotations

import itertools

import torch

from mmvi.models.mrbm import MultimodalRBM


def all_binary(n: int, dtype=torch.float64) -> torch.Tensor:
    """All 2^n binary vectors as rows."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=dtype).reshape(-1, n)


def tiny_model(
    sizes: dict[str, int], n_hidden: int, units: str = "bernoulli", std: float = 1.0, seed: int = 0
) -> MultimodalRBM:
    """A float64 MultimodalRBM with strong random weights and biases."""
    torch.manual_seed(seed)
    model = MultimodalRBM(
        {m: {"size": n, "units": units} for m, n in sizes.items()}, n_hidden, init_std=std
    ).double()
    with torch.no_grad():
        for m in model.names:
            model.b[m].normal_(0, 0.5)
        model.c.normal_(0, 0.5)
    return model


def split_state(model: MultimodalRBM, v: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split concatenated visible rows into the model's modalities (in model.names order)."""
    out, start = {}, 0
    for m in model.names:
        out[m] = v[:, start : start + model.sizes[m]]
        start += model.sizes[m]
    return out


def brute_free_energy(model: MultimodalRBM, v: dict[str, torch.Tensor]) -> torch.Tensor:
    """F(v) = −log Σ_h exp(−E(v, h)) by enumerating every hidden state."""
    hs = all_binary(model.n_hidden)
    n = next(iter(v.values())).shape[0]
    energies = torch.stack([model.energy(v, h.expand(n, -1)) for h in hs], dim=1)
    return -torch.logsumexp(-energies, dim=1)
