"""Validation of a composed config before anything is built or trained.

Hydra already rejects unknown group options and unknown keys (struct mode); this adds the
value checks of every group (data, model, objective, optimiser, trainer, evaluation, the deep
pipeline's stages): each failure is a :class:`ConfigError` naming the key and what is allowed,
raised before any data are read or any training starts (a bad evaluation setting must not be
discovered after the training it evaluates).
"""

from __future__ import annotations

import inspect
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


def _int(low: int) -> tuple[Callable[[float], bool], str]:
    return (lambda x: x >= low and x == int(x)), f"an integer >= {low}"


INT0, INT1 = _int(0), _int(1)
# objective settings, checked under "objective." and under the hybrid's "objective.minvi." / "objective.nll."
OBJECTIVE_RULES: list[tuple[str, Callable[[float], bool], str]] = [
    ("mask_rate", lambda x: 0 <= x <= 1, "a number in [0, 1]"),
    ("p_modality", lambda x: 0 <= x < 1, "a number in [0, 1)"),
    ("alpha", lambda x: 0 <= x <= 1, "a number in [0, 1]"),
    ("k", *INT1),
    ("mf_steps", *INT1),
    ("bptt_steps", *INT1),
    ("grow_every", *INT0),
    ("n_chains", *INT1),
    ("sparsity_weight", lambda x: x >= 0, "a number >= 0"),
    ("sparsity_target", lambda x: 0 < x < 1, "a number in (0, 1)"),
    ("hidden_clamp", lambda x: 0 <= x < 0.5, "a number in [0, 0.5) or null"),
]
OBJECTIVE_PREFIXES = ("objective.", "objective.minvi.", "objective.nll.")
OPTIM_KEYS = (
    "lr",
    "lr_decay",
    "momentum_initial",
    "momentum",
    "momentum_switch_epoch",
    "momentum_dampening",
    "weight_decay",
    # how close the update follows the reference code's (mmvi.lit.module)
    "momentum_negative",
    "velocity_init",
)
OPTIM_RULES: list[tuple[str, Callable[[float], bool], str]] = [
    ("lr", lambda x: x > 0, "a number > 0"),
    ("lr_decay", lambda x: x >= 0, "a number >= 0"),
    ("momentum", lambda x: 0 <= x < 1, "a number in [0, 1)"),
    ("momentum_initial", lambda x: 0 <= x < 1, "a number in [0, 1)"),
    ("momentum_switch_epoch", lambda x: x >= 0 and x == int(x), "an integer >= 0"),
    ("weight_decay", lambda x: x >= 0, "a number >= 0"),
]
RULES: list[tuple[str, Callable[[float], bool], str]] = [
    ("model.n_hidden", *INT1),
    ("model.n_joint", *INT1),
    ("model.init_std", lambda x: x > 0, "a number > 0"),
    ("model.visible_bias_clip", lambda x: 0 < x < 0.5, "a number in (0, 0.5)"),
    ("model.mf_steps", *INT1),
    ("model.mf_tol", lambda x: x >= 0, "a number >= 0 (or null)"),
    ("data.batch_size", *INT1),
    ("data.eval_batch_size", *INT1),
    ("seed", lambda x: 0 <= x < 2**32 and x == int(x), "an integer in [0, 2^32)"),
    ("trainer.max_epochs", lambda x: x >= 0 and x == int(x), "an integer >= 0 (or -1)"),
    ("trainer.check_val_every_n_epoch", *INT1),
    ("trainer.log_every_n_steps", *INT1),
    ("trainer.num_nodes", *INT1),
    ("trainer.accumulate_grad_batches", *INT1),
    *((prefix + key, ok, allowed) for prefix in OBJECTIVE_PREFIXES for key, ok, allowed in OBJECTIVE_RULES),
    ("nonfinite.backoff", lambda x: 0 < x < 1, "a number in (0, 1)"),
    ("nonfinite.max_consecutive", *INT0),
    # evaluation (conf/evaluation)
    ("evaluation.mf_steps", *INT1),
    ("evaluation.mf_tol", lambda x: x >= 0, "a number >= 0 (or null)"),
    ("evaluation.batch_size", *INT1),
    ("evaluation.n_generation", *INT0),
    ("evaluation.classifier.max_extensions", *INT0),
    ("evaluation.classifier.max_train", *INT1),
    ("evaluation.likelihood.n_examples", *INT1),
    ("evaluation.likelihood.n_ais_runs", *INT1),
    ("evaluation.likelihood.n_betas", *_int(3)),
    ("evaluation.likelihood.joint_ais_runs", *INT1),
    ("evaluation.likelihood.joint_betas", *_int(3)),
    ("evaluation.likelihood.exact_limit", lambda x: 0 <= x <= 30 and x == int(x), "an integer in [0, 30]"),
    ("evaluation.likelihood.seed", *INT0),
    ("evaluation.likelihood.binarize_seed", *INT0),
    ("evaluation.likelihood.batch_size", *INT1),
    ("evaluation.retrieval.k", *INT1),
    ("evaluation.retrieval.n_figure_queries", *INT0),
    ("evaluation.retrieval.figure_k", *INT1),
    # the deep pipeline (conf/deep.yaml)
    ("stages.chunk", *INT1),
    ("stages.pathway.epochs", *INT0),
    ("stages.pathway.batch_size", *INT1),
    ("stages.top.epochs", *INT0),
    ("stages.top.batch_size", *INT1),
]
CHOICES: list[tuple[str, tuple]] = [
    ("nonfinite.policy", ("backoff", "stop")),
    *((prefix + "k_schedule", ("fixed", "ramp")) for prefix in OBJECTIVE_PREFIXES),
    *((prefix + "sparsity_form", ("exact", "running_average")) for prefix in OBJECTIVE_PREFIXES),
    *((prefix + "negative_statistics", ("free_energy", "hidden_states")) for prefix in OBJECTIVE_PREFIXES),
    ("optim.velocity_init", ("gradient", "zero")),
    ("evaluation.inference", ("native", "converged")),
    ("evaluation.classifier.refit", ("train_val", "train")),
    ("evaluation.likelihood.ais_base", ("meanfield", "marginal")),
    ("evaluation.likelihood.schedule", ("piecewise", "linear")),
]
FLAGS = [
    *(prefix + key for prefix in OBJECTIVE_PREFIXES for key in ("binarize_data", "persistent")),
    "optim.momentum_dampening",
    "optim.momentum_negative",
    "trainer.enable_progress_bar",
    "evaluation.likelihood.enabled",
    "evaluation.retrieval.enabled",
    "compile",
]


