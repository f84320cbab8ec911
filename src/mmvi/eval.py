"""Evaluate a trained checkpoint: ``python -m mmvi.eval ckpt_path=<run>/checkpoints/last.ckpt``.

    python -m mmvi.eval ckpt_path=<run>/checkpoints/last.ckpt evaluation.likelihood.enabled=true
    python -m mmvi.eval ckpt_path=<run>/checkpoints/last.ckpt +data=arrays 'data.files={...}'  # other data

The model is rebuilt from the checkpoint's own hyper-parameters and the data from the training
run's ``config_resolved.json`` (so an experiment's model is never replaced by a default one), or
from a data config given with ``+data=<option>`` (an option of the training run's kind keeps the
training settings, e.g. unit types, except the ``data.<key>`` given on the command line); the data module receives the data state the
checkpoint holds (e.g. the training split's standardisation statistics). Writes ``results.json``
(status completed/failed) into the eval run folder. A user error (missing checkpoint, bad value)
ends the command with one line and exit status 2, before any work.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mmvi import lifecycle
from mmvi.cli import command_line, run_task
from mmvi.context import new_folder
from mmvi.data.base import load_data_state
from mmvi.errors import ConfigError
from mmvi.fingerprint import fingerprint, fingerprint_of
from mmvi.instantiate import instantiate_checked
from mmvi.lit.module import MultimodalLitModule
from mmvi.run_folder import CHECKPOINT_KEY, RunRecord, load_checkpoint, training_config
from mmvi.utils import deep_merge

log = logging.getLogger(__name__)


def evaluation_data(cfg: DictConfig, ckpt: Path) -> dict:
    """The data config to evaluate on: the training run's, with ``+data=<option>`` (a whole data
    config) or ``+data.<key>=...`` (keys merged onto the training run's data config) applied."""
    given = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else None
    if given is not None and not isinstance(given, dict):
        raise ConfigError(f"data={given!r} is not allowed; allowed: +data=<option> or +data.<key>=<value>")
    try:
        trained = training_config(ckpt)["data"]
    except FileNotFoundError:
        if given and "_target_" in given:  # the data named in full: nothing to take from the run
            return given
        raise
    if given and "_target_" in given:
        explicit = data_keys_on_command_line()
        if given["_target_"] != trained.get("_target_") or explicit is None:
            return given
        # the training run's kind of data: its settings (unit types, modality names, …), with the
        # keys given on this command line (``data.<key>=`` replaces, ``data.<key>.<sub>=`` merges)
        # and where relative paths start from
        out = dict(trained)
        for key, how in {**explicit, "root": "replace"}.items():
            if key in given:
                out[key] = deep_merge(trained.get(key) or {}, given[key]) if how == "merge" else given[key]
        return out
    return deep_merge(trained, given) if given else trained


def data_keys_on_command_line() -> dict[str, str] | None:
    """``{key: "replace" | "merge"}`` of the ``data.<key>`` (replace) and ``data.<key>.<sub>``
    (merge) settings given on this command line (None: not known)."""
    if not HydraConfig.initialized():
        return None
    keys: dict[str, str] = {}
    for item in HydraConfig.get().overrides.task:
        parts = item.lstrip("+~").split("=", 1)[0].split(".")
        if parts[0] == "data" and len(parts) > 1:
            how = "merge" if len(parts) > 2 else "replace"
            keys[parts[1]] = "replace" if keys.get(parts[1]) == "replace" else how
    return keys


def evaluation_fingerprint(cfg: DictConfig, ckpt: Path, data_cfg: dict, checkpoint: dict) -> dict:
    """What an evaluation's numbers depend on: the checkpoint (its training fingerprint, or its
    path when it has none), the data and the evaluation settings."""
    trained = checkpoint.get(CHECKPOINT_KEY) or {}
    config = {"data": data_cfg, "evaluation": OmegaConf.to_container(cfg.evaluation, resolve=True)}
    config["seed"] = int(cfg.seed)
    settings = fingerprint(config)["settings"]
    settings["checkpoint"] = trained.get("digest") or str(ckpt.resolve())
    return fingerprint_of(settings)


class Evaluation(lifecycle.Task):
    """Evaluate ``cfg.ckpt_path`` on the training run's data (or the data given)."""

    fresh = False  # ckpt_path names the checkpoint evaluated, never a start-over

    def check(self) -> None:
        cfg = self.cfg
        if OmegaConf.is_missing(cfg, "ckpt_path"):
            raise ConfigError(
                "ckpt_path is required: python -m mmvi.eval ckpt_path=<run>/checkpoints/last.ckpt"
            )
        self.ckpt = Path(str(cfg.ckpt_path))
        if not self.ckpt.is_file():
            raise FileNotFoundError(f"ckpt_path={self.ckpt}: no such checkpoint file")
        self.checkpoint = load_checkpoint(self.ckpt)
        self.data_cfg = evaluation_data(cfg, self.ckpt)
        self.meta["data_config"] = self.data_cfg
        self.with_checkpoint = False  # the folder's identity is its record
        self.ways = f"evaluate into a new folder ({new_folder()})"
        self.record_fields = {"checkpoint": str(self.ckpt)}

    def identity(self, data: str | None = None) -> dict:
        fp = evaluation_fingerprint(self.cfg, self.ckpt, self.data_cfg, self.checkpoint)
        return fingerprint_of(fp["settings"], data)

    def load_data(self):
        dm = instantiate_checked(self.data_cfg)
        load_data_state(dm, self.checkpoint)
        dm.setup()
        return dm

    def build(self, dm):
        self.lit = MultimodalLitModule.load_from_checkpoint(str(self.ckpt), map_location="cpu")
        lifecycle.check_model_matches_data(self.lit.model, dm, trained=True)
        self.dm = dm
        return self.lit.model

    def execute(self, record: RunRecord, loggers: list) -> lifecycle.Outcome:
        evaluate = instantiate(self.cfg.evaluation, _convert_="all")
        metrics, artefacts = evaluate(
            model=self.lit.model,
            dm=self.dm,
            out_dir=self.out_dir,
            native_steps=self.lit.objective.native_inference_steps,
        )
        return lifecycle.Outcome(metrics, artefacts)


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.ckpt_path``; return the metrics (see the module docstring)."""
    return lifecycle.run(Evaluation, cfg)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    return run_task(evaluate_checkpoint, cfg)


if __name__ == "__main__":
    command_line(main)
