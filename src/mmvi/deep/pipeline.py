"""Deep multimodal pipeline: pathway pre-training → top layer → recurrent fine-tuning → evaluation.

    python -m mmvi.deep.pipeline experiment=wikipedia_deep objective=minvi_mp hydra.run.dir=logs/deep/wiki-mp
    python -m mmvi.deep.pipeline experiment=mfeat_deep objective=nll_cd
    python -m mmvi.deep.pipeline -m experiment=paper_flickr objective=minvi_mp data.fold=1,2,3,4,5

Stages, each a Lightning fit with its own folder ``<run dir>/stages/<stage>/`` (:mod:`.stages`):

(a) ``pathway_<m>_<l>``: layer l of modality m's pathway, an RBM on the mean activations of the
    layer below (``stages.pathway``: objective CD-1 by default, optimiser, epochs; per-layer
    overrides in ``stages.pathway.layers.<m>_<l>``);
(b) ``top``: the joint RBM over the pathway outputs, trained with the ``objective`` group (this is
    where NLL and MinVI differ) and the ``optim`` group;
(c) ``finetune_<name>`` for each entry of ``stages.finetune``: the whole network (or its top two
    layers) as a recurrent encoder predicting one modality from the others (:mod:`.finetune`).

Then the evaluation protocol (``evaluation`` group) runs on the deep model and ``results.json`` is
written. Re-running the same command with the same run folder skips finished stages (their
``done.json``), resumes an interrupted stage from its ``last.ckpt`` and continues;
``stop_after=<stage>`` ends the command after that stage (with ``evaluate_stopped=true`` the model
is evaluated as it stands then, e.g. the MDRNN's top layer before fine-tuning, and the run is
recorded as completed with ``stopped_after``). ``model=mdbm`` replaces (b)–(c) by the multimodal
DBM's stages (:mod:`.dbm`): the joint RBM pre-trained like a pathway layer, then the whole DBM
trained by maximum likelihood (stage ``joint``).
"""

from __future__ import annotations

import json
import logging
import warnings
from functools import partial
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mmvi import lifecycle
from mmvi.cli import command_line, run_task
from mmvi.config_check import check_directions
from mmvi.data.base import MultimodalDataModule, Split
from mmvi.deep.dbm import JOINT_STAGE, check_joint_settings, top_training, train_joint
from mmvi.deep.finetune import FinetuneLitModule
from mmvi.deep.schema import check_stages
from mmvi.deep.stages import (
    LogOffsets,
    SplitsDataModule,
    StageRunner,
    StreamDataModule,
    UnlabelledStream,
    keep_rows,
    map_split,
)
from mmvi.errors import ConfigError
from mmvi.fingerprint import digest, fingerprint
from mmvi.instantiate import instantiate_checked
from mmvi.lit.module import MultimodalLitModule
from mmvi.models.dbm import MultimodalDBM
from mmvi.models.deep import MDRNN
from mmvi.run_folder import DONE_FILE, MODEL_FILE, RESULTS_FILE, STAGES_DIR, RunRecord, read_results
from mmvi.utils import atomic_path, deep_merge

log = logging.getLogger(__name__)

FIT_SPLITS = ("train", "val")
# data keys that do not change the examples (left out of the stage specs)
LOADER_KEYS = ("batch_size", "eval_batch_size", "num_workers", "on_device")


# ------------------------------------------------------------------------------ stage data
def stage_data(
    dm: MultimodalDataModule,
    fn,
    batch_size: int,
    chunk: int,
    keep=None,
    unlabelled: bool = False,
    seed: int = 0,
) -> SplitsDataModule:
    """Train/val splits of ``dm`` mapped through ``fn`` (modalities → modalities), as a data module.

    ``keep`` (modalities → bool rows) filters the training rows; with ``unlabelled`` the training
    batches also stream the data module's unlabelled pairs (``dm.iter_unlabelled``) first.
    """
    splits: dict[str, Split] = {}
    for name in FIT_SPLITS:
        split = dm.splits[name]
        if keep is not None and name == "train":
            split = keep_rows(split, keep(split.modalities))
        splits[name] = map_split(split, fn, chunk)
    kwargs = {"single_label": dm.single_label, "batch_size": batch_size, "eval_batch_size": chunk}
    if not unlabelled:
        return SplitsDataModule(splits, **kwargs)
    if not hasattr(dm, "iter_unlabelled"):
        raise ConfigError(f"stages.unlabelled=true, but {type(dm).__name__} has no unlabelled pairs")
    stream = UnlabelledStream(
        lambda epoch_seed: dm.iter_unlabelled(batch_size, shuffle=True, seed=epoch_seed),
        fn,
        splits["train"],
        batch_size,
        seed,
        keep,
    )
    return StreamDataModule(splits, stream, **kwargs)


