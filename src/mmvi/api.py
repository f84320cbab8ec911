"""The Python API for notebooks: :func:`run` and :func:`load`.

    import mmvi
    out = mmvi.run(["data=uci_mfeat", "objective=minvi_mp", "trainer.max_epochs=5"], run_dir="runs/mp")
    out["metrics"]["classify/err_multimodal"], out["run_dir"]
    run = mmvi.load(out["run_dir"])          # run.model, run.datamodule, run.results

:func:`run` composes the same Hydra config as ``python -m mmvi.train`` (``task="eval"``:
``mmvi.eval``, ``task="deep"``: ``mmvi.deep.pipeline``) with Hydra's compose API and calls the same
task function, so validation, the run folder, ``results.json`` and the loggers are those of the
CLI; a user error raises its exception (e.g. :class:`~mmvi.errors.ConfigError`) instead of
ending the process.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from mmvi.data.base import MultimodalDataModule
from mmvi.errors import ConfigError
from mmvi.run_folder import MODEL_FILE, RESULTS_FILE, last_checkpoint, read_results, training_config

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# task → (config name, "module:function")
TASKS = {
    "train": ("train", "mmvi.train:train"),
    "eval": ("eval", "mmvi.eval:evaluate_checkpoint"),
    "deep": ("deep", "mmvi.deep.pipeline:run"),
}


def compose_config(task: str, overrides: list[str], run_dir: str | Path | None = None) -> DictConfig:
    """The job config of ``task`` as its CLI would compose it, with HydraConfig set.

    ``run_dir`` is the run folder (``hydra.run.dir=...`` in ``overrides`` does the same); the
    default is the CLI's timestamped folder under ``paths.log_dir``.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    if task not in TASKS:
        raise ConfigError(f"task={task!r}; allowed: {', '.join(TASKS)}")
    name = TASKS[task][0]
    outer = get_gh_backup()  # the caller's own Hydra context (initialize_config_dir, @hydra.main), if any
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=name):
            cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
    finally:
        restore_gh_from_backup(outer)
    with open_dict(cfg):
        out = Path(run_dir) if run_dir is not None else Path(str(cfg.hydra.run.dir))
        cfg.hydra.runtime.output_dir = str(out.resolve())
        cfg.hydra.runtime.cwd = os.getcwd()
        cfg.hydra.job.name = name
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run(overrides: list[str] | None = None, task: str = "train", run_dir: str | Path | None = None) -> dict:
    """Run a training (``train``), an evaluation (``eval``) or the deep pipeline (``deep``).

    Args:
        overrides: Hydra overrides exactly as on the command line, e.g. ``["objective=minvi_mp",
            "trainer.max_epochs=5"]`` (``task="eval"`` needs ``ckpt_path=<checkpoint>``).
        task: ``train`` | ``eval`` | ``deep``.
        run_dir: the run folder (default: the CLI's timestamped folder).
    Returns:
        ``{"metrics": {name: float}, "run_dir": str, "results": the run's results.json}``; metrics
        are in the units of docs/design.md §4 (errors in percent, cross-entropies in nats per example).
    Raises:
        ConfigError, DataError, FileNotFoundError, NonFiniteError: the user errors the CLI reports
        in one line (the run folder then holds the same ``failed`` record).
    """
    outer_hydra = HydraConfig.instance().cfg
    cfg = compose_config(task, overrides or [], run_dir)
    module, _, function = TASKS[task][1].partition(":")
    fn = getattr(importlib.import_module(module), function)
    out = Path(cfg.paths.output_dir)
    try:
        metrics = fn(cfg)
    finally:  # the caller's HydraConfig (a @hydra.main app calling mmvi.run) as it was
        HydraConfig.instance().cfg = outer_hydra
    results = read_results(out) if (out / RESULTS_FILE).is_file() else {}
    return {"metrics": dict(metrics or {}), "run_dir": str(out), "results": results}


@dataclass
class LoadedRun:
    """A finished run read back: the trained model, its data module (set up) and its results."""

    model: Any
    datamodule: MultimodalDataModule
    results: dict
    config: dict = field(default_factory=dict)
    checkpoint: str | None = None


def load(run_dir: str | Path) -> LoadedRun:
    """The trained model, data module and results of a run folder written by :func:`run` or a CLI.

    Training runs load ``checkpoints/last.ckpt``; evaluation runs the checkpoint they evaluated;
    deep-pipeline runs the whole model saved at the end of the pipeline (``model.pt``). The data
    module is built from the run's recorded config and given the data state its checkpoint holds
    (e.g. the standardisation statistics of array files). The model is in evaluation mode with
    gradients off.

    Raises:
        FileNotFoundError: the folder holds no results.json or no model.
    """
    import torch

    from mmvi.data.base import load_data_state
    from mmvi.lit.module import MultimodalLitModule

    folder = Path(run_dir)
    if not (folder / RESULTS_FILE).is_file():
        raise FileNotFoundError(f"{folder}: no {RESULTS_FILE}; is this a run folder?")
    results = read_results(folder)
    config = results.get("config") or {}
    task = config.get("task_name", "train")
    ckpt: str | None = None
    if task == "deep":
        weights = folder / MODEL_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found: the deep pipeline has not finished in {folder}")
        model = instantiate(config["model"], _convert_="all")
        model.load_state_dict(torch.load(weights, map_location="cpu"))
        data_cfg = config["data"]
    else:
        ckpt = results.get("checkpoint") if task == "eval" else str(last_checkpoint(folder))
        if not ckpt or not Path(ckpt).is_file():
            raise FileNotFoundError(f"{ckpt}: no checkpoint to load for {folder}")
        model = MultimodalLitModule.load_from_checkpoint(ckpt, map_location="cpu").model
        data_cfg = config.get("data") or results.get("data_config")
        if not data_cfg:
            data_cfg = training_config(Path(ckpt))["data"]
    model.eval().requires_grad_(False)  # for inference: representations carry no graph
    dm: MultimodalDataModule = instantiate(data_cfg, _convert_="all")
    if ckpt is not None:
        load_data_state(dm, ckpt)
    dm.setup()
    return LoadedRun(model=model, datamodule=dm, results=results, config=config, checkpoint=ckpt)
