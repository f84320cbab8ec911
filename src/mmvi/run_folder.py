"""The run folder on disk: its file names, the record (``results.json``), checkpoints, the folder checks.

A run folder (``paths.output_dir``) holds one configuration:

* ``results.json`` (:data:`RESULTS_FILE`): status ``running`` → ``completed`` | ``failed``, written
  atomically by :class:`RunRecord`; a completed record is never replaced (it is renamed aside);
* ``config_resolved.json`` (:data:`CONFIG_FILE`): the resolved config and the run's fingerprint;
* ``checkpoints/last.ckpt`` (:func:`last_checkpoint`), ``checkpoints/mid_epoch.ckpt`` (the state at a
  SLURM pre-timeout signal, not resumed from), ``csv/``, the evaluation's figures;
* for the deep pipeline, ``model.pt`` and ``stages/<stage>/`` (``done.json``, ``spec.json``, ``model.pt``).

:func:`check_run_folder` refuses to resume or relabel a folder that holds another configuration's
run; :func:`claim` makes one process the folder's only writer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mmvi.context import start_over_hint
from mmvi.errors import ConfigError, storage_error
from mmvi.fingerprint import describe, differences, fingerprint, flatten
from mmvi.utils import set_aside, write_json_atomic

RESULTS_FILE = "results.json"
CONFIG_FILE = "config_resolved.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best.ckpt"  # evaluation.checkpoint=best: the epoch of the lowest monitored measure
#: the state at a SLURM pre-timeout signal (Lightning's ``hpc_ckpt_<n>.ckpt``), kept for inspection;
#: never resumed from (a resume starts at the last completed epoch: mmvi.lit.checkpoint_io)
MID_EPOCH_CHECKPOINT = "mid_epoch.ckpt"
CSV_DIR = "csv"
MODEL_FILE = "model.pt"  # the deep pipeline's whole model after its last stage
STAGES_DIR = "stages"
DONE_FILE = "done.json"  # a finished stage: its spec, final measures, time taken
SPEC_FILE = "spec.json"  # the spec a stage started with (an interrupted stage resumes only as it)
WEIGHTS_FILE = "model.pt"  # a stage's trained weights
RECORDS_FILE = "records.parquet"  # the per-example values behind the measures (mmvi.evaluation.records)
LOCK_FILE = ".mmvi.lock"  # held while a process works in the folder
#: the key under which every checkpoint records its run's fingerprint
CHECKPOINT_KEY = "mmvi_fingerprint"
STATUSES = ("running", "completed", "failed")


def last_checkpoint(folder: str | Path) -> Path:
    """``<folder>/checkpoints/last.ckpt`` (whether or not it exists)."""
    return Path(folder) / CHECKPOINT_DIR / LAST_CHECKPOINT


def run_folder_of(ckpt: str | Path) -> Path:
    """The run folder a checkpoint ``<run>/checkpoints/<name>.ckpt`` belongs to."""
    return Path(ckpt).resolve().parent.parent


# ----------------------------------------------------------------------------- the record
def write_results(folder: str | Path, status: str, **fields: Any) -> Path:
    """Write ``results.json`` atomically with a ``status`` of running/completed/failed."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    return write_json_atomic(Path(folder) / RESULTS_FILE, {"status": status, **fields})


