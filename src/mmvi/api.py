"""The run machinery the entry points share, and a Python API for notebooks.

    import mmvi
    out = mmvi.run(["data=uci_mfeat", "objective=minvi_mp", "trainer.max_epochs=5"], run_dir="runs/mp")
    out["metrics"]["classify/err_multimodal"], out["run_dir"]
    run = mmvi.load(out["run_dir"])          # run.model, run.datamodule, run.results

:func:`run` composes the same Hydra config as ``python -m mmvi.train`` (``task="eval"``:
``mmvi.eval``, ``task="deep"``: ``mmvi.deep.pipeline``) with Hydra's compose API and calls the same
task function, so validation, the run folder, ``results.json`` and the loggers are those of the
CLI; a user error raises its exception (e.g. :class:`~mmvi.config_check.ConfigError`) instead of
ending the process.

Shared by the entry points: :func:`run_metadata`, :func:`preflight` (one line and no lost work for
bad input), :func:`run_task` (user errors end a CLI run with one line and exit status 2),
:func:`print_summary`, :func:`finish_wandb`, :func:`log_to_loggers`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from mmvi.cluster import slurm_job, slurm_rank
from mmvi.config_check import ConfigError
from mmvi.data.base import DataError, MultimodalDataModule
from mmvi.lit.module import NonFiniteError
from mmvi.utils import RESULTS_FILE, read_results, set_aside, write_results

log = logging.getLogger(__name__)

# errors of the user's config, files or training run: reported as one message, no traceback
USER_ERRORS = (ConfigError, DataError, FileNotFoundError, NonFiniteError)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# task → (config name, "module:function")
TASKS = {
    "train": ("train", "mmvi.train:train"),
    "eval": ("eval", "mmvi.eval:evaluate_checkpoint"),
    "deep": ("deep", "mmvi.deep.pipeline:run"),
}


# ----------------------------------------------------------------------------- run folder
def is_global_zero() -> bool:
    """True in the launching process (Lightning's DDP children carry LOCAL_RANK/NODE_RANK > 0; the
    tasks of ``srun --ntasks=N`` their SLURM rank, :func:`mmvi.cluster.slurm_rank`)."""
    zero = int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0
    return zero and slurm_rank() == 0


def code_version() -> dict[str, Any]:
    """The code a result was computed with: mmvi's version and, when it runs from a git checkout,
    the commit and whether the working tree differed from it (``dirty``); ``None`` where git or
    the checkout is unavailable. Recorded in every ``results.json``; not part of the fingerprint,
    so a run resumes across commits."""
    import subprocess

    import mmvi

    info: dict[str, Any] = {"version": mmvi.__version__, "commit": None, "dirty": None}
    src = Path(mmvi.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip()
            status = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=src,
                capture_output=True,
                text=True,
                timeout=10,
            )
            info["dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def run_metadata(cfg: DictConfig) -> dict[str, Any]:
    """Resolved config (without the hydra node), Hydra choices and overrides of this job, and the
    code version (:func:`code_version`)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    meta: dict[str, Any] = {"config": resolved, "run_dir": str(cfg.paths.output_dir), "code": code_version()}
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        meta["choices"] = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/")}
        meta["overrides"] = list(hc.overrides.task)
        meta["job_num"] = hc.job.get("num")
    if (job := slurm_job()) is not None:  # the SLURM job that ran it (mmvi.cluster)
        meta["slurm"] = job
    return meta


def holds_completed_run(folder: Path) -> bool:
    """True when ``folder/results.json`` records a completed run."""
    path = Path(folder) / RESULTS_FILE
    try:
        return path.is_file() and read_results(path).get("status") == "completed"
    except (OSError, ValueError):
        return False


def start_over(folder: Path, names: tuple[str, ...]) -> None:
    """``ckpt_path=none`` in a used folder: the earlier run's files ``names`` (checkpoints, curves,
    stages, a completed record) are renamed aside with their timestamp, never overwritten; a
    record that is not completed is simply replaced."""
    for name in names:
        path = Path(folder) / name
        if not path.exists() or (name == RESULTS_FILE and not holds_completed_run(folder)):
            continue
        kept = set_aside(path)
        print(f"ckpt_path=none: kept the earlier {name} of {folder} as {kept.name}", file=sys.stderr)


def in_multirun() -> bool:
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def in_local_sweep() -> bool:
    """True in a job of a multirun that Hydra's basic launcher runs in this process."""
    return in_multirun() and str(HydraConfig.get().launcher.get("_target_", "")).endswith(".BasicLauncher")


