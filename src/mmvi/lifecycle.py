"""The one run lifecycle of every entry point (``mmvi.train``, ``mmvi.eval``, ``mmvi.deep.pipeline``).

A :class:`Task` holds an entry point's own steps; :func:`run` sequences them with the shared ones:

1. metadata (resolved config, Hydra choices and overrides, code version, SLURM job);
2. pre-flight, before any data are read or anything is written: every setting's declared
   constraints (:func:`mmvi.config_check.validate_config`), the task's own checks, the folder
   claimed by this process (:func:`mmvi.run_folder.claim`) and its identity (the settings alone);
3. the data, then the identity again with a digest of the data read, the model and every check
   that needs both (sizes, the evaluation's needs);
4. the folder: ``ckpt_path=none`` renames the earlier run's files aside; the resolved config;
5. the record (``results.json``: running → completed | failed) and the loggers, wandb closed once
   however the run ends; the task's work; the evaluation's finite metrics logged and recorded;
6. the results summary.

A user error raised in 2–3 leaves nothing behind for a single run, and a ``failed`` record for a
job of a multirun (never over a completed run).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from mmvi.cluster import slurm_job
from mmvi.config_check import (
    check_evaluation_arguments,
    check_evaluation_data,
    check_optimized_metric,
    validate_config,
)
from mmvi.context import in_multirun, is_global_zero, job_command_line
from mmvi.errors import USER_ERRORS, ConfigError
from mmvi.fingerprint import data_digest
from mmvi.run_folder import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CSV_DIR,
    MODEL_FILE,
    RESULTS_FILE,
    STAGES_DIR,
    RunRecord,
    check_run_folder,
    claim,
    holds_completed_run,
    start_over,
    write_results,
)
from mmvi.utils import finite_metrics, write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What a task's work produced: the evaluation's metrics and figures, more record fields, and
    the step at which the final metrics are logged."""

    metrics: Mapping[str, float]
    artefacts: dict[str, str] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    step: int = 0


class Task(ABC):
    """One entry point's own steps (subclasses override what they need).

    Attributes set by the lifecycle: ``cfg`` (the job config), ``meta`` (the record's metadata,
    completed by the steps), ``out_dir`` (the run folder), ``zero`` (this is the writing rank).
    """

    #: files of a run folder that ``ckpt_path=none`` renames aside (every kind a run may hold)
    START_OVER_FILES = (CHECKPOINT_DIR, STAGES_DIR, MODEL_FILE, CSV_DIR, RESULTS_FILE, CONFIG_FILE)

    def __init__(self, cfg: DictConfig, meta: dict, out_dir: Path, zero: bool) -> None:
        self.cfg, self.meta, self.out_dir, self.zero = cfg, meta, out_dir, zero
        self.resume: str | None = None  # the checkpoint this run resumes from
        self.with_checkpoint = True  # the folder's own checkpoint is part of its identity
        self.ways: str | None = None  # the ways forward named when the folder holds another run
        self.record_fields: dict[str, Any] = {}

    @property
    def fresh(self) -> bool:
        """``ckpt_path=none``: start over in the folder (the identity checks are skipped)."""
        return self.cfg.get("ckpt_path") == "none"

    def check(self) -> None:  # noqa: B027 - a task without settings of its own checks nothing
        """Checks of the task's own settings before the data are read."""

    @abstractmethod
    def identity(self, data: str | None = None) -> dict:
        """The run's fingerprint (:mod:`mmvi.fingerprint`), with the digest of the data read."""

    @abstractmethod
    def load_data(self) -> Any:
        """The data module, set up."""

    @abstractmethod
    def build(self, dm: Any) -> Any:
        """The model (or what holds it) for the data; every check that needs both. Returns the model."""

    def loggers(self) -> list:
        """The run's loggers (built before anything is written)."""
        return instantiate_dict(self.cfg.get("logger"))

    @abstractmethod
    def execute(self, record: RunRecord, loggers: list) -> Outcome | None:
        """The task's work inside the record; None when it ends without an evaluation."""

    def figures(self) -> tuple[str, ...]:
        from mmvi.evaluation.protocol import EVALUATION_FILES

        return EVALUATION_FILES


