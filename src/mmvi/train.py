"""Train a multimodal model, evaluate it and write ``results.json``.

    python -m mmvi.train                                   # defaults: mnist5k, MRBM, MinVI-MP
    python -m mmvi.train experiment=paper_mnist_mp         # the paper's MNIST MP run
    python -m mmvi.train -m objective=nll_pcd,minvi_cdpl,minvi_mp,hybrid data=mnist trainer.max_epochs=20

The run folder (``paths.output_dir``) receives the resolved config, checkpoints, CSV and wandb
logs, figures and ``results.json`` (status running → completed | failed, written atomically).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning.pytorch as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mmvi.api import (
    check_model_matches_data,
    command_line,
    complete_modalities,
    instantiate_dict,
    is_global_zero,
    log_to_loggers,
    preflight,
    print_summary,
    read_checkpoint_file,
    run_metadata,
    run_task,
    start_over,
    wandb_closed,
)
from mmvi.config_check import (
    ConfigError,
    check_directions,
    check_evaluation_arguments,
    check_evaluation_data,
    instantiate_checked,
    one_line,
    validate_config,
)
from mmvi.data.base import MultimodalDataModule
from mmvi.evaluation.protocol import FIGURES
from mmvi.fingerprint import check_run_folder, data_digest, fingerprint
from mmvi.lit.module import MultimodalLitModule
from mmvi.lit.selection import checkpoint_callbacks, use_chosen_checkpoint
from mmvi.utils import RESULTS_FILE, RunRecord, finite_metrics, write_json_atomic

log = logging.getLogger(__name__)


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """Checkpoint to resume from.

    ``ckpt_path=last`` (or no ``ckpt_path`` in a reused run folder) resumes from
    ``<output_dir>/checkpoints/last.ckpt`` when it exists; ``ckpt_path=none`` forces a fresh start.
    """
    ckpt = cfg.get("ckpt_path")
    if ckpt is not None and not isinstance(ckpt, str):
        raise ConfigError(f"ckpt_path={ckpt!r} has the wrong type; allowed: last, none or a checkpoint file")
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if ckpt == "none":
        return None
    if ckpt in (None, "", "last"):
        if last.is_file():
            return str(last)
        if ckpt == "last":
            log.warning("ckpt_path=last but %s does not exist; starting from scratch", last)
        return None
    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt}: no such checkpoint file")
    read_checkpoint_file(ckpt)  # a checkpoint, or one line before any work
    return str(ckpt)


def build_lit_module(cfg: DictConfig) -> MultimodalLitModule:
    """The LightningModule of the model, objective and optimiser configs; a value the model or the
    objective refuses is a :class:`ConfigError`."""
    if "MultimodalRBM" not in str(cfg.model.get("_target_", "")):
        raise ConfigError(
            f"model={cfg.model.get('_target_')} is trained in stages: run python -m mmvi.deep.pipeline "
            "with the same overrides (mmvi.train trains model=mrbm)"
        )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    try:
        return MultimodalLitModule(
            model=resolved["model"],
            objective=resolved["objective"],
            optim=resolved["optim"],
            nonfinite=resolved.get("nonfinite"),
            seed=int(resolved["seed"]),
            compile=bool(resolved.get("compile", False)),
        )
    except (ValueError, TypeError, InstantiationException) as exc:
        raise ConfigError(one_line(exc)) from None


@dataclass
class Prepared:
    """What :func:`prepare` built: every object of the run, checked."""

    dm: MultimodalDataModule
    lit: MultimodalLitModule
    fingerprint: dict
    trainer: pl.Trainer
    loggers: list
    ckpt: str | None


def prepare(cfg: DictConfig, meta: dict, out_dir: Path) -> Prepared:
    """Every check before training: config values, the run folder's identity, the data, the model,
    the trainer and its loggers and callbacks (nothing is written)."""
    validate_config(cfg)
    check_evaluation_arguments(cfg.evaluation)
    fresh = cfg.get("ckpt_path") == "none"
    resume_from = resolve_ckpt_path(cfg)
    if not fresh:  # before the data are read: the settings alone
        check_run_folder(out_dir, fingerprint(meta["config"]), resume_from)
    pl.seed_everything(int(cfg.seed), workers=True)
    dm: MultimodalDataModule = instantiate_checked(cfg.data)
    dm.setup()
    dm.shuffle_seed = int(cfg.seed)
    fp = fingerprint(meta["config"], data_digest(dm.splits))
    if not fresh:  # and the data read
        check_run_folder(out_dir, fp, resume_from)
    complete_modalities(cfg, dm)
    meta["config"]["model"]["modalities"] = OmegaConf.to_container(cfg.model.modalities, resolve=True)
    lit = build_lit_module(cfg)
    check_model_matches_data(lit, dm)
    check_evaluation_data(cfg.evaluation, dm, lit.model)
    check_directions(meta["config"], lit.model.names)
    lit.fingerprint = fp
    loggers = instantiate_dict(cfg.get("logger"))
    callbacks = instantiate_dict(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):
        # the trainer flag alone turns the bar off: drop the callbacks group's progress bar
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    callbacks += checkpoint_callbacks(cfg.evaluation, out_dir / "checkpoints")  # evaluation.checkpoint=best
    trainer: pl.Trainer = instantiate_checked(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    return Prepared(dm, lit, fp, trainer, loggers, resume_from)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, evaluate, write ``results.json``; return the metrics (empty on non-zero ranks).

    Raises (before any training, leaving a completed run's folder untouched): ConfigError for a
    bad setting or a folder that holds another configuration's run, DataError, FileNotFoundError.
    """
    out_dir = Path(cfg.paths.output_dir)
    zero = is_global_zero()
    meta = run_metadata(cfg)
    with preflight(out_dir, meta, write=zero):
        run = prepare(cfg, meta, out_dir)
    dm, lit, fp, trainer, loggers, ckpt = run.dm, run.lit, run.fingerprint, run.trainer, run.loggers, run.ckpt
    if zero:
        out_dir.mkdir(parents=True, exist_ok=True)
        if cfg.get("ckpt_path") == "none":
            start_over(out_dir, ("checkpoints", "csv", RESULTS_FILE, "config_resolved.json", *FIGURES))
        write_json_atomic(out_dir / "config_resolved.json", {**meta, "fingerprint": fp})
    with wandb_closed(), RunRecord(out_dir, {**meta, "fingerprint": fp}, write=zero) as record:
        if ckpt is None:
            lit.model.init_visible_bias_from_data(dm.modality_means())
        else:
            log.info("resuming from %s", ckpt)
        for lg in loggers:
            lg.log_hyperparams({**meta["config"], "choices": meta.get("choices", {})})
        try:
            trainer.fit(lit, datamodule=dm, ckpt_path=ckpt)
        finally:  # the divergence detector's finding (mmvi.lit.divergence), also in a failed record
            record.fields.update(lit.run_fields)
        if trainer.interrupted:
            raise KeyboardInterrupt("training was interrupted; resume with ckpt_path=last")
        if not trainer.is_global_zero:
            return {}
        record.fields.update(use_chosen_checkpoint(cfg.evaluation, trainer, lit))  # last | best
        evaluate = instantiate(cfg.evaluation, _convert_="all")
        metrics, artefacts = evaluate(
            model=lit.model, dm=dm, out_dir=out_dir, native_steps=lit.objective.native_inference_steps
        )
        good, _ = finite_metrics(metrics)
        wandb_dir = log_to_loggers(loggers, good, artefacts, trainer.global_step)
        good = record.complete(metrics, artefacts=artefacts, wandb_dir=wandb_dir)
    print_summary(out_dir, good, wandb_dir)  # after wandb's own run summary
    return good


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_task(train, cfg)


if __name__ == "__main__":
    command_line(main)