def validate_config(cfg: DictConfig | Mapping) -> None:
    """Raise :class:`ConfigError` on the first invalid value (see ``RULES``)."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    for key, ok, allowed in RULES:
        value = _get(c, key)
        if key == "trainer.max_epochs" and value == -1:
            continue
        _number(key, value, ok, allowed)
    for key, allowed in CHOICES:
        value = _get(c, key)
        if value is not None and value not in allowed:
            raise ConfigError(f"{key}={value!r} is not allowed; allowed: {', '.join(allowed)}")
    for key in FLAGS:
        value = _get(c, key)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} has the wrong type; allowed: true, false")
    check_nodes(c)
    check_optim("optim", _get(c, "optim"))
    check_lists(c)
    check_stages(c)
    check_modalities(c)


# nodes that must be mappings, and the keys each allows (None: any key)
NODE_KEYS: dict[str, tuple[str, ...] | None] = {
    "optim": OPTIM_KEYS,
    "nonfinite": ("policy", "backoff", "max_consecutive"),
    "evaluation.classifier": ("Cs", "max_extensions", "refit", "max_train"),
    "evaluation.retrieval": ("enabled", "k", "n_figure_queries", "figure_k"),
    "evaluation.likelihood": None,  # checked against likelihood_metrics' arguments
}


def check_keys(where: str, node: Any, allowed: tuple[str, ...]) -> None:
    """``node`` must be a mapping whose keys are all in ``allowed`` (``+key=`` can add any key)."""
    if not isinstance(node, Mapping):
        raise ConfigError(f"{where}={node!r} has the wrong type; allowed: a mapping of settings")
    unknown = sorted(set(node) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]} is not a setting; allowed: {', '.join(allowed)}")


def check_nodes(c: Mapping) -> None:
    """Config nodes must be mappings with known keys (:func:`check_keys`)."""
    for key, allowed in NODE_KEYS.items():
        node = _get(c, key)
        if node is None:
            continue
        if key == "evaluation.likelihood":
            from mmvi.evaluation.likelihood import likelihood_metrics

            allowed = ("enabled", *list(inspect.signature(likelihood_metrics).parameters)[2:])
        check_keys(key, node, allowed)
    dirs = [(k, _get(c, k)) for k in ("objective.directions", "objective.minvi.directions")]
    for key, value in dirs:
        if value is not None and (not isinstance(value, list | tuple) or not value):
            raise ConfigError(
                f"{key}={value!r} is not allowed; allowed: a non-empty list of modalities, or null (all)"
            )


def check_optim(where: str, optim: Any) -> None:
    """An SGD optimiser node (``optim`` or a deep stage's ``optim``): known keys, values in range."""
    if optim is None:
        return
    check_keys(where, optim, OPTIM_KEYS)
    for key, ok, allowed in OPTIM_RULES:
        _number(f"{where}.{key}", optim.get(key), ok, allowed)
    if "momentum_dampening" in optim and not isinstance(optim["momentum_dampening"], bool):
        raise ConfigError(
            f"{where}.momentum_dampening={optim['momentum_dampening']!r} has the wrong type; allowed: true, false"
        )


def check_objective_node(where: str, objective: Any) -> None:
    """An objective node of a deep stage: values in range, and the objective accepts them."""
    if objective is None:
        return
    if not isinstance(objective, Mapping):
        raise ConfigError(f"{where}={objective!r} has the wrong type; allowed: a mapping with _target_")
    for key, ok, allowed in OBJECTIVE_RULES:
        _number(f"{where}.{key}", objective.get(key), ok, allowed)
    if "_target_" in objective:
        try:
            instantiate_checked(dict(objective))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def check_lists(c: Mapping) -> None:
    """List-valued settings: the probe's C grid, data split caps."""
    Cs = _get(c, "evaluation.classifier.Cs")
    if Cs is not None:
        ok = (
            isinstance(Cs, list | tuple)
            and Cs
            and all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0
                for x in Cs
            )
        )
        if not ok:
            raise ConfigError(
                f"evaluation.classifier.Cs={Cs!r} is not allowed; allowed: a non-empty list of numbers > 0"
            )
    caps = _get(c, "data.max_examples")
    if caps is not None and not isinstance(caps, Mapping):
        raise ConfigError(
            f"data.max_examples={caps!r} is not allowed; allowed: a mapping of splits to sizes, "
            "e.g. 'data.max_examples={train:1000,val:200,test:200}' (quoted for the shell)"
        )
    if isinstance(caps, Mapping):
        for split, n in caps.items():
            _number(f"data.max_examples.{split}", n, *INT1)


