"""LightningModule wiring a multimodal model, an objective and the paper's SGD schedule.

Optimisation (docs/paper.md §2): SGD with momentum (``momentum_initial`` for the first
``momentum_switch_epoch`` epochs, then ``momentum``; dampened as the reference with
``momentum_dampening``), learning rate ε_t = ε/(1 + d·t) with t the epoch counted from 1, L2 weight
decay on the weights only; the weights and visible biases of Gaussian modalities learn at
``gaussian_lr_scale`` × ε (docs/paper.md §2). Per step only what must be: the objective, the finiteness checks (one
fused reduction each) and the update; the training measures are summed on the device and logged
once per epoch, and the optimiser's hyper-parameters are set once per epoch. Manual optimisation, so that a step that produces a
non-finite loss, gradient or parameter is caught at that step and handled by ``nonfinite.policy``:

* ``backoff`` (the reference's rule): skip the step, multiply ε by ``backoff`` (0.95) for the
  rest of the epoch; stop after ``max_consecutive`` bad steps in a row;
* ``stop``: raise :class:`NonFiniteError` naming the step, objective and last good checkpoint.

Divergence that stays finite is watched at every epoch end by ``nonfinite.divergence``
(:mod:`mmvi.lit.divergence`; ``warn`` | ``backoff`` | ``stop`` | ``off``); what it found is
:attr:`MultimodalLitModule.run_fields` (``results.json``: ``divergence``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from torch import Tensor

from mmvi.constraints import INT0, NON_NEGATIVE, POSITIVE, Flag, Interval, Options, Settings, check_arguments
from mmvi.errors import DivergenceError, NonFiniteError
from mmvi.evaluation.condce import conditional_cross_entropy
from mmvi.lit import reference_update
from mmvi.lit.compute import CHECKPOINT_KEY as COMPUTE_KEY
from mmvi.lit.compute import ComputeMeter
from mmvi.lit.divergence import CONSTRAINTS as DIVERGENCE
from mmvi.lit.divergence import TRAIN_LOSS, DivergenceDetector, train_mean_baseline
from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives.base import Objective
from mmvi.run_folder import CHECKPOINT_KEY

log = logging.getLogger(__name__)

NONFINITE_POLICIES = ("backoff", "stop")


DIVERGENCE_KEY = "mmvi_divergence"  # the detector's state in a checkpoint


def select_rank_state(checkpoint: dict, rank: int) -> None:
    """Put rank ``rank``'s saved objective buffers into the checkpoint's state dict (in place).

    A checkpoint written by w ranks holds each per-rank buffer stacked as (w, ...); a run resumed
    with the same number of ranks gets its own slice back, otherwise rank 0's slice is used
    by every rank (e.g. a DDP checkpoint evaluated in one process).
    """
    stacked = checkpoint.get("per_rank_buffers") or {}
    for key, value in stacked.items():
        checkpoint["state_dict"][key] = value[rank if rank < value.shape[0] else 0]


class MultimodalLitModule(pl.LightningModule):
    """Train a :class:`MultimodalRBM` with any :class:`Objective`.

    Args are plain (resolved) config dicts so that checkpoints rebuild the module on their own:
        model: ``_target_`` config of the model (e.g. ``mmvi.models.MultimodalRBM``).
        objective: ``_target_`` config of the objective.
        optim: lr, lr_decay, momentum_initial, momentum, momentum_switch_epoch, weight_decay,
            gaussian_lr_scale (absent: 1).
        nonfinite: policy (backoff|stop), backoff, max_consecutive; divergence (:mod:`mmvi.lit.divergence`).
        val_mf_steps: mean-field steps for the validation conditional cross-entropies (None: the
            objective's native inference steps).
        compile: run the objective (the unrolled mean-field / Gibbs loops) through ``torch.compile``.
        seed: the global RNG is re-seeded from (seed, rank, epoch) at every epoch start, so a run
            resumed from an end-of-epoch checkpoint draws the same samples as an uninterrupted one.
    """

    constraints = {
        "optim": Settings(
            {
                "lr": POSITIVE,
                "lr_decay": NON_NEGATIVE,
                "momentum_initial": Interval(0, 1, closed="left"),
                "momentum": Interval(0, 1, closed="left"),
                "momentum_switch_epoch": INT0,
                "momentum_dampening": Flag(),
                "weight_decay": NON_NEGATIVE,
                "gaussian_lr_scale": Interval(0, 1, closed="right"),
                # how closely the update follows the reference code's (mmvi.lit.reference_update)
                "momentum_negative": Flag(),
                "velocity_init": Options(("gradient", "zero")),
            }
        ),
        "nonfinite": Settings(
            {
                "policy": Options(NONFINITE_POLICIES),
                "backoff": Interval(0, 1, closed="neither"),
                "max_consecutive": INT0,
                "divergence": DIVERGENCE,
            },
            allow_none=True,
        ),
        "seed": Interval(0, 2**32, closed="left", integer=True),
        "compile": Flag(),
    }

    def __init__(
        self,
        model: Mapping,
        objective: Mapping,
        optim: Mapping,
        nonfinite: Mapping | None = None,
        val_mf_steps: int | None = None,
        seed: int = 0,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.model: MultimodalRBM = instantiate(dict(model), _convert_="all")
        self.objective: Objective = instantiate(dict(objective), _convert_="all")
        self.objective.setup(self.model)
        check_arguments(self, optim=optim, nonfinite=nonfinite, seed=seed, compile=compile)
        self.optim = dict(optim)
        reference_update.check(self.optim, self.objective)
        self.nonfinite = {
            "policy": "backoff",
            "backoff": 0.95,
            "max_consecutive": 50,
            **dict(nonfinite or {}),
        }
        self.divergence = DivergenceDetector(
            self.nonfinite.get("divergence"), bool(getattr(self.objective, "loss_is_value", False))
        )
        self._lr_divergence = 1.0  # learning-rate multiplier of divergence back-offs (checkpointed)
        self._best_state: dict[str, Tensor] | None = None
        self.val_mf_steps = int(val_mf_steps or self.objective.native_inference_steps)
        self.seed = int(seed)
        # the compiled wrapper shares the objective's parameters and buffers (not registered twice)
        self._loss = torch.compile(self.objective.forward) if compile else self.objective.forward
        # per-epoch learning-rate multiplier lowered by non-finite steps; checkpointed
        self.register_buffer("lr_backoff", torch.ones((), dtype=torch.float64))
        self.register_buffer("bad_steps", torch.zeros((), dtype=torch.long))
        self._consecutive_bad = 0
        self.compute = ComputeMeter()  # cumulative seconds, examples, FLOPs (mmvi.lit.compute)

    # ------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> torch.optim.Optimizer:
        """SGD over (weights, other parameters), and with a Gaussian modality and
        ``gaussian_lr_scale`` < 1 two more groups (its weights, its visible biases) at that scale."""
        scale = float(self.optim.get("gaussian_lr_scale", 1.0))
        units = getattr(self.model, "units", {})
        slow = [
            m for m in self.model.names if scale != 1.0 and getattr(units.get(m), "name", "") == "gaussian"
        ]
        decay = float(self.optim["weight_decay"])
        weights = [self.model.W[m] for m in self.model.names if m not in slow]
        held = {id(p) for p in weights} | {id(p) for m in slow for p in (self.model.W[m], self.model.b[m])}
        others = [p for p in self.model.parameters() if id(p) not in held]
        groups = [
            {"params": weights, "weight_decay": decay, "lr_scale": 1.0},
            {"params": others, "weight_decay": 0.0, "lr_scale": 1.0},
        ]
        if slow:
            groups += [
                {"params": [self.model.W[m] for m in slow], "weight_decay": decay, "lr_scale": scale},
                {"params": [self.model.b[m] for m in slow], "weight_decay": 0.0, "lr_scale": scale},
            ]
        groups = [g for g in groups if g["params"]]
        return torch.optim.SGD(
            groups, lr=float(self.optim["lr"]), momentum=float(self.optim["momentum_initial"])
        )

    def learning_rate(self, epoch: int) -> float:
        """ε_t = ε / (1 + d·t) in epoch t = ``epoch`` + 1 (the reference's count), times the back-off."""
        base = float(self.optim["lr"]) / (1.0 + float(self.optim["lr_decay"]) * (epoch + 1))
        return base * float(self.lr_backoff) * self._lr_divergence

    def momentum(self, epoch: int) -> float:
        switch = int(self.optim["momentum_switch_epoch"])
        return float(self.optim["momentum_initial"] if epoch < switch else self.optim["momentum"])

    def set_hyperparameters(self) -> None:
        """Learning rate, momentum and dampening of the current epoch into the optimiser.

        With ``optim.momentum_dampening`` the velocity is u ← μu + (1 − μ)g (dampening = μ), the
        reference code's update (docs/paper.md §2), whose steady-state step is ε·g; otherwise u ← μu + g.
        Called once per epoch and after a learning-rate back-off, not per step.
        """
        epoch = self.current_epoch
        lr, mu = self.learning_rate(epoch), self.momentum(epoch)
        damp = mu if self.optim.get("momentum_dampening", False) else 0.0
        for group in self.optimizers().param_groups:
            group.update(lr=lr * group.get("lr_scale", 1.0), momentum=mu, dampening=damp)

    def begin_epoch(self) -> None:
        """Per-epoch state, set at the epoch's first batch.

        (Lightning skips ``on_train_epoch_start`` for the first epoch after a resume from an
        end-of-epoch checkpoint, so this runs from ``training_step`` instead.)
        """
        torch.manual_seed(self.seed * 1_000_003 + 7919 * self.global_rank + self.current_epoch)
        self.lr_backoff.fill_(1.0)
        self.objective.set_epoch(self.current_epoch)
        self.set_hyperparameters()
        self._sums: dict[str, Tensor] = {}
        self._count = 0

    # -------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "to_device"):
            dm.to_device(self.device)
        self.objective.set_epoch(self.current_epoch)
        self._params = list(self.model.parameters())
        # Before each step the parameters are copied into these buffers, so a step that makes one
        # non-finite is undone exactly. The fused copy costs 0.3 ms for the paper's 784 x 1000 model
        # (one CPU thread, measured), under 1 % of a step and less than the cheapest overflow bound
        # on the update (0.7 ms: max-abs of parameters, gradients and momenta).
        self._snapshot = [p.detach().clone() for p in self._params]
        self._divergence_baseline(dm)

    @staticmethod
    def _finite(tensors: list[Tensor]) -> bool:
        """True when every element is finite: one fused reduction and one host sync."""
        return bool(torch.stack([t.sum() for t in tensors]).isfinite().all())

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        if batch_idx == 0:
            self.begin_epoch()
        opt = self.optimizers()
        v = batch["modalities"]
        loss, logs = self._loss(self.model, v)
        if self._any_rank(not bool(torch.isfinite(loss))):
            return self._bad_step("loss", batch_idx)
        opt.zero_grad(set_to_none=True)
        negative = reference_update.negative_gradients(self.optim, self.objective, self._params)
        self.manual_backward(loss if negative is None else loss - self.objective.negative_part)
        # replicated-softmax modalities: gradients per word, not per document (stable for any length)
        if hasattr(self.model, "scale_length_gradients"):
            self.model.scale_length_gradients(v)
        grads = [p.grad for p in self._params if p.grad is not None]
        if negative is not None:
            grads += [g for g in negative if g is not None]
        if self._any_rank(not self._finite(grads)):
            opt.zero_grad(set_to_none=True)
            return self._bad_step("gradient", batch_idx)
        with torch.no_grad():
            torch._foreach_copy_(self._snapshot, self._params)
        if self.global_step == 0:
            reference_update.init_velocity(self.optim, opt.optimizer)
        opt.step()
        reference_update.apply_negative(opt.optimizer, self._params, negative)
        if self._any_rank(not self._finite(self._params)):
            with torch.no_grad():
                torch._foreach_copy_(self._params, self._snapshot)
            return self._bad_step("parameter", batch_idx)
        self._consecutive_bad = 0
        bs = next(iter(v.values())).shape[0]
        self._accumulate({"loss": loss, **logs}, bs)
        return loss.detach()

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        self.compute.batch_start(batch_idx)

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        bs = next(iter(batch["modalities"].values())).shape[0]
        self.compute.batch_end(self.objective, self.model, bs, self.trainer.world_size)

    def _accumulate(self, values: dict[str, Tensor], n: int) -> None:
        """Add a step's measures (weighted by its batch size) to the epoch's sums, on the device."""
        for k, x in values.items():
            x = x.detach().to(torch.float32) * n
            if k in self._sums:
                self._sums[k] += x
            else:
                self._sums[k] = x.clone()
        self._count += n

    def on_train_epoch_end(self) -> None:
        """Log the epoch's mean of every training measure (``train/<name>``), lr and momentum."""
        count = max(getattr(self, "_count", 0), 1)
        for k, total in getattr(self, "_sums", {}).items():
            self.log(f"train/{k}", total / count, sync_dist=True)
        group = self.optimizers().param_groups[0]
        self.log("train/lr", float(group["lr"]) / group.get("lr_scale", 1.0))
        self.log("train/momentum", float(group["momentum"]))
        self.log("train/nonfinite_steps", self.bad_steps.float())
        for name, value in self.compute.epoch_end().items():
            self.log(name, value)
        self._check_divergence(
            float(self._sums["loss"] / count) if "loss" in getattr(self, "_sums", {}) else None
        )

    # ------------------------------------------------------------ divergence
    @property
    def run_fields(self) -> dict:
        """What the run record takes from training: ``{"divergence": {...}}`` when a rule tripped,
        and ``compute`` (:mod:`mmvi.lit.compute`)."""
        return {**self.divergence.record, "compute": self.compute.record}

    def _divergence_baseline(self, dm) -> None:
        """The train-mean predictor's validation cross-entropy, when the data module has the splits."""
        det = self.divergence
        if not (det.enabled and det.cfg["baseline"]) or det.baseline is not None:
            return
        splits = getattr(dm, "splits", None) or {}
        try:
            train, val = splits["train"].modalities, splits["val"].modalities
            if len(splits["val"]) and all(m in train and m in val for m in self.model.names):
                det.baseline = train_mean_baseline(self.model, train, val)
        except (KeyError, AttributeError, TypeError, RuntimeError, ValueError) as exc:
            log.info("divergence: no train-mean baseline (%s)", exc)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._val_epoch = self.current_epoch

    def _check_divergence(self, train_loss: float | None) -> None:
        """The epoch-end divergence rules (:mod:`mmvi.lit.divergence`) and their policy."""
        det = self.divergence
        if not det.enabled:
            return
        values: dict[str, float] = {}
        if train_loss is not None and self.trainer.world_size > 1:
            t = torch.tensor(train_loss, device=self.device)
            train_loss = float(self.trainer.strategy.reduce(t, reduce_op="mean"))
        if train_loss is not None:
            values[TRAIN_LOSS] = train_loss
        if getattr(self, "_val_epoch", None) == self.current_epoch:
            metrics = self.trainer.callback_metrics
            values.update({m: float(metrics[m]) for m in det.measures if m in metrics and m != TRAIN_LOSS})
        event = det.check(self.current_epoch, values)
        if event is None:
            if det.cfg["policy"] == "backoff" and det.is_best(self.current_epoch):
                self._best_state = {k: v.detach().clone() for k, v in self._restorable().items()}
            return
        where = det.message(event)
        if event["action"] == "stop":
            raise DivergenceError(
                f"{where}; training stopped (nonfinite.divergence.policy={det.cfg['policy']}, "
                f"{det.backoffs} back-offs); objective {type(self.objective).__name__}"
            )
        if event["action"] == "warn":
            log.warning("%s; training goes on (nonfinite.divergence.policy=warn)", where)
            return
        det.backoffs += 1
        self._lr_divergence *= float(det.cfg["backoff"])
        restored = "the start's state"
        if self._best_state is not None:
            with torch.no_grad():
                for k, v in self._restorable().items():
                    v.copy_(self._best_state[k])
            restored = (
                f"the state of epoch {det.best[det.primary][1]}" if det.primary in det.best else restored
            )
        self.optimizers().optimizer.state.clear()  # the momentum of the run-away steps
        log.warning(
            "%s; restored %s, learning rate x%.4g from now on (back-off %d of %d)",
            where,
            restored if self._best_state is not None else "nothing (no good epoch kept yet)",
            self._lr_divergence,
            det.backoffs,
            int(det.cfg["max_backoffs"]),
        )

    def _restorable(self) -> dict[str, Tensor]:
        """Parameters and buffers of the model and the objective (e.g. PCD chains) a back-off restores."""
        out = {f"model.{k}": v for k, v in self.model.state_dict(keep_vars=True).items()}
        out.update({f"objective.{k}": v for k, v in self.objective.state_dict(keep_vars=True).items()})
        return {k: v.data if isinstance(v, torch.nn.Parameter) else v for k, v in out.items()}

    def _any_rank(self, flag: bool) -> bool:
        """True if ``flag`` holds on any DDP rank (every rank then skips the step together)."""
        if self.trainer.world_size == 1:
            return flag
        total = self.trainer.strategy.reduce(torch.tensor(float(flag), device=self.device), reduce_op="sum")
        return bool(total > 0)

    # ------------------------------------------------------- per-rank state
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the run's fingerprint (:mod:`mmvi.fingerprint`) and every rank's objective buffers
        (e.g. PCD chains), gathered from all ranks."""
        if getattr(self, "fingerprint", None):
            checkpoint[CHECKPOINT_KEY] = self.fingerprint
        if self.divergence.enabled:
            state = {**self.divergence.state_dict(), "lr_factor": self._lr_divergence}
            checkpoint[DIVERGENCE_KEY] = {**state, "best_state": self._best_state}
        checkpoint[COMPUTE_KEY] = self.compute.state_dict()
        if self._trainer is None or self._trainer.world_size == 1:
            return
        checkpoint["per_rank_buffers"] = {
            f"objective.{name}": self.all_gather(buf).cpu() for name, buf in self.objective.named_buffers()
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rank = self.global_rank if self._trainer is not None else 0
        select_rank_state(checkpoint, rank)
        self.compute.load_state_dict(checkpoint.get(COMPUTE_KEY) or {})
        state = checkpoint.get(DIVERGENCE_KEY)
        if state:
            self.divergence.load_state_dict(state)
            self._lr_divergence = float(state.get("lr_factor", 1.0))
            self._best_state = state.get("best_state")

    def _bad_step(self, what: str, batch_idx: int) -> None:
        step = self.global_step
        name = type(self.objective).__name__
        self.bad_steps += 1
        self._consecutive_bad += 1
        last = (
            getattr(getattr(self.trainer, "checkpoint_callback", None), "last_model_path", "") or "none yet"
        )
        where = f"non-finite {what} at step {step} (epoch {self.current_epoch}, batch {batch_idx}) with objective {name}"
        if self.nonfinite["policy"] == "stop" or self._consecutive_bad > int(
            self.nonfinite["max_consecutive"]
        ):
            raise NonFiniteError(
                f"{where}; training stopped (policy={self.nonfinite['policy']}, "
                f"{self._consecutive_bad} bad steps in a row). Last good checkpoint: {last}"
            )
        self.lr_backoff *= float(self.nonfinite["backoff"])
        self.set_hyperparameters()
        log.warning(
            "%s; step skipped, learning rate x%.3f for the rest of the epoch", where, float(self.lr_backoff)
        )
        return None

    # ------------------------------------------------------------ validation
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        v = batch["modalities"]
        bs = next(iter(v.values())).shape[0]
        total = 0.0
        for m in self.model.names:
            ce = conditional_cross_entropy(self.model, v, m, steps=self.val_mf_steps, tol=None).mean()
            total = total + ce
            self.log(f"val/cond_ce/{m}_given_rest", ce, on_epoch=True, batch_size=bs, sync_dist=True)
        self.log("val/cond_ce/sum", total, on_epoch=True, batch_size=bs, sync_dist=True, prog_bar=True)
