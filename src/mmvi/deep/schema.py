"""The deep pipeline's stage settings (``stages`` of conf/deep.yaml), checked before any stage trains.

``<layer>`` is any per-layer override, ``<phase>`` any fine-tuning phase; objectives and
optimisers are checked against the constraints of the classes that consume them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmvi.config_check import LIT, check_target_node, dotted_get
from mmvi.constraints import INT0, INT1, Flag, Settings, check, declared
from mmvi.deep.finetune import FinetuneLitModule
from mmvi.errors import ConfigError
from mmvi.instantiate import instantiate_checked

EPOCHS_BATCH = {"epochs": INT0, "batch_size": INT1}
STAGE_OBJECTIVE = Settings({}, open=True, allow_none=True, what="a mapping with _target_")
LAYER_STAGE = Settings({**EPOCHS_BATCH, "objective": STAGE_OBJECTIVE, "optim": LIT["optim"]}, allow_none=True)
STAGES = Settings(
    {
        "progress_bar": Flag(),
        "chunk": INT1,
        "unlabelled": Flag(),
        "pathway": Settings(
            {
                **LAYER_STAGE.keys,
                "min_active": None,
                "layers": Settings({}, open=True, allow_none=True, what="a mapping of layers"),
            },
            allow_none=True,
        ),
        "top": Settings({**EPOCHS_BATCH, "validate": Flag()}, allow_none=True),
        "joint": Settings({**LAYER_STAGE.keys, "validate": Flag()}, allow_none=True),
        "finetune": Settings({}, open=True, allow_none=True, what="a mapping of phases"),
    }
)


FINETUNE_PHASE = Settings(
    {
        **EPOCHS_BATCH,
        "trainable": declared(FinetuneLitModule)["trainable"],
        "objective": STAGE_OBJECTIVE,
        "optimizer": declared(FinetuneLitModule)["optimizer"],
    }
)


def check_stage_objective(where: str, objective: Any) -> None:
    """A stage's objective node: its declared constraints, then the objective accepts every key."""
    if objective is None:
        return
    check(where, objective, STAGE_OBJECTIVE)
    check_target_node(where, objective)
    if "_target_" in objective:
        try:
            instantiate_checked(dict(objective))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def check_stages(c: Mapping) -> None:
    """The deep pipeline's per-layer, joint and fine-tuning settings (optimisers and objectives
    included: every value a stage would refuse is refused before the first stage trains)."""
    stages = dotted_get(c, "stages")
    if stages is None:
        return
    check("stages", stages, STAGES)
    for stage in ("pathway", "joint"):
        check_stage_objective(f"stages.{stage}.objective", (stages.get(stage) or {}).get("objective"))
    mods = dotted_get(c, "data.modalities") or dotted_get(c, "model.modalities") or {}
    layer_names = pathway_layer_names(c)
    for name, s in (dotted_get(c, "stages.pathway.layers") or {}).items():
        if layer_names is not None and name not in layer_names:
            raise ConfigError(
                f"stages.pathway.layers.{name} names no pathway layer of this model; "
                f"allowed: {', '.join(layer_names) or 'none (no pathway layers)'}"
            )
        check(f"stages.pathway.layers.{name}", s, LAYER_STAGE)
        check_stage_objective(f"stages.pathway.layers.{name}.objective", (s or {}).get("objective"))
    for m, k in (dotted_get(c, "stages.pathway.min_active") or {}).items():
        if mods and m not in mods:
            raise ConfigError(f"stages.pathway.min_active names modality {m!r}, which the data do not have")
        check(f"stages.pathway.min_active.{m}", k, INT1)
    for name, s in (dotted_get(c, "stages.finetune") or {}).items():
        if s:  # a phase set to null is switched off
            check(f"stages.finetune.{name}", s, FINETUNE_PHASE)
            check_stage_objective(f"stages.finetune.{name}.objective", s.get("objective") or None)


def pathway_layer_names(c: Mapping) -> list[str] | None:
    """``<modality>_<layer>`` of every pathway layer the model config describes (None: unknown)."""
    mods = dotted_get(c, "model.modalities") or dotted_get(c, "data.modalities")
    if not isinstance(mods, Mapping) or dotted_get(c, "model.n_joint") is None:
        return None
    pathways = dotted_get(c, "model.pathways") or {}
    default = dotted_get(c, "model.default_pathway") or {}
    names = []
    for m in mods:
        layers = (pathways.get(m) or default).get("layers") or []
        names += [f"{m}_{i + 1}" for i in range(len(layers))]
    return [*names, "top"]  # top: the joint RBM's pre-training of model=mdbm