# the deep pipeline's stage nodes and the keys each allows (``<phase>``: any fine-tuning phase,
# ``<layer>``: any per-layer override); conf/deep.yaml documents each key
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "stages": ("progress_bar", "chunk", "unlabelled", "pathway", "top", "finetune", "joint"),
    "stages.pathway": ("epochs", "batch_size", "min_active", "objective", "optim", "layers"),
    "stages.pathway.layers.<layer>": ("epochs", "batch_size", "objective", "optim"),
    "stages.top": ("epochs", "batch_size", "validate"),
    "stages.joint": ("epochs", "batch_size", "validate", "objective", "optim"),
    "stages.finetune.<phase>": ("epochs", "batch_size", "trainable", "objective", "optimizer"),
    "stages.finetune.<phase>.optimizer": ("name", "lr", "weight_decay", "momentum"),
}


def check_stage_keys(c: Mapping) -> None:
    """Every stage node is a mapping of known keys (``+stages.<...>.foo=1`` is refused)."""

    def check(where: str, pattern: str, node: Any) -> None:
        if node is not None:
            check_keys(where, node, STAGE_KEYS[pattern])

    stages = _get(c, "stages")
    check("stages", "stages", stages)
    for name in ("pathway", "top", "joint"):
        check(f"stages.{name}", f"stages.{name}", stages.get(name))
    layers = (stages.get("pathway") or {}).get("layers")
    if layers is not None and not isinstance(layers, Mapping):
        raise ConfigError(
            f"stages.pathway.layers={layers!r} has the wrong type; allowed: a mapping of layers"
        )
    for name, node in (layers or {}).items():
        check(f"stages.pathway.layers.{name}", "stages.pathway.layers.<layer>", node)
    phases = stages.get("finetune")
    if phases is not None and not isinstance(phases, Mapping):
        raise ConfigError(f"stages.finetune={phases!r} has the wrong type; allowed: a mapping of phases")
    for name, node in (phases or {}).items():
        if node:  # a phase set to null is switched off
            check(f"stages.finetune.{name}", "stages.finetune.<phase>", node)
            check(
                f"stages.finetune.{name}.optimizer",
                "stages.finetune.<phase>.optimizer",
                node.get("optimizer"),
            )