def min_active_rows(m: str, k: int, modalities: dict):
    """Rows whose raw modality m has at least k non-zero units (e.g. documents with ≥ k tags)."""
    return (modalities[m] != 0).sum(-1) >= k


def init_biases(lit: MultimodalLitModule, dm: MultimodalDataModule) -> None:
    lit.model.init_visible_bias_from_data(dm.modality_means())


def copy_weights(source: MDRNN, lit: FinetuneLitModule, dm: MultimodalDataModule) -> None:
    lit.model.load_state_dict(source.state_dict())


def pathway_settings(stages: dict, m: str, layer: int) -> dict:
    """``stages.pathway`` with the overrides of ``stages.pathway.layers.<m>_<layer>`` merged in."""
    base = {k: v for k, v in stages["pathway"].items() if k != "layers"}
    return deep_merge(base, (stages["pathway"].get("layers") or {}).get(f"{m}_{layer}"))


# ------------------------------------------------------------------------------ the stages
def train_stages(
    cfg: dict,
    dm: MultimodalDataModule,
    model: MDRNN,
    root: Path,
    loggers: list | None = None,
    offsets: LogOffsets | None = None,
) -> list[str]:
    """Run (or skip, when done) every stage in order; return the names of the stages run or loaded.

    ``cfg`` is the resolved config; training stops after ``cfg["stop_after"]`` if set.
    """
    stages, seed = cfg["stages"], int(cfg["seed"])
    chunk = int(stages.get("chunk", 2000))
    stop_after = cfg.get("stop_after")
    runner = StageRunner(root, cfg["trainer"], progress_bar=bool(stages.get("progress_bar", False)))
    runner.loggers, runner.offsets = list(loggers or []), offsets or runner.offsets
    runner.chain.append(digest({k: v for k, v in cfg["data"].items() if k not in LOADER_KEYS}))
    unlabelled = bool(stages.get("unlabelled", False))
    data = partial(stage_data, dm, chunk=chunk, unlabelled=unlabelled, seed=seed)
    done: list[str] = []

    def finished(name: str) -> bool:
        done.append(name)
        return name == stop_after

    for m in model.names:
        for i, layer in enumerate(model.layers[m]):
            name, s = f"pathway_{m}_{i + 1}", pathway_settings(stages, m, i + 1)
            rbm_cfg = model.layer_configs[m][i]
            k = (s.get("min_active") or {}).get(m)
            spec = {key: s.get(key) for key in ("objective", "optim", "epochs", "batch_size")}
            spec.update(
                model=rbm_cfg, min_active=k, unlabelled=unlabelled, seed=seed, nonfinite=cfg.get("nonfinite")
            )
            runner.run(
                name,
                spec,
                module=layer,
                make_lit=partial(
                    MultimodalLitModule, rbm_cfg, s["objective"], s["optim"], cfg.get("nonfinite"), seed=seed
                ),
                trained=lambda lit: lit.model,
                dm=partial(
                    data,
                    partial(lambda v, m, n: {m: model.up(m, v[m], n)}, m=m, n=i),
                    int(s["batch_size"]),
                    keep=partial(min_active_rows, m, int(k)) if k else None,
                ),
                epochs=int(s["epochs"]),
                validate=False,
                on_fresh_start=init_biases,
            )
            if finished(name):
                return done

    top = stages["top"]
    # model=mdbm: the joint RBM is pre-trained like a pathway layer (mmvi.deep.dbm)
    dbm = isinstance(model, MultimodalDBM)
    top_objective, top_optim = top_training(stages) if dbm else (cfg["objective"], cfg["optim"])
    spec = {"model": model.top_config, "objective": top_objective, "optim": top_optim}
    spec.update(epochs=top["epochs"], batch_size=top["batch_size"], unlabelled=unlabelled, seed=seed)
    spec.update(nonfinite=cfg.get("nonfinite"))
    runner.run(
        "top",
        spec,
        module=model.top,
        make_lit=partial(
            MultimodalLitModule,
            model.top_config,
            top_objective,
            top_optim,
            cfg.get("nonfinite"),
            seed=seed,
        ),
        trained=lambda lit: lit.model,
        dm=partial(data, lambda v: {m: model.up(m, v[m]) for m in model.names}, int(top["batch_size"])),
        epochs=int(top["epochs"]),
        validate=bool(top.get("validate", True)),
        on_fresh_start=init_biases,
    )
    if finished("top"):
        return done
    if dbm:  # the whole DBM by maximum likelihood instead of recurrent fine-tuning
        train_joint(runner, cfg, model, data)
        finished(JOINT_STAGE)
        return done

    for phase, s in (stages.get("finetune") or {}).items():
        if not s:
            continue
        name = f"finetune_{phase}"
        spec = {key: s.get(key) for key in ("objective", "optimizer", "trainable", "epochs", "batch_size")}
        spec.update(model=cfg["model"], unlabelled=unlabelled, seed=seed)
        runner.run(
            name,
            spec,
            module=model,
            make_lit=partial(
                FinetuneLitModule,
                cfg["model"],
                s["objective"],
                s["optimizer"],
                s.get("trainable", "all"),
                seed,
            ),
            trained=lambda lit: lit.model,
            dm=partial(data, lambda v: v, int(s["batch_size"])),
            epochs=int(s["epochs"]),
            validate=True,
            on_fresh_start=partial(copy_weights, model),
        )
        if finished(name):
            return done
    return done


