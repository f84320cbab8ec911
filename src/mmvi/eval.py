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

import json
import logging
from pathlib import Path

import hydra
import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mmvi.api import (
    check_model_matches_data,
    command_line,
    preflight,
    print_summary,
    read_checkpoint_file,
    run_metadata,
    run_task,
)
from mmvi.config_check import (
    ConfigError,
    check_evaluation_arguments,
    check_evaluation_data,
    instantiate_checked,
    validate_config,
)
from mmvi.data.base import MultimodalDataModule, load_data_state
from mmvi.deep.stages import deep_merge
from mmvi.fingerprint import (
    CHECKPOINT_KEY,
    check_run_folder,
    data_digest,
    fingerprint,
    fingerprint_of,
    new_folder,
)
from mmvi.lit.module import MultimodalLitModule
from mmvi.utils import RunRecord, write_json_atomic

log = logging.getLogger(__name__)


def training_config(ckpt_path: Path) -> dict:
    """The resolved config saved by the run that wrote ``ckpt_path`` (``<run>/checkpoints/x.ckpt``).

    Raises:
        FileNotFoundError: no ``config_resolved.json`` beside the checkpoint's run folder.
    """
    saved = ckpt_path.resolve().parent.parent / "config_resolved.json"
    if not saved.is_file():
        raise FileNotFoundError(
            f"{saved} not found: cannot tell which data the checkpoint was trained on; "
            "name the data with +data=<option> (e.g. +data=mnist data.data_dir=<folder>)"
        )
    return json.loads(saved.read_text())["config"]


def evaluation_data(cfg: DictConfig, ckpt: Path) -> dict:
    """The data config to evaluate on: the training run's, with ``+data=<option>`` (a whole data
    config) or ``+data.<key>=...`` (keys merged onto the training run's data config) applied."""
    given = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else None
    if given is not None and not isinstance(given, dict):
        raise ConfigError(f"data={given!r} is not allowed; allowed: +data=<option> or +data.<key>=<value>")
    trained = training_config(ckpt)["data"]
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


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.ckpt_path``; return the metrics (see the module docstring)."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError("ckpt_path is required: python -m mmvi.eval ckpt_path=<run>/checkpoints/last.ckpt")
    out_dir = Path(cfg.paths.output_dir)
    meta = run_metadata(cfg)
    with preflight(out_dir, meta):
        ckpt = Path(str(cfg.ckpt_path))
        if not ckpt.is_file():
            raise FileNotFoundError(f"ckpt_path={ckpt}: no such checkpoint file")
        checkpoint = read_checkpoint_file(ckpt)
        validate_config(cfg)
        check_evaluation_arguments(cfg.evaluation)
        data_cfg = evaluation_data(cfg, ckpt)
        fp = evaluation_fingerprint(cfg, ckpt, data_cfg, checkpoint)
        ways = f"evaluate into a new folder ({new_folder()})"
        check_run_folder(out_dir, fp, checkpoint=out_dir / "none", ways=ways)
        pl.seed_everything(int(cfg.seed))
        lit = MultimodalLitModule.load_from_checkpoint(str(ckpt), map_location="cpu")
        dm: MultimodalDataModule = instantiate_checked(data_cfg)
        load_data_state(dm, checkpoint)
        dm.setup()
        check_model_matches_data(lit, dm, trained=True)
        check_evaluation_data(cfg.evaluation, dm, lit.model)
        fp = fingerprint_of(fp["settings"], data_digest(dm.splits))
        check_run_folder(out_dir, fp, checkpoint=out_dir / "none", ways=ways)
    meta = {**meta, "fingerprint": fp, "data_config": data_cfg}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "config_resolved.json", meta)
    with RunRecord(out_dir, meta, checkpoint=str(ckpt)) as record:
        evaluate = instantiate(cfg.evaluation, _convert_="all")
        metrics, artefacts = evaluate(
            model=lit.model, dm=dm, out_dir=out_dir, native_steps=lit.objective.native_inference_steps
        )
        good = record.complete(metrics, artefacts=artefacts)
    print_summary(out_dir, good, None)
    return good


@hydra.main(version_base="1.3", config_path="../../conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    return run_task(evaluate_checkpoint, cfg)


if __name__ == "__main__":
    command_line(main)
