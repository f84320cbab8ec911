"""Validation of a composed config before anything is built or trained.

Hydra already rejects unknown group options and unknown keys (struct mode); this adds the
value checks: each failure is a :class:`ConfigError` naming the key and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

UNIT_NAMES = ("bernoulli", "gaussian", "softmax")


class ConfigError(ValueError):
    """A config value is of the wrong type or outside its allowed range."""


def _get(cfg: Mapping, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _number(key: str, value: Any, ok: Callable[[float], bool], allowed: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}={value!r} has the wrong type; allowed: {allowed}")
    if not math.isfinite(float(value)) or not ok(float(value)):
        raise ConfigError(f"{key}={value!r} is out of range; allowed: {allowed}")


RULES: list[tuple[str, Callable[[float], bool], str]] = [
    ("optim.lr", lambda x: x > 0, "a number > 0"),
    ("optim.lr_decay", lambda x: x >= 0, "a number >= 0"),
    ("optim.momentum", lambda x: 0 <= x < 1, "a number in [0, 1)"),
    ("optim.momentum_initial", lambda x: 0 <= x < 1, "a number in [0, 1)"),
    ("optim.momentum_switch_epoch", lambda x: x >= 0 and x == int(x), "an integer >= 0"),
    ("optim.weight_decay", lambda x: x >= 0, "a number >= 0"),
    ("model.n_hidden", lambda x: x >= 1 and x == int(x), "an integer >= 1"),
    ("model.init_std", lambda x: x > 0, "a number > 0"),
    ("model.mf_steps", lambda x: x >= 1 and x == int(x), "an integer >= 1"),
    ("model.mf_tol", lambda x: x >= 0, "a number >= 0 (or null)"),
    ("data.batch_size", lambda x: x >= 1 and x == int(x), "an integer >= 1"),
    ("trainer.max_epochs", lambda x: x >= 0 and x == int(x), "an integer >= 0 (or -1)"),
    ("objective.mask_rate", lambda x: 0 <= x <= 1, "a number in [0, 1]"),
    ("objective.minvi.mask_rate", lambda x: 0 <= x <= 1, "a number in [0, 1]"),
    ("objective.alpha", lambda x: 0 <= x <= 1, "a number in [0, 1]"),
    ("objective.k", lambda x: x >= 1 and x == int(x), "an integer >= 1"),
    ("objective.mf_steps", lambda x: x >= 1 and x == int(x), "an integer >= 1"),
    ("objective.bptt_steps", lambda x: x >= 1 and x == int(x), "an integer >= 1"),
    ("objective.n_chains", lambda x: x >= 1 and x == int(x), "an integer >= 1"),
    ("objective.sparsity_weight", lambda x: x >= 0, "a number >= 0"),
    ("objective.sparsity_target", lambda x: 0 < x < 1, "a number in (0, 1)"),
    ("evaluation.mf_steps", lambda x: x >= 0 and x == int(x), "an integer >= 0"),
    ("nonfinite.backoff", lambda x: 0 < x < 1, "a number in (0, 1)"),
]


def validate_config(cfg: DictConfig | Mapping) -> None:
    """Raise :class:`ConfigError` on the first invalid value (see ``RULES``)."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    for key, ok, allowed in RULES:
        value = _get(c, key)
        if key == "trainer.max_epochs" and value == -1:
            continue
        _number(key, value, ok, allowed)
    policy = _get(c, "nonfinite.policy")
    if policy is not None and policy not in ("backoff", "stop"):
        raise ConfigError(f"nonfinite.policy={policy!r} is not allowed; allowed: backoff, stop")
    check_modalities(c)


def check_modalities(c: Mapping) -> None:
    """``data.modalities`` specs and every objective ``directions`` entry must be consistent."""
    mods = _get(c, "data.modalities") or {}
    for name, spec in mods.items():
        units = (spec or {}).get("units", "bernoulli")
        if units not in UNIT_NAMES:
            raise ConfigError(f"data.modalities.{name}.units={units!r}; allowed: {', '.join(UNIT_NAMES)}")
        _number(
            f"data.modalities.{name}.size",
            (spec or {}).get("size"),
            lambda x: x >= 1 and x == int(x),
            "an integer >= 1",
        )
    for key in ("objective.directions", "objective.minvi.directions"):
        dirs = _get(c, key)
        for m in dirs or []:
            if mods and m not in mods:
                raise ConfigError(
                    f"{key} names modality {m!r}, which the data do not have; allowed: {sorted(mods)}"
                )