def read_results(path: str | Path) -> dict:
    """Read a ``results.json`` (or the one inside a run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    return json.loads(path.read_text())


def holds_completed_run(folder: str | Path) -> bool:
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


class RunRecord:
    """The ``results.json`` of one run, as a context manager.

    On entry it writes status ``running`` (a completed record already there is first renamed aside
    with its timestamp); :meth:`complete` writes ``completed`` with the finite metrics and, under
    ``missing_metrics``, each measure that could not be computed with its reason; an exception
    leaving the block writes ``failed`` with its reason (and propagates). ``write=False`` (e.g. a
    non-zero DDP rank) writes nothing.
    """

    def __init__(self, folder: str | Path, meta: dict[str, Any], write: bool = True, **fields: Any) -> None:
        self.folder = Path(folder)
        self.fields = {**meta, **fields}
        self.write = write
        self.started = time.time()

    def update(self, status: str = "running", **fields: Any) -> None:
        """Rewrite the record with more fields (e.g. the stages finished so far)."""
        self.fields.update(fields)
        if self.write:
            write_results(self.folder, status, **self.fields, started=self.started)

    def __enter__(self) -> RunRecord:
        if self.write and holds_completed_run(self.folder):
            kept = set_aside(self.folder / RESULTS_FILE)  # a completed result is never replaced
            print(f"kept the earlier completed record of {self.folder} as {kept.name}", file=sys.stderr)
        self.update("running")
        return self

    def complete(self, metrics: dict[str, float], **fields: Any) -> dict[str, float]:
        """Write ``completed`` with the finite metrics; return them.

        Non-finite values are never recorded as numbers: they and the families ``metrics.missing``
        names go to ``missing_metrics`` with their reason, one line each on stderr.
        """
        from mmvi.utils import finite_metrics

        good, bad = finite_metrics(metrics)
        missing = dict(getattr(metrics, "missing", {}))
        missing.update({k: f"non-finite value ({metrics[k]})" for k in bad})
        for name, reason in missing.items():
            print(f"warning: {name} could not be computed: {reason}", file=sys.stderr, flush=True)
        extra = {"missing_metrics": missing} if missing else {}
        self.update("completed", metrics=good, duration_s=time.time() - self.started, **extra, **fields)
        return good

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None:
            try:
                self.update("failed", reason=failure_reason(exc), duration_s=time.time() - self.started)
            except OSError as err:  # a full or read-only disk: the record stays as last written
                print(
                    f"warning: could not record the failure in {self.folder / RESULTS_FILE}: {err}",
                    file=sys.stderr,
                )
        return False


def failure_reason(exc: BaseException) -> str:
    """What a failed record says of the exception that ended its run."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (e.g. Ctrl-C); rerun the same command to resume from the last checkpoint"
    if isinstance(exc, SystemExit):
        return "terminated (SIGTERM); rerun the same command to resume from the last checkpoint"
    if storage_error(exc):
        return f"cannot write {exc.filename or 'the run folder'}: {exc.strerror}; rerun to resume from the last checkpoint"
    return f"{type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------------- one writer