def run(task_class: type[Task], cfg: DictConfig) -> dict[str, float]:
    """Run ``task_class`` through the lifecycle (module docstring); return the finite metrics
    (empty on non-zero ranks and for a run that ends without an evaluation).

    Raises:
        ConfigError, DataError, FileNotFoundError: a user error, before any work.
    """
    out_dir = Path(cfg.paths.output_dir)
    zero = is_global_zero()
    meta = run_metadata(cfg)
    task = task_class(cfg, meta, out_dir, zero)
    with contextlib.ExitStack() as stack:
        stack.enter_context(wandb_closed())
        with preflight(out_dir, meta, write=zero):
            validate_config(cfg)
            check_evaluation_arguments(cfg.get("evaluation"))
            if zero:
                stack.enter_context(claim(out_dir))
            task.check()
            if not task.fresh:  # before the data are read: the settings alone
                check_run_folder(out_dir, task.identity(), task.resume, task.ways, task.with_checkpoint)
            pl.seed_everything(int(cfg.seed), workers=True)
            dm = task.load_data()
            fp = task.identity(data_digest(dm.splits))
            if not task.fresh:  # and the data read
                check_run_folder(out_dir, fp, task.resume, task.ways, task.with_checkpoint)
            model = task.build(dm)
            check_evaluation_data(cfg.get("evaluation"), dm, model)
            check_optimized_metric(cfg, dm, model)
            loggers = task.loggers()
        meta["fingerprint"] = fp
        if zero:
            out_dir.mkdir(parents=True, exist_ok=True)
            if task.fresh:
                start_over(out_dir, (*task.START_OVER_FILES, *task.figures()))
            write_json_atomic(out_dir / CONFIG_FILE, meta)
        record = stack.enter_context(RunRecord(out_dir, meta, write=zero, **task.record_fields))
        for lg in loggers:
            lg.log_hyperparams({**meta["config"], "choices": meta.get("choices", {})})
        with job_command_line(str(out_dir)):  # what DDP children are started with
            outcome = task.execute(record, loggers)
        if outcome is None or not zero:
            return {}
        good, _ = finite_metrics(dict(outcome.metrics))
        wandb_dir = log_to_loggers(loggers, good, outcome.artefacts, outcome.step)
        good = record.complete(
            outcome.metrics, artefacts=outcome.artefacts, wandb_dir=wandb_dir, **outcome.fields
        )
    print_summary(out_dir, good, wandb_dir)  # after wandb's own run summary
    return good


# ----------------------------------------------------------------------------- the shared steps
def code_version() -> dict[str, Any]:
    """The code a result was computed with: mmvi's version and, when it runs from a git checkout,
    the commit and whether the working tree differed from it (``dirty``); ``None`` where git or
    the checkout is unavailable. Not part of the fingerprint, so a run resumes across commits."""
    import subprocess

    from mmvi.version import __version__

    info: dict[str, Any] = {"version": __version__, "commit": None, "dirty": None}
    src = Path(__file__).resolve().parent
    git = {"cwd": src, "capture_output": True, "text": True, "timeout": 10}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], **git)
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **git)
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


def complete_modalities(cfg: DictConfig, dm: Any) -> None:
    """A model without ``modalities`` (data configs that read sizes from files) takes the data's."""
    if cfg.model.get("modalities") is None:
        with open_dict(cfg):
            cfg.model.modalities = dm.modality_specs()


def check_model_matches_data(model: Any, dm: Any, trained: bool = False) -> None:
    """The model's modality sizes must be the data's (a :class:`ConfigError` names both; for a
    ``trained`` model, from a checkpoint, the data must change, not the model)."""
    if model.sizes != dm.modality_sizes:
        fix = (
            "evaluate on data with the trained model's modalities and sizes"
            if trained
            else "set model.modalities to the data's (default: ${data.modalities})"
        )
        raise ConfigError(
            f"model.modalities {model.sizes} do not match the data's modalities {dm.modality_sizes}; {fix}"
        )


def log_to_loggers(loggers: list, metrics: dict, artefacts: dict, step: int) -> str | None:
    """Send final metrics (and figures, to wandb) to every logger; return the wandb run folder."""
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