@contextlib.contextmanager
def preflight(folder: Path, meta: Mapping[str, Any], write: bool = True) -> Iterator[None]:
    """Checks before any work; a user error propagates (the entry point prints its one line).

    Nothing is written for a single run. A job of a multirun leaves a ``failed`` record, so the
    sweep lists it, but never over a completed run (that folder is left exactly as it was).
    """
    try:
        yield
    except USER_ERRORS as exc:
        if write and in_multirun() and not holds_completed_run(folder):
            write_results(folder, "failed", **meta, reason=f"{type(exc).__name__}: {exc}")
        raise


# ----------------------------------------------------------------------------- objects
def read_checkpoint_file(path: str | Path) -> dict:
    """The Lightning checkpoint at ``path`` (on the CPU); a one-line :class:`ConfigError` when it
    is not one."""
    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any file torch cannot read is not a checkpoint
        raise ConfigError(f"ckpt_path={path} is not a checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"ckpt_path={path} is not a training checkpoint (no state_dict)")
    return ckpt


def check_model_matches_data(
    lit: pl.LightningModule, dm: MultimodalDataModule, trained: bool = False
) -> None:
    """The model's modality sizes must be the data's (a :class:`ConfigError` names both; for a
    ``trained`` model, from a checkpoint, the data must change, not the model)."""
    data_sizes = dm.modality_sizes
    if lit.model.sizes != data_sizes:
        fix = (
            "evaluate on data with the trained model's modalities and sizes"
            if trained
            else "set model.modalities to the data's (default: ${data.modalities})"
        )
        raise ConfigError(
            f"model.modalities {lit.model.sizes} do not match the data's modalities {data_sizes}; {fix}"
        )


def instantiate_dict(nodes: DictConfig | None) -> list:
    """Instantiate every ``_target_`` node of a callbacks/loggers dict; a node without one is an error."""
    out = []
    for name, node in (nodes or {}).items():
        if node is None:
            continue
        if "_target_" not in node:
            raise ConfigError(f"config node {name!r} has no _target_; remove it or give it one")
        out.append(instantiate(node, _convert_="all"))
    return out


def complete_modalities(cfg: DictConfig, dm: MultimodalDataModule) -> None:
    """A model without ``modalities`` (data configs that read sizes from files) takes the data's."""
    if cfg.model.get("modalities") is None:
        with open_dict(cfg):
            cfg.model.modalities = dm.modality_specs()


def log_to_loggers(loggers: list, metrics: dict, artefacts: dict, step: int) -> str | None:
    """Send final metrics (and figures, to wandb) to every logger; return the wandb run path."""
    wandb_dir = None
    for lg in loggers:
        lg.log_metrics(metrics, step=step)
        if isinstance(lg, pl.loggers.WandbLogger):
            for key, path in artefacts.items():
                if str(path).endswith(".png"):
                    lg.log_image(key=f"figures/{key}", images=[str(path)], step=step)
            wandb_dir = str(lg.experiment.dir)
        lg.save()
    return wandb_dir


def finish_wandb() -> None:
    """Close the wandb run so the next job of a multirun gets its own."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


@contextlib.contextmanager
def wandb_closed() -> Iterator[None]:
    """Close the wandb run when the block ends, however it ends (a failed run's wandb run must not
    be reused by the next run in the same process)."""
    try:
        yield
    finally:
        finish_wandb()


def print_summary(out_dir: Path, metrics: dict, wandb_dir: str | None) -> None:
    """The results block every entry point ends with: headline measures, run folder, results, wandb."""
    keys = [
        k
        for k in metrics
        if k.startswith(("classify/err_", "classify/map_", "cond_ce/", "cond_nll/", "nll", "retrieval/map_"))
    ]
    width = max((len(k) for k in keys), default=10)
    lines = ["", "Results"] + [f"  {k:<{width}}  {metrics[k]:.4f}" for k in sorted(keys)]
    lines.append(f"  run folder: {out_dir}")
    lines.append(f"  results:    {out_dir / RESULTS_FILE}")
    if wandb_dir:
        lines.append(f"  wandb run:  {Path(wandb_dir).parent} (offline: `wandb sync` it to upload)")
    print("\n".join(lines), flush=True)


# ----------------------------------------------------------------------------- CLI tasks
def command_line(hydra_main: Callable[[], Any]) -> None:
    """Run a Hydra entry point so that an error of the command line itself (an unknown key, an
    option of a config group that does not exist, an override that does not parse) is one line,
    ``error: ...``, with exit status 2, like the configuration errors found later.

    With ``HYDRA_FULL_ERROR=1`` in the environment Hydra's own report is kept.
    """
    from hydra.errors import CompactHydraException, InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        hydra_main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing its multi-line report
    try:
        hydra_main()
    except CompactHydraException as exc:
        if isinstance(exc, InstantiationException):
            raise
        lines = str(exc).split("Config search path")[0].splitlines()
        options = [x.strip() for x in lines if x.startswith(("\t", "    "))]  # "Available options"
        text = " ".join(x.strip() for x in lines if x.strip() and x.strip() not in options)
        text += f" {', '.join(options)}" if options else ""
        if isinstance(exc.__cause__, OmegaConfBaseException):
            text += f" ({str(exc.__cause__).splitlines()[0].strip()})"
        print(f"error: {text}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


#: (job folder, one-line message) of each job of this process's multirun that a user error ended;
#: :class:`mmvi.hydra_callbacks.SweepRecords` reports them when the sweep ends.
REFUSED_JOBS: list[tuple[str, str]] = []


def exit_on_user_error(exc: Exception, folder: str | None = None) -> None:
    """A config or data error ends a single run with its one-line message (``error: ...``, exit
    status 2), no traceback.

    In a multirun run by Hydra's local launcher the job ends with the same line (prefixed by its
    folder) and the sweep goes on; the job is listed in :data:`REFUSED_JOBS`, and the sweep exits
    with status 2 at its end. Jobs of other launchers (each in its own process: SLURM) raise, so
    their launcher records the job as failed.
    """
    if in_multirun() and not in_local_sweep():
        raise exc
    if in_multirun():
        REFUSED_JOBS.append((str(folder), str(exc)))
        where = "" if str(exc).startswith(str(folder)) else f"{folder}: "
        print(f"error: {where}{exc}", file=sys.stderr, flush=True)
        return
    print(f"error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def run_task(task: Callable[[DictConfig], dict[str, float]], cfg: DictConfig) -> float | None:
    """Run an entry point's task; user errors end it with one line; return the optimised metric
    (NaN for a job of a multirun that a user error ended, so a hyper-parameter search records a
    failed trial and goes on)."""
    try:
        metrics = task(cfg)
    except USER_ERRORS as exc:
        exit_on_user_error(exc, cfg.get("paths", {}).get("output_dir"))
        return float("nan") if cfg.get("optimized_metric") else None
    finally:
        finish_wandb()  # a failed run's wandb run is closed before the next job of a multirun
    return metrics.get(cfg.get("optimized_metric")) if metrics else None


# ----------------------------------------------------------------------------- Python API
def compose_config(task: str, overrides: list[str], run_dir: str | Path | None = None) -> DictConfig:
    """The job config of ``task`` as its CLI would compose it, with HydraConfig set.

    ``run_dir`` is the run folder (``hydra.run.dir=...`` in ``overrides`` does the same); the
    default is the CLI's timestamped folder under ``paths.log_dir``.
    """
    from hydra import compose, initialize_config_dir

    if task not in TASKS:
        raise ConfigError(f"task={task!r}; allowed: {', '.join(TASKS)}")
    name = TASKS[task][0]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=name):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
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
        are in the units of DESIGN.md §4 (errors in percent, cross-entropies in nats per example).
    Raises:
        ConfigError, DataError, FileNotFoundError, NonFiniteError: the user errors the CLI reports
        in one line (the run folder then holds the same ``failed`` record).
    """
    cfg = compose_config(task, overrides or [], run_dir)
    module, _, function = TASKS[task][1].partition(":")
    fn = getattr(importlib.import_module(module), function)
    out = Path(cfg.paths.output_dir)
    try:
        metrics = fn(cfg)
    finally:
        finish_wandb()
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
        weights = folder / "model.pt"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found: the deep pipeline has not finished in {folder}")
        model = instantiate(config["model"], _convert_="all")
        model.load_state_dict(torch.load(weights, map_location="cpu"))
        data_cfg = config["data"]
    else:
        ckpt = results.get("checkpoint") if task == "eval" else str(folder / "checkpoints" / "last.ckpt")
        if not ckpt or not Path(ckpt).is_file():
            raise FileNotFoundError(f"{ckpt}: no checkpoint to load for {folder}")
        model = MultimodalLitModule.load_from_checkpoint(ckpt, map_location="cpu").model
        data_cfg = config.get("data") or results.get("data_config")
        if not data_cfg:
            from mmvi.eval import training_config

            data_cfg = training_config(Path(ckpt))["data"]
    model.eval().requires_grad_(False)  # for inference: representations carry no graph
    dm: MultimodalDataModule = instantiate(data_cfg, _convert_="all")
    if ckpt is not None:
        load_data_state(dm, ckpt)
    dm.setup()
    return LoadedRun(model=model, datamodule=dm, results=results, config=config, checkpoint=ckpt)
