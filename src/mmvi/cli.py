"""How a command ends: Hydra's command-line errors and user errors as one ``error:`` line, exit 2.

In a multirun run by Hydra's local launcher a refused job ends with its line and the sweep goes
on (:data:`REFUSED_JOBS`, reported by :class:`mmvi.hydra_callbacks.SweepRecords`); a job of
another launcher (each in its own process: SLURM) raises, so its launcher records it as failed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from mmvi.context import in_local_sweep, in_multirun
from mmvi.errors import USER_ERRORS, storage_error

#: (job folder, one-line message) of each job of this process's multirun that a user error ended
REFUSED_JOBS: list[tuple[str, str]] = []
#: the exit status of a process ended by SIGTERM (128 + 15), as a shell reports it
SIGTERM_STATUS = 143


def command_line(hydra_main: Callable[[], Any]) -> None:
    """Run a Hydra entry point so that an error of the command line itself (an unknown key, an
    option of a config group that does not exist, an override that does not parse, a flag Hydra
    refuses) is one line, ``error: ...``, with exit status 2, like the configuration errors
    found later. With ``HYDRA_FULL_ERROR=1`` in the environment Hydra's own report is kept.
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
        fail(text)
    except ValueError as exc:  # Hydra's own checks of its flags (e.g. --resolve without --cfg)
        if "--" not in str(exc):
            raise
        fail(" ".join(str(exc).split()))
    except OSError as exc:  # Hydra making the run folder on a read-only or full disk
        if not storage_error(exc):
            raise
        fail(f"cannot write {exc.filename}: {exc.strerror}; choose a writable folder (hydra.run.dir=...)")


def fail(message: str) -> None:
    """End the command with ``error: <message>`` and exit status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def exit_on_user_error(exc: Exception, folder: str | None = None) -> None:
    """A config or data error ends a single run with its one-line message (exit status 2); see
    the module docstring for a job of a multirun."""
    if in_multirun() and not in_local_sweep():
        raise exc
    if in_multirun():
        REFUSED_JOBS.append((str(folder), str(exc)))
        where = "" if str(exc).startswith(str(folder)) else f"{folder}: "
        print(f"error: {where}{exc}", file=sys.stderr, flush=True)
        return
    fail(str(exc))


def run_task(task: Callable[[DictConfig], dict[str, float]], cfg: DictConfig) -> float | None:
    """Run an entry point's task; user errors end it with one line; return the optimised metric
    (None for a job of a multirun that a user error ended: a hyper-parameter search records a
    failed trial and goes on; Optuna's sweeper refuses a NaN)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        metrics = task(cfg)
    except USER_ERRORS as exc:
        exit_on_user_error(exc, cfg.get("paths", {}).get("output_dir"))
        return None
    except OSError as exc:
        if not storage_error(exc):
            raise
        folder = cfg.get("paths", {}).get("output_dir")
        print(
            f"error: cannot write {exc.filename or folder}: {exc.strerror}; free space or make the folder "
            f"writable, then rerun the same command to resume from the last checkpoint (or use another folder)",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2) from None
    except SIGTERMException:
        folder = cfg.get("paths", {}).get("output_dir")
        print(
            f"error: terminated (SIGTERM); rerun the same command (same folder: {folder}) to resume "
            "from the last checkpoint",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(SIGTERM_STATUS) from None
    return metrics.get(cfg.get("optimized_metric")) if metrics else None