# ------------------------------------------------------------------------------ entry point
def check_stop_after(cfg: dict, model: MDRNN | MultimodalDBM) -> None:
    """``stop_after`` must name a stage of this model (one line before any stage trains)."""
    stop = cfg.get("stop_after")
    names = list(model.stage_modules())
    if isinstance(model, MultimodalDBM):
        names.append(JOINT_STAGE)
    else:
        names += [f"finetune_{name}" for name, s in (cfg["stages"].get("finetune") or {}).items() if s]
    if stop is not None and stop not in names:
        raise ConfigError(f"stop_after={stop!r} is not a stage of this model; allowed: {', '.join(names)}")


def check_completed_record(out_dir: Path, cfg: DictConfig) -> None:
    """A completed ``results.json`` is never relabelled: a folder evaluated after ``stop_after=<stage>``
    (``evaluate_stopped``) only takes that command again, a fully evaluated one only full runs."""
    path = out_dir / RESULTS_FILE
    if not path.is_file() or read_results(path).get("status") != "completed":
        return
    before = read_results(path).get("stopped_after")
    stop = cfg.get("stop_after")
    if (stop and not cfg.get("evaluate_stopped", False)) or (stop or None) != before:
        held = f"an evaluation after stage {before}" if before else "a completed evaluation of the model"
        raise ConfigError(f"{out_dir} holds {held}; run this command in another folder (hydra.run.dir=...)")


def stage_measures(folder: Path) -> dict[str, float]:
    """A finished stage's final training measures (its ``done.json``), for ``results.json``."""
    try:
        return json.loads((folder / DONE_FILE).read_text()).get("metrics") or {}
    except (OSError, ValueError):
        return {}


DBM_OBJECTIVE = "nll_dbm"  # the label of the multimodal DBM's joint maximum-likelihood training


def record_dbm_training(meta: dict) -> None:
    """``model=mdbm`` is trained by maximum likelihood with ``stages.joint`` (its objective and
    optimiser), not by the ``objective``/``optim`` groups: the run records what it actually ran
    (objective ``nll_dbm``), so a report never files it under the groups' MinVI default."""
    config = meta["config"]
    if not str(config["model"].get("_target_", "")).endswith("MultimodalDBM"):
        return
    joint = (config.get("stages") or {}).get(JOINT_STAGE) or {}
    given = meta.get("choices", {}).get("objective")
    if given and given != DBM_OBJECTIVE:
        log.info(
            "model=mdbm: trained by stages.joint (maximum likelihood); objective=%s does not apply", given
        )
    config["objective"] = joint.get("objective")
    config["optim"] = joint.get("optim")
    meta.setdefault("choices", {}).update(objective=DBM_OBJECTIVE, optim=f"stages.{JOINT_STAGE}")


def identity_config(config: dict) -> dict:
    """The config a deep run's fingerprint is taken of: without what this model does not use (the
    trainer's ``max_epochs``: every stage has its own; ``stages.joint`` for the MDRNN,
    ``stages.finetune`` for the DBM)."""
    out = {**config, "trainer": {k: v for k, v in (config.get("trainer") or {}).items() if k != "max_epochs"}}
    dbm = str(config["model"].get("_target_", "")).endswith("MultimodalDBM")
    unused = "finetune" if dbm else JOINT_STAGE
    out["stages"] = {k: v for k, v in (config.get("stages") or {}).items() if k != unused}
    return out


def native_inference_steps(cfg: dict) -> int:
    """The deep model's own inference: the DBM's mean-field steps (model=mdbm); else the T of the
    last fine-tuning phase run (up to ``stop_after``), else the top objective's."""
    if str(cfg["model"].get("_target_", "")).endswith("MultimodalDBM"):
        return int(cfg["model"]["mf_steps"])
    names = [name for name, s in (cfg["stages"].get("finetune") or {}).items() if s]
    stop = cfg.get("stop_after")
    if stop:  # evaluated after stop_after: only the phases run so far count
        ran = [f"finetune_{name}" for name in names]
        names = names[: ran.index(stop) + 1] if stop in ran else []
    if names:
        return int(cfg["stages"]["finetune"][names[-1]]["objective"].get("steps", 5))
    return instantiate(cfg["objective"], _convert_="all").native_inference_steps


