"""Divergence that stays finite: end-of-epoch rules on the training objective and validation measures.

Configured by ``nonfinite.divergence`` (the non-finite step checks of :mod:`mmvi.lit.module` catch
NaN/inf; these rules catch a run whose numbers stay finite but run away). At the end of every
epoch ``t >= warmup`` each watched measure x (``measures``; ``train/loss`` only for objectives whose
loss is the objective's value, :attr:`Objective.loss_is_value`, not a likelihood-gradient
surrogate such as the free-energy difference of CD/PCD) is compared with its best (lowest) value
so far, ``best``, over the epochs before:

* ``runaway``: x_t > best + (k − 1)·|best|, k = ``factor`` (= k·best for a positive measure;
  stays meaningful for a negative one);
* ``baseline`` (with ``baseline: true``; off by default): ``val/cond_ce/sum`` > the validation
  cross-entropy of the train-mean predictor (every unit predicted by the training split's mean,
  through the visible biases the model is initialised with), Σ_m CE(v_m | b_m(mean of train v_m)).
  On z-scored Gaussian views that baseline is close to what a model reaches in its first epochs
  (539 nats against 529–543 on the three mfeat views), so it would flag healthy runs there.

The first rule that trips is handled by ``policy``: ``warn`` records it and goes on; ``stop`` raises
:class:`~mmvi.errors.DivergenceError` (the run is recorded ``failed`` with the reason); ``backoff`` restores
the parameters and objective state of the best epoch of the first watched measure (kept in
memory), clears the optimiser's momentum and multiplies the learning rate by ``backoff`` for the
rest of the run, at most ``max_backoffs`` times (then it stops); ``off`` watches nothing.
Every trip is logged as a warning; :attr:`DivergenceDetector.record` (the first trip, and the
number of epochs that tripped) goes to ``results.json`` under ``divergence``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
from torch import Tensor

from mmvi.constraints import INT0, Flag, Interval, LoggedMeasure, Options, Settings, check

log = logging.getLogger(__name__)

POLICIES = ("warn", "backoff", "stop", "off")
VAL_CE = "val/cond_ce/sum"
TRAIN_LOSS = "train/loss"
DEFAULTS = {
    "policy": "warn",
    "factor": 2.0,
    "measures": [VAL_CE, TRAIN_LOSS],
    "baseline": False,
    "warmup": 1,
    "backoff": 0.5,
    "max_backoffs": 3,
}
KEYS = tuple(DEFAULTS)


#: the settings of ``nonfinite.divergence`` (checked before training and on construction)
CONSTRAINTS = Settings(
    {
        "policy": Options(POLICIES),
        "factor": Interval(1, closed="neither"),
        "measures": LoggedMeasure(many=True),
        "baseline": Flag(),
        "warmup": INT0,
        "backoff": Interval(0, 1, closed="neither"),
        "max_backoffs": INT0,
    },
    allow_none=True,
)


def settings(cfg: Mapping | None) -> dict:
    """``nonfinite.divergence`` with its defaults filled in.

    Raises:
        ConfigError: a setting outside :data:`CONSTRAINTS`.
    """
    check("nonfinite.divergence", cfg, CONSTRAINTS)
    out = {**DEFAULTS, **dict(cfg or {})}
    out["measures"] = [str(m) for m in out["measures"]]
    return out


@torch.no_grad()
def train_mean_baseline(model, train: Mapping[str, Tensor], val: Mapping[str, Tensor]) -> float:
    """Σ_m mean over validation examples of CE(v_m | the train-mean predictor), nats per example.

    The predictor's activation is the visible bias :meth:`MultimodalRBM.init_visible_bias_from_data`
    sets from the training means (logit of the clamped mean for Bernoulli units, the mean for
    Gaussian ones, the log-mean for counts); its cross-entropy is the validation measure's
    (:func:`mmvi.evaluation.condce.conditional_cross_entropy`: Bernoulli probabilities clipped).
    """
    from mmvi.evaluation.condce import bernoulli_cross_entropy

    bias = model.visible_bias_of_means({m: x.float().mean(0) for m, x in train.items()})
    total = 0.0
    for m in model.names:
        x = val[m].to(bias[m].device, bias[m].dtype)
        act = bias[m].expand_as(x)
        units = model.units[m]
        ce = bernoulli_cross_entropy(x, act) if units.name == "bernoulli" else -units.log_prob(x, act)
        total += float(ce.double().mean())
    return total


class DivergenceDetector:
    """The epoch-end rules of the module docstring; :meth:`check` returns the tripped event or None.

    State (checkpointed through :meth:`state_dict`): the best value and epoch of each measure, the
    events so far, the number of back-offs.
    """

    def __init__(self, cfg: Mapping | None = None, loss_is_value: bool = True) -> None:
        self.cfg = settings(cfg)
        self.measures = [m for m in self.cfg["measures"] if loss_is_value or m != TRAIN_LOSS]
        self.best: dict[str, tuple[float, int]] = {}
        self.events: list[dict] = []
        self.backoffs = 0
        self.baseline: float | None = None

    @property
    def enabled(self) -> bool:
        return self.cfg["policy"] != "off"

    @property
    def primary(self) -> str | None:
        """The measure whose best epoch's state a back-off restores: the first watched one that has
        been seen (e.g. ``train/loss`` when there is no validation)."""
        seen = [m for m in self.measures if m in self.best]
        return seen[0] if seen else (self.measures[0] if self.measures else None)

    def check(self, epoch: int, values: Mapping[str, float]) -> dict | None:
        """Apply the rules to one epoch's ``values`` (measures absent this epoch are skipped).

        Returns the first tripped event ``{"epoch", "measure", "value", "best", "rule", "action"}``
        (``best``: the best value so far, or the baseline) and records it, or None. Bests are
        updated with the epoch's finite values that did not trip.
        """
        if not self.enabled:
            return None
        k = float(self.cfg["factor"])
        event = None
        if epoch >= int(self.cfg["warmup"]):
            for m in self.measures:
                x = values.get(m)
                if x is None or not math.isfinite(x) or m not in self.best:
                    continue
                best = self.best[m][0]
                if x > best + (k - 1) * abs(best):
                    rule = f"{m} > best + ({k:g} - 1)·|best|"
                    event = {"epoch": epoch, "measure": m, "value": x, "best": best, "rule": rule}
                    break
            x = values.get(VAL_CE)
            if event is None and self.cfg["baseline"] and self.baseline is not None and x is not None:
                if x > self.baseline:
                    rule = f"{VAL_CE} > the train-mean predictor's"
                    event = {
                        "epoch": epoch,
                        "measure": VAL_CE,
                        "value": x,
                        "best": self.baseline,
                        "rule": rule,
                    }
        if event is None:
            for m in self.measures:
                x = values.get(m)
                if x is not None and math.isfinite(x) and (m not in self.best or x < self.best[m][0]):
                    self.best[m] = (float(x), int(epoch))
            return None
        policy = self.cfg["policy"]
        if policy == "backoff" and self.backoffs >= int(self.cfg["max_backoffs"]):
            policy = "stop"
        event["action"] = policy
        self.events.append(event)
        return event

    def is_best(self, epoch: int) -> bool:
        """True when ``epoch`` set the primary measure's best (its state is the one to keep)."""
        m = self.primary
        return m is not None and m in self.best and self.best[m][1] == epoch

    @property
    def record(self) -> dict:
        """``{"divergence": first event + "trips": number of tripped epochs}``, or ``{}`` if none."""
        if not self.events:
            return {}
        return {"divergence": {**self.events[0], "trips": len(self.events)}}

    def message(self, event: Mapping) -> str:
        return (
            f"divergence at epoch {event['epoch']}: {event['measure']} = {event['value']:.6g} "
            f"(reference {event['best']:.6g}; rule {event['rule']})"
        )

    def state_dict(self) -> dict:
        return {
            "best": {m: list(v) for m, v in self.best.items()},
            "events": list(self.events),
            "backoffs": self.backoffs,
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.best = {m: (float(v[0]), int(v[1])) for m, v in state.get("best", {}).items()}
        self.events = list(state.get("events", []))
        self.backoffs = int(state.get("backoffs", 0))
