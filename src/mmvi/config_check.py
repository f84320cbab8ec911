"""The pre-flight check of a composed config, before anything is read, built or trained.

Hydra already rejects unknown group options and unknown keys (struct mode). Every setting's rule
is declared once beside its parameter (:mod:`mmvi.constraints`: the ``constraints`` of the class
or function a ``_target_`` names, of the LightningModule for ``optim``/``nonfinite``/``seed``);
:func:`validate_config` reads them for every node (the deep pipeline's stages: :mod:`mmvi.deep.schema`) and raises
one :class:`~mmvi.errors.ConfigError` naming the key and what is allowed. Checks that need the
data run once the data are read, still before training (:func:`check_evaluation_data`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mmvi.constraints import INT1, Flag, Interval, Settings, check_params, declared
from mmvi.errors import ConfigError
from mmvi.instantiate import instantiate_checked
from mmvi.lit.module import MultimodalLitModule

LIT = declared(MultimodalLitModule)
#: the settings of Lightning's Trainer that mmvi relies on (the Trainer itself checks the others)
TRAINER = Settings(
    {
        "max_epochs": Interval(-1, integer=True),
        "check_val_every_n_epoch": INT1,
        "log_every_n_steps": INT1,
        "num_nodes": INT1,
        "accumulate_grad_batches": INT1,
        "enable_progress_bar": Flag(),
    },
    open=True,
)
#: top-level settings and the classes that consume them
ROOT = {
    "seed": LIT["seed"],
    "compile": LIT["compile"],
    "optim": LIT["optim"],
    "nonfinite": LIT["nonfinite"],
    "trainer": TRAINER,
}
#: nodes built from their ``_target_``: each is checked against its target's declared constraints
TARGET_NODES = ("data", "model", "objective", "evaluation")


def dotted_get(cfg: Mapping, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def validate_config(cfg: DictConfig | Mapping) -> None:
    """Raise :class:`ConfigError` on the first setting that breaks its declared constraint."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    check_params("", c, ROOT)
    for key in TARGET_NODES:
        check_target_node(key, c.get(key))
    check_modalities(c)


def target_of(where: str, node: Mapping) -> Any:
    """The class or function a ``_target_`` names (a one-line error when it cannot be imported)."""
    from hydra.utils import get_object

    try:
        return get_object(str(node["_target_"]))
    except Exception as exc:  # noqa: BLE001 - any failure to import the target is the user's setting
        raise ConfigError(f"{where}._target_={node['_target_']!r} cannot be imported ({exc})") from None


def check_target_node(where: str, node: Any) -> None:
    """A node with a ``_target_``: its values against the target's declared constraints, and every
    nested ``_target_`` node the same way (e.g. the hybrid's ``minvi`` and ``nll``)."""
    if not isinstance(node, Mapping) or "_target_" not in node:
        return
    check_params(where, node, declared(target_of(where, node)))
    for key, value in node.items():
        if isinstance(value, Mapping):
            check_target_node(f"{where}.{key}", value)


def check_evaluation_arguments(evaluation: Any) -> None:
    """Every key of the ``evaluation`` group must be an argument of its ``_target_`` (checked before
    training: the evaluation is only called after it)."""
    if evaluation is None:
        return
    fn = instantiate_checked(evaluation)
    target = getattr(fn, "func", fn)
    keywords = getattr(fn, "keywords", {})
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(keywords) - set(params))
    if unknown:
        raise ConfigError(
            f"evaluation.{unknown[0]} is not a setting of {target.__module__}.{target.__name__}; "
            f"allowed: {', '.join(k for k in params if k not in ('model', 'dm', 'out_dir', 'native_steps'))}"
        )


def check_evaluation_data(evaluation: Any, dm: Any, model: Any = None) -> None:
    """Before training: an evaluation function that needs particular data or a particular model
    says so by a ``check_data(dm, model, **settings)`` attribute, run here (it raises a one-line
    :class:`ConfigError`)."""
    if evaluation is None:
        return
    fn = instantiate_checked(evaluation)
    check = getattr(getattr(fn, "func", fn), "check_data", None)
    if check is not None:
        check(dm, model, **getattr(fn, "keywords", {}))


def check_directions(c: Mapping, names: list[str]) -> None:
    """Every objective ``directions`` entry must name a modality of the model (``names``): checked
    again once the model knows its modalities (data configs that read them from files)."""
    for key in ("objective.directions", "objective.minvi.directions"):
        for m in dotted_get(c, key) or []:
            if m not in names:
                raise ConfigError(
                    f"{key} names modality {m!r}, which the model does not have; allowed: {names}"
                )


def check_modalities(c: Mapping) -> None:
    """Every objective ``directions`` entry must name a modality the data declare."""
    mods = dotted_get(c, "data.modalities") or {}
    for key in ("objective.directions", "objective.minvi.directions"):
        for m in dotted_get(c, key) or []:
            if mods and m not in mods:
                raise ConfigError(
                    f"{key} names modality {m!r}, which the data do not have; allowed: {sorted(mods)}"
                )


def sweeper_optimises() -> bool:
    """True in a job of a hyper-parameter search (a sweeper other than Hydra's basic one uses the
    value the task returns)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    target = str(HydraConfig.get().sweeper.get("_target_", ""))
    return bool(target) and not target.endswith(".BasicSweeper")


def check_optimized_metric(cfg: Mapping, dm: Any, model: Any) -> None:
    """In a hyper-parameter search, ``optimized_metric`` must name a measure the run reports (a
    misspelt name would train every trial for nothing); checked once the data and model are known."""
    name, evaluation = cfg.get("optimized_metric"), cfg.get("evaluation")
    if not name or evaluation is None or not sweeper_optimises():
        return
    fn = instantiate_checked(evaluation)
    names = getattr(getattr(fn, "func", fn), "metric_names", None)
    if names is None:
        return
    known = names(dm, model, **getattr(fn, "keywords", {}))
    if name not in known:
        raise ConfigError(
            f"optimized_metric={name!r} is not a measure this run reports; allowed: {', '.join(sorted(known))}"
        )