class Pipeline(lifecycle.Task):
    """Train every stage (loading finished ones), then evaluate the deep model."""

    def check(self) -> None:
        check_stages(self.meta["config"])
        if not self.fresh:
            check_completed_record(self.out_dir, self.cfg)
        record_dbm_training(self.meta)

    def identity(self, data: str | None = None) -> dict:
        return fingerprint(identity_config(self.meta["config"]), data)

    def load_data(self) -> MultimodalDataModule:
        dm = instantiate_checked(self.cfg.data)
        dm.setup()
        dm.shuffle_seed = int(self.cfg.seed)
        return dm

    def build(self, dm: MultimodalDataModule) -> MDRNN | MultimodalDBM:
        cfg, config = self.cfg, self.meta["config"]
        lifecycle.complete_modalities(cfg, dm)
        config["model"] = OmegaConf.to_container(cfg.model, resolve=True)
        model = instantiate_checked(cfg.model)
        lifecycle.check_model_matches_data(model, dm)
        check_stop_after(config, model)
        check_directions(config, model.names)
        check_finetune_directions(config, model)
        check_min_active(config, model, dm)
        if isinstance(model, MultimodalDBM):
            check_joint_settings(config, model)
        self.model, self.dm = model, dm
        return model

    def execute(self, record: RunRecord, loggers: list) -> lifecycle.Outcome | None:
        cfg, config, out_dir = self.cfg, self.meta["config"], self.out_dir
        root, offsets = out_dir / STAGES_DIR, LogOffsets()
        # one wandb run for the whole pipeline; stages log into it by prefix
        ran = train_stages(config, self.dm, self.model, root, loggers, offsets)
        stages = {name: str(root / name) for name in ran}
        stopped = {"stopped_after": cfg.stop_after} if cfg.get("stop_after") else {}
        if stopped and not cfg.get("evaluate_stopped", False):
            record.update("running", stages=stages, **stopped)
            log.info("stopped after stage %s; re-run without stop_after to continue", cfg.stop_after)
            return None
        with atomic_path(out_dir / MODEL_FILE) as tmp:  # the whole trained model (mmvi.load reads it)
            torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, tmp)
        evaluate = instantiate(cfg.evaluation, _convert_="all")
        metrics, artefacts = evaluate(
            model=self.model, dm=self.dm, out_dir=out_dir, native_steps=native_inference_steps(config)
        )
        per_stage = {name: stage_measures(root / name) for name in ran}
        fields = {"stages": stages, "stage_metrics": per_stage, **stopped}
        return lifecycle.Outcome(metrics, artefacts, fields, step=offsets.last_step + 1)


def check_min_active(config: dict, model: MDRNN | MultimodalDBM, dm: MultimodalDataModule) -> None:
    """Every pathway whose stage keeps documents with at least ``min_active`` words must keep some
    training rows (checked before the first stage, not when that stage comes)."""
    for m in model.names:
        for layer in range(len(model.layers[m])):
            k = (pathway_settings(config["stages"], m, layer + 1).get("min_active") or {}).get(m)
            if not k:
                continue
            kept = int(min_active_rows(m, int(k), dm.splits["train"].modalities).sum())
            if kept == 0:
                most = int((dm.splits["train"].modalities[m] != 0).sum(-1).max())
                raise ConfigError(
                    f"stages.pathway.min_active.{m}={k} keeps no training example (the most active has "
                    f"{most} non-zero units); allowed: an integer in [1, {most}]"
                )


def check_finetune_directions(config: dict, model: MDRNN | MultimodalDBM) -> None:
    """Every fine-tuning phase's ``directions`` must name modalities of the model."""
    for phase, st in ((config.get("stages") or {}).get("finetune") or {}).items():
        for m in ((st or {}).get("objective") or {}).get("directions") or []:
            if m not in model.names:
                raise ConfigError(
                    f"stages.finetune.{phase}.objective.directions names modality {m!r}, which the "
                    f"model does not have; allowed: {model.names}"
                )


def run(cfg: DictConfig) -> dict[str, float]:
    """Train every stage (loading finished ones), evaluate, write ``results.json``; return the metrics.

    A run folder whose stages are all done is evaluated again (nothing is retrained).
    """
    return lifecycle.run(Pipeline, cfg)


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="deep")
def main(cfg: DictConfig) -> float | None:
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return run_task(run, cfg)


if __name__ == "__main__":
    command_line(main)
