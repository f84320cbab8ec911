"""Train a multimodal model, evaluate it and write ``results.json``.

    python -m mmvi.train                                   # defaults: mnist5k, MRBM, MinVI-MP
    python -m mmvi.train experiment=paper_mnist_mp         # the paper's MNIST MP run
    python -m mmvi.train -m objective=nll_pcd,minvi_cdpl,minvi_mp,hybrid data=mnist trainer.max_epochs=20

The run folder (``paths.output_dir``, :mod:`mmvi.run_folder`) receives the resolved config,
checkpoints, CSV and wandb logs, figures and ``results.json``; the run's life is
:func:`mmvi.lifecycle.run`.
"""

from __future__ import annotations

import logging

import hydra
import lightning.pytorch as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mmvi import lifecycle
from mmvi.cli import command_line, run_task
from mmvi.config_check import check_directions
from mmvi.errors import ConfigError
from mmvi.fingerprint import fingerprint
from mmvi.instantiate import instantiate_checked, one_line
from mmvi.lit.checkpoint_io import AtomicCheckpointIO
from mmvi.lit.gap_monitor import gap_callbacks
from mmvi.lit.module import MultimodalLitModule
from mmvi.lit.selection import checkpoint_callbacks, use_chosen_checkpoint
from mmvi.run_folder import RunRecord, last_checkpoint, resume_checkpoint

log = logging.getLogger(__name__)


class Training(lifecycle.Task):
    """Fit the LightningModule of the model, objective and optimiser configs, then evaluate."""

    def check(self) -> None:
        if "MultimodalRBM" not in str(self.cfg.model.get("_target_", "")):
            raise ConfigError(
                f"model={self.cfg.model.get('_target_')} is trained in stages: run python -m "
                "mmvi.deep.pipeline with the same overrides (mmvi.train trains model=mrbm)"
            )
        self.resume = resume_checkpoint(self.out_dir, self.cfg.get("ckpt_path"))

    def identity(self, data: str | None = None) -> dict:
        return fingerprint(self.meta["config"], data)

    def load_data(self):
        dm = instantiate_checked(self.cfg.data)
        dm.setup()
        dm.shuffle_seed = int(self.cfg.seed)
        return dm

    def build(self, dm) -> pl.LightningModule:
        cfg, config = self.cfg, self.meta["config"]
        lifecycle.complete_modalities(cfg, dm)
        config["model"]["modalities"] = OmegaConf.to_container(cfg.model.modalities, resolve=True)
        try:
            self.lit = MultimodalLitModule(
                model=config["model"],
                objective=config["objective"],
                optim=config["optim"],
                nonfinite=config.get("nonfinite"),
                seed=int(config["seed"]),
                compile=bool(config.get("compile", False)),
            )
        except (ValueError, TypeError, InstantiationException) as exc:
            raise ConfigError(one_line(exc)) from None
        lifecycle.check_model_matches_data(self.lit.model, dm)
        check_directions(config, self.lit.model.names)
        self.dm = dm
        return self.lit.model

    def loggers(self) -> list:
        loggers = lifecycle.instantiate_dict(self.cfg.get("logger"))
        callbacks = lifecycle.instantiate_dict(self.cfg.get("callbacks"))
        if not self.cfg.trainer.get("enable_progress_bar", True):
            # the trainer flag alone turns the bar off: drop the callbacks group's progress bar
            callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
        callbacks += checkpoint_callbacks(self.cfg.evaluation, last_checkpoint(self.out_dir).parent)  # =best
        callbacks += gap_callbacks(self.cfg.evaluation)  # val/ inference-gap curves
        # the config's plugins (e.g. SLURM's environment) and the atomic checkpoint writer
        plugins = [*instantiate_checked(self.cfg.trainer.get("plugins") or []), AtomicCheckpointIO()]
        self.trainer: pl.Trainer = instantiate_checked(
            self.cfg.trainer, logger=loggers or False, callbacks=callbacks, plugins=plugins
        )
        return loggers

    def execute(self, record: RunRecord, loggers: list) -> lifecycle.Outcome | None:
        lit, dm, trainer = self.lit, self.dm, self.trainer
        lit.fingerprint = self.meta["fingerprint"]
        if self.resume is None:
            lit.model.init_visible_bias_from_data(dm.modality_means())
        else:
            log.info("resuming from %s", self.resume)
        try:
            trainer.fit(lit, datamodule=dm, ckpt_path=self.resume)
        finally:  # the divergence detector's finding (mmvi.lit.divergence), also in a failed record
            record.fields.update(lit.run_fields)
        if trainer.interrupted:
            raise KeyboardInterrupt("training was interrupted; resume with ckpt_path=last")
        if not trainer.is_global_zero:
            return None
        record.fields.update(use_chosen_checkpoint(self.cfg.evaluation, trainer, lit))  # last | best
        evaluate = instantiate(self.cfg.evaluation, _convert_="all")
        metrics, artefacts = evaluate(
            model=lit.model, dm=dm, out_dir=self.out_dir, native_steps=lit.objective.native_inference_steps
        )
        return lifecycle.Outcome(metrics, artefacts, step=trainer.global_step)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, evaluate, write ``results.json``; return the metrics (empty on non-zero ranks).

    Raises (before any training, leaving a completed run's folder untouched): ConfigError for a
    bad setting or a folder that holds another configuration's run, DataError, FileNotFoundError.
    """
    return lifecycle.run(Training, cfg)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_task(train, cfg)


if __name__ == "__main__":
    command_line(main)
