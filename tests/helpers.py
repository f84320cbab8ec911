"""Brute-force enumeration helpers for exact tests on tiny state spaces."""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mmvi.models.mrbm import MultimodalRBM

#: overrides of a training run small enough for a test (mnist5k, 1 epoch, CSV logger only)
SMALL_RUN = [
    "data.max_examples={train:200,val:100,test:100}",
    "model.n_hidden=16",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "evaluation.n_generation=0",
    "logger=csv",
]


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


def assert_gradient_matches_finite_differences(
    loss, module: torch.nn.Module, samples: int = 5, eps: float = 1e-6
) -> None:
    """Autograd gradient of ``loss()`` equals central differences on ``samples`` entries per parameter."""
    module.zero_grad()
    loss().backward()
    for name, p in module.named_parameters():
        flat, grad = p.data.view(-1), p.grad.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // samples)):
            old = flat[i].item()
            flat[i] = old + eps
            up = loss().item()
            flat[i] = old - eps
            down = loss().item()
            flat[i] = old
            fd = (up - down) / (2 * eps)
            assert abs(fd - grad[i].item()) < 1e-6 * max(1.0, abs(fd)), (name, i, fd, grad[i].item())


CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_job(
    config_name: str, overrides: list[str], output_dir: Path, keep_hydra: bool = False
) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` as a job would see it, writing into ``output_dir``.

    HydraConfig is set so ``${hydra:...}`` resolves; the ``hydra`` node is dropped unless kept.
    """
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        if not keep_hydra:
            del cfg["hydra"]
    return cfg


def assert_ais_agrees(ais: dict, exact: dict, names) -> None:
    """Each AIS estimate ``ais[k]`` has a positive standard error and lies within three of them
    (or 1e-3 nats) of the exact ``exact[k]``."""
    for k in names:
        assert ais[f"{k}_stderr"] > 0
        assert abs(ais[k] - exact[k]) < max(3 * ais[f"{k}_stderr"], 1e-3), (k, ais[k], exact[k])


def quiet_trainer(root: Path, **settings) -> pl.Trainer:
    """A real Lightning Trainer with no logger, checkpointing, progress bar or validation."""
    defaults = {
        "max_epochs": 1,
        "limit_val_batches": 0,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(root),
    }
    return pl.Trainer(**{**defaults, **settings})


def tiny_checkpoint(dm, root: Path, n_hidden: int, batches: int) -> Path:
    """A real Lightning checkpoint (with the data module's state) of a CD-1 model trained ``batches``
    steps on ``dm``."""
    from mmvi.lit.module import MultimodalLitModule

    lit = MultimodalLitModule(
        model={
            "_target_": "mmvi.models.MultimodalRBM",
            "modalities": dm.modality_specs(),
            "n_hidden": n_hidden,
        },
        objective={"_target_": "mmvi.objectives.ContrastiveDivergence", "k": 1},
        optim={
            "lr": 0.01,
            "lr_decay": 0.0,
            "momentum_initial": 0.5,
            "momentum": 0.5,
            "momentum_switch_epoch": 1,
            "weight_decay": 0.0,
        },
    )
    trainer = quiet_trainer(root, limit_train_batches=batches)
    trainer.fit(lit, datamodule=dm)
    ckpt = Path(root) / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt
