"""Fine-tuning the deep model as a recurrent encoder (stage (c), docs/paper.md §3).

:class:`RecurrentPrediction`: for each predicted modality m (``directions``; default every one,
from all the others), loss_m = −E Σ_{unobserved i} log p(v_m,i | down_m(hᵀ)), hᵀ after T steps of
:meth:`MDRNN.mean_field`, optionally with an MP mask of rate ``mask_rate``; gradients through the
last ``bptt_steps`` steps (docs/design.md §3.7). :class:`FinetuneLitModule` optimises it with
Adam or SGD (``optimizer.name``), weight decay on weight matrices only, over all parameters or
only the top two layers (``trainable``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from mmvi.constraints import (
    INT0,
    NON_NEGATIVE,
    POSITIVE,
    Interval,
    NameList,
    Options,
    Settings,
    check_arguments,
)
from mmvi.models.deep import MDRNN

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")
TRAINABLE = ("all", "top")


class RecurrentPrediction(nn.Module):
    """Predict each masked modality from the others through the unrolled MDRNN loop.

    Args:
        directions: modalities to predict (default: all; e.g. ``[text]`` = image → text only).
        steps: T, mean-field steps of the loop.
        bptt_steps: back-propagate through the last K steps (None: all T).
        mask_rate: p; each unit of the predicted modality stays observed with probability p·u.
    """

    constraints = {
        "directions": NameList(allow_none=True, what="modalities"),
        "steps": INT0,
        "bptt_steps": Interval(1, integer=True, allow_none=True),
        "mask_rate": Interval(0, 1, closed="left"),
    }

    def __init__(
        self,
        directions: list[str] | None = None,
        steps: int = 5,
        bptt_steps: int | None = None,
        mask_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_arguments(self, directions=directions, steps=steps, bptt_steps=bptt_steps, mask_rate=mask_rate)
        self.directions = list(directions) if directions else None
        self.steps = int(steps)
        self.bptt_steps = None if bptt_steps is None else int(bptt_steps)
        self.mask_rate = float(mask_rate)

    def targets(self, model: MDRNN) -> list[str]:
        names = self.directions or list(model.names)
        unknown = [m for m in names if m not in model.names]
        if unknown:
            raise ValueError(
                f"finetune directions name unknown modalities {unknown}; the model has {model.names}"
            )
        return names

    def forward(self, model: MDRNN, v: Mapping[str, Tensor]) -> tuple[Tensor, dict]:
        loss: Tensor | float = 0.0
        logs: dict[str, Tensor] = {}
        for m in self.targets(model):
            given = {n: v[n] for n in model.names if n != m}
            hidden = torch.ones_like(v[m])
            observed = None
            if self.mask_rate > 0:
                q = self.mask_rate * float(torch.rand(()))
                mask = torch.bernoulli(torch.full_like(v[m], q))
                observed, hidden = {m: (mask, v[m])}, 1 - mask
            acts, _ = model.mean_field(given, self.steps, observed=observed, bptt_steps=self.bptt_steps)
            nll = -(hidden * model.units[m].log_prob_units(v[m], acts[m])).sum(-1).mean()
            logs[f"pred_nll/{m}"] = nll.detach()
            loss = loss + nll
        return loss, logs


class FinetuneLitModule(pl.LightningModule):
    """Fine-tune an :class:`MDRNN` with :class:`RecurrentPrediction` (plain config dicts, checkpointable).

    Args:
        model: ``_target_`` config of the deep model.
        objective: ``_target_`` config of the fine-tuning objective.
        optimizer: ``name`` (adam|sgd), ``lr``, ``weight_decay``, ``momentum`` (sgd), ``betas`` (adam).
        trainable: ``all`` or ``top`` (the joint RBM and each pathway's last layer).
        seed: the RNG is re-seeded from (seed, epoch) at every epoch start (exact resume).
    """

    constraints = {
        "optimizer": Settings(
            {
                "name": Options(OPTIMIZERS),
                "lr": POSITIVE,
                "weight_decay": NON_NEGATIVE,
                "momentum": Interval(0, 1, closed="left"),
                "betas": None,
            }
        ),
        "trainable": Options(TRAINABLE),
    }

    def __init__(
        self, model: Mapping, objective: Mapping, optimizer: Mapping, trainable: str = "all", seed: int = 0
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_arguments(self, optimizer=optimizer, trainable=trainable)
        self.model: MDRNN = instantiate(dict(model), _convert_="all")
        self.objective: RecurrentPrediction = instantiate(dict(objective), _convert_="all")
        self.optim = dict(optimizer)
        self.trainable = trainable
        self.seed = int(seed)

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = list(self.model.parameters()) if self.trainable == "all" else self.model.top_parameters()
        keep = {id(p) for p in params}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in keep)
        return params

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = self.trainable_parameters()
        weights = [p for p in params if p.dim() == 2]
        others = [p for p in params if p.dim() != 2]
        groups = [
            {"params": weights, "weight_decay": float(self.optim.get("weight_decay", 0.0))},
            {"params": others, "weight_decay": 0.0},
        ]
        lr = float(self.optim["lr"])
        if self.optim.get("name", "adam") == "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=float(self.optim.get("momentum", 0.9)))
        return torch.optim.Adam(groups, lr=lr, betas=tuple(self.optim.get("betas", (0.9, 0.999))))

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "to_device"):
            dm.to_device(self.device)

    def on_train_epoch_start(self) -> None:
        torch.manual_seed(self.seed * 1_000_003 + 7919 * self.global_rank + self.current_epoch)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        v = batch["modalities"]
        loss, logs = self.objective(self.model, v)
        if not bool(torch.isfinite(loss)):
            log.warning("fine-tuning: non-finite loss at step %d; step skipped", self.global_step)
            return None
        bs = next(iter(v.values())).shape[0]
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=bs)
        for k, x in logs.items():
            self.log(f"train/{k}", x, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        v = batch["modalities"]
        loss, logs = self.objective(self.model, v)
        bs = next(iter(v.values())).shape[0]
        self.log("val/loss", loss, on_epoch=True, batch_size=bs, prog_bar=True)
        for k, x in logs.items():
            self.log(f"val/{k}", x, on_epoch=True, batch_size=bs)