def check_stages(c: Mapping) -> None:
    """The deep pipeline's per-layer, joint and fine-tuning settings (optimisers and objectives
    included: every value a stage would refuse is refused before the first stage trains)."""
    if _get(c, "stages") is None:
        return
    check_stage_keys(c)
    for stage in ("pathway", "joint", "top"):
        node = _get(c, f"stages.{stage}")
        if node is None:
            continue  # a mapping of known keys (check_stage_keys)
        check_optim(f"stages.{stage}.optim", node.get("optim"))
        check_objective_node(f"stages.{stage}.objective", node.get("objective"))
        for key, rule in (("epochs", INT0), ("batch_size", INT1)):
            _number(f"stages.{stage}.{key}", node.get(key), *rule)
    mods = _get(c, "data.modalities") or _get(c, "model.modalities") or {}
    layer_names = pathway_layer_names(c)
    for name, s in (_get(c, "stages.pathway.layers") or {}).items():
        if layer_names is not None and name not in layer_names:
            raise ConfigError(
                f"stages.pathway.layers.{name} names no pathway layer of this model; "
                f"allowed: {', '.join(layer_names) or 'none (no pathway layers)'}"
            )
        if not isinstance(s, Mapping):
            raise ConfigError(f"stages.pathway.layers.{name}={s!r} has the wrong type; allowed: a mapping")
        check_optim(f"stages.pathway.layers.{name}.optim", s.get("optim"))
        check_objective_node(f"stages.pathway.layers.{name}.objective", s.get("objective"))
        for key, rule in (("epochs", INT0), ("batch_size", INT1)):
            _number(f"stages.pathway.layers.{name}.{key}", (s or {}).get(key), *rule)
    for m, k in (_get(c, "stages.pathway.min_active") or {}).items():
        if mods and m not in mods:
            raise ConfigError(f"stages.pathway.min_active names modality {m!r}, which the data do not have")
        _number(f"stages.pathway.min_active.{m}", k, *INT1)
    for name, s in (_get(c, "stages.finetune") or {}).items():
        if not s:
            continue
        where = f"stages.finetune.{name}"
        _number(f"{where}.epochs", s.get("epochs"), *INT0)
        _number(f"{where}.batch_size", s.get("batch_size"), *INT1)
        trainable = s.get("trainable")
        if trainable is not None and trainable not in ("all", "top"):
            raise ConfigError(f"{where}.trainable={trainable!r} is not allowed; allowed: all, top")
        opt = s.get("optimizer") or {}
        if opt.get("name") is not None and opt["name"] not in ("adam", "sgd"):
            raise ConfigError(f"{where}.optimizer.name={opt['name']!r} is not allowed; allowed: adam, sgd")
        _number(f"{where}.optimizer.lr", opt.get("lr"), lambda x: x > 0, "a number > 0")
        obj = s.get("objective") or {}
        if not isinstance(obj, Mapping):
            raise ConfigError(
                f"{where}.objective={obj!r} has the wrong type; allowed: a mapping with _target_"
            )
        _number(f"{where}.objective.steps", obj.get("steps"), *INT0)
        _number(f"{where}.objective.bptt_steps", obj.get("bptt_steps"), *INT1)
        _number(
            f"{where}.objective.mask_rate", obj.get("mask_rate"), lambda x: 0 <= x < 1, "a number in [0, 1)"
        )
        check_objective_node(f"{where}.objective", obj or None)  # the objective accepts every key


def pathway_layer_names(c: Mapping) -> list[str] | None:
    """``<modality>_<layer>`` of every pathway layer the model config describes (None: unknown)."""
    mods = _get(c, "model.modalities") or _get(c, "data.modalities")
    if not isinstance(mods, Mapping) or _get(c, "model.n_joint") is None:
        return None
    pathways = _get(c, "model.pathways") or {}
    default = _get(c, "model.default_pathway") or {}
    names = []
    for m in mods:
        layers = (pathways.get(m) or default).get("layers") or []
        names += [f"{m}_{i + 1}" for i in range(len(layers))]
    return [*names, "top"]  # top: the joint RBM's pre-training of model=mdbm


def one_line(exc: BaseException) -> str:
    """The message of an error raised while building an object from the config, on one line
    (Hydra's InstantiationException is unwrapped to its cause)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    text = " ".join(str(cause).split())
    full_key = getattr(exc, "full_key", None) or ""
    return f"{full_key}: {text}" if full_key and full_key not in text else text


def instantiate_checked(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node)``; a constructor that refuses a value raises a one-line
    :class:`ConfigError` (a data error raised inside keeps its own type)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        from mmvi.data.base import DataError

        cause = exc.__cause__
        if isinstance(cause, DataError | FileNotFoundError):
            raise cause from None
        raise ConfigError(one_line(exc)) from None


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
        for m in _get(c, key) or []:
            if m not in names:
                raise ConfigError(
                    f"{key} names modality {m!r}, which the model does not have; allowed: {names}"
                )


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