@contextlib.contextmanager
def claim(folder: str | Path) -> Iterator[None]:
    """Hold ``folder`` for this process (an exclusive lock on its :data:`LOCK_FILE`).

    Two processes started together on one folder: exactly one gets it, the other raises.

    Raises:
        ConfigError: another process holds the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = path.read_text().strip() if path.is_file() else "another process"
            raise ConfigError(
                f"{folder} is in use by another run ({holder}); wait for it to end or use another folder"
            ) from None
        try:  # the file may have been removed by its last holder between open and lock: retry
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


# ----------------------------------------------------------------------------- checkpoints
def load_checkpoint(path: str | Path) -> dict:
    """The Lightning checkpoint at ``path`` (on the CPU).

    Raises:
        ConfigError: the file is not a training checkpoint (one line).
    """
    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any file torch cannot read is not a checkpoint
        raise ConfigError(f"ckpt_path={path} is not a checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"ckpt_path={path} is not a training checkpoint (no state_dict)")
    return ckpt


def training_config(ckpt_path: str | Path) -> dict:
    """The resolved config saved by the run that wrote ``ckpt_path`` (``<run>/checkpoints/x.ckpt``).

    Raises:
        ConfigError: a checkpoint of one stage of a deep-pipeline run (not a model of the data).
        FileNotFoundError: no ``config_resolved.json`` beside the checkpoint's run folder.
    """
    folder = run_folder_of(ckpt_path)
    if folder.parent.name == STAGES_DIR:
        raise ConfigError(
            f"{ckpt_path} is a checkpoint of stage {folder.name!r} of the deep-pipeline run "
            f"{folder.parent.parent}, a layer of the deep model, not a model of the data; evaluate the "
            "whole model by rerunning python -m mmvi.deep.pipeline in that folder (hydra.run.dir=...), "
            "or read it with mmvi.load"
        )
    saved = folder / CONFIG_FILE
    if not saved.is_file():
        raise FileNotFoundError(
            f"{saved} not found: cannot tell which data the checkpoint was trained on; "
            "name the data with +data=<option> (e.g. +data=mnist data.data_dir=<folder>)"
        )
    return json.loads(saved.read_text())["config"]


def checkpoint_fingerprint(path: str | Path) -> tuple[dict | None, bool]:
    """(fingerprint, complete?) a checkpoint records: ours, else the settings its hyper-parameters
    hold (model, objective, optimiser, seed: a partial fingerprint); (None, False) if unreadable."""
    try:
        ckpt = load_checkpoint(path)
    except ConfigError:
        return None, False
    if CHECKPOINT_KEY in ckpt:
        return ckpt[CHECKPOINT_KEY], True
    hp = ckpt.get("hyper_parameters") or {}
    keys = {k: hp[k] for k in ("model", "objective", "optim", "seed", "nonfinite") if k in hp}
    return (fingerprint(keys) if keys else None), False


def resume_checkpoint(folder: str | Path, ckpt: Any) -> str | None:
    """The checkpoint a run in ``folder`` resumes from, for the setting ``ckpt_path=ckpt``.

    ``last`` (or no ``ckpt_path`` in a reused folder) resumes from ``checkpoints/last.ckpt`` when it
    exists; ``none`` starts fresh; a file must be a checkpoint.

    Raises:
        ConfigError: a value of the wrong type or a file that is not a checkpoint.
        FileNotFoundError: a named checkpoint file that does not exist.
    """
    if ckpt is not None and not isinstance(ckpt, str):
        raise ConfigError(f"ckpt_path={ckpt!r} has the wrong type; allowed: last, none or a checkpoint file")
    last = last_checkpoint(folder)
    if ckpt == "none":
        return None
    if ckpt in (None, "", "last"):
        if last.is_file():
            return str(last)
        if ckpt == "last":
            print(
                f"warning: ckpt_path=last but {last} does not exist; starting from scratch", file=sys.stderr
            )
        return None
    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt}: no such checkpoint file")
    load_checkpoint(ckpt)  # a checkpoint, or one line before any work
    return str(ckpt)


# ----------------------------------------------------------------------------- identity
def recorded_fingerprints(
    folder: Path, checkpoint: str | Path | None = None, with_checkpoint: bool = True
) -> list[tuple[str, dict, bool]]:
    """``(source, fingerprint, complete?)`` of the work a run folder holds: a completed or running
    ``results.json`` (a running one may be a run in progress, or one that crashed) and the
    checkpoint a resume would start from (``checkpoint``, default ``checkpoints/last.ckpt``). A
    failed record holds no work (the failure is replaced by the next attempt)."""
    out = []
    res_path = Path(folder) / RESULTS_FILE
    try:
        res = read_results(res_path) if res_path.is_file() else {}
    except (OSError, ValueError):
        res = {}
    if res.get("status") in ("completed", "running"):
        if "fingerprint" in res:
            out.append((str(res_path), res["fingerprint"], True))
        elif res.get("config"):
            out.append((str(res_path), fingerprint(res["config"]), False))
    ckpt = Path(checkpoint) if checkpoint else last_checkpoint(folder)
    if with_checkpoint and ckpt.is_file():
        fp, complete = checkpoint_fingerprint(ckpt)
        if fp is not None:
            out.append((str(ckpt), fp, complete))
    return out


def partial_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """:func:`~mmvi.fingerprint.differences` restricted to the keys ``old`` records (an older,
    partial fingerprint)."""
    keys = set(flatten(old.get("settings", old)))
    return [d for d in differences(old, new) if d[0] in keys]


def check_run_folder(
    folder: Path,
    new: Mapping[str, Any],
    checkpoint: str | Path | None = None,
    ways: str | None = None,
    with_checkpoint: bool = True,
) -> None:
    """Refuse (one line) to resume or relabel a folder that holds another configuration's run.

    ``new`` is the requested fingerprint; a recorded one that differs in any result-defining
    setting (a raised ``trainer.max_epochs`` continues the run) or in the data raises. A
    ``checkpoint`` given explicitly (``ckpt_path=<file>``) is compared as the run it resumes;
    ``ways`` (default: a new folder or ``ckpt_path=none``) ends the message. ``with_checkpoint=False``
    compares the record only (an evaluation folder holds no checkpoint of its own).

    Raises:
        ConfigError: naming the differing keys, their old and new values and the ways forward.
    """
    own = last_checkpoint(folder)
    for source, old, complete in recorded_fingerprints(folder, checkpoint, with_checkpoint):
        diffs = differences(old, new) if complete else partial_differences(old, new)
        if not diffs:
            continue
        if checkpoint is not None and Path(source) == Path(checkpoint) and Path(checkpoint) != own:
            raise ConfigError(
                f"ckpt_path={checkpoint} is a checkpoint of another configuration: {describe(diffs)}; "
                "resume from a checkpoint of this configuration, or leave ckpt_path unset to start fresh"
            )
        raise ConfigError(
            f"{folder} holds a run of another configuration ({Path(source).name}): {describe(diffs)}; "
            f"{ways or start_over_hint()}"
        )
