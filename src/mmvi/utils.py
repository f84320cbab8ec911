"""Small helpers: atomic file writes and the run's ``results.json``."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
STATUSES = ("running", "completed", "failed")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success rename it onto ``path``.

    A crash before the rename leaves ``path`` untouched (no half-written file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """JSON with non-finite floats written as null (never as a number)."""
    return write_text_atomic(path, json.dumps(_json_safe(obj), indent=2, sort_keys=True) + "\n")


def write_results(folder: str | Path, status: str, **fields: Any) -> Path:
    """Write ``results.json`` atomically with a ``status`` of running/completed/failed."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    return write_json_atomic(Path(folder) / RESULTS_FILE, {"status": status, **fields})


def set_aside(path: str | Path, stamp: float | None = None) -> Path:
    """Rename ``path`` (a file or folder) to ``<stem>.<YYYYmmdd-HHMMSS><suffix>`` beside it; return the new path."""
    path = Path(path)
    label = time.strftime("%Y%m%d-%H%M%S", time.localtime(stamp or time.time()))
    target = path.with_name(f"{path.stem}.{label}{path.suffix}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.stem}.{label}-{n}{path.suffix}")
        n += 1
    path.rename(target)
    return target


def read_results(path: str | Path) -> dict:
    """Read a ``results.json`` (or the one inside a run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    return json.loads(path.read_text())


def is_missing(name: str, missing: Mapping[str, str]) -> str | None:
    """The reason measure ``name`` is missing, if a pattern of ``missing`` names it (else None)."""
    from fnmatch import fnmatchcase

    for pattern, reason in missing.items():
        if any(fnmatchcase(name, p) for p in pattern.split()):
            return reason
    return None


def finite_metrics(metrics: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """Split metrics into the finite ones and the names of non-finite ones."""
    good = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
    return good, [k for k in metrics if k not in good]


# errors of a measure's computation (not of the user's input): the measure is recorded as missing
COMPUTE_ERRORS = (ArithmeticError, ValueError, RuntimeError, IndexError)


class Measures(dict):
    """Metric name → value, and ``missing``: name pattern → why those measures are missing.

    :meth:`attempt` runs one family of measures; an error of the computation marks the family
    missing with its reason instead of losing the others. A pattern is one or more shell-style
    patterns separated by spaces (``"classify/*"``, ``"cond_nll/* nll*"``); a metric name is one.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.missing: dict[str, str] = {}

    def attempt(self, family: str, compute: Callable[[], Mapping[str, float]]) -> None:
        try:
            self.update(compute())
        except COMPUTE_ERRORS as exc:
            self.missing[family] = f"{type(exc).__name__}: {exc}"


class RunRecord:
    """The ``results.json`` of one run, as a context manager.

    On entry it writes status ``running`` (a completed record already there is first renamed aside
    with its timestamp, :func:`set_aside`); :meth:`complete` writes ``completed`` with the finite
    metrics and, under ``missing_metrics``, each measure that could not be computed (a non-finite
    value, or a family of :class:`Measures` whose computation failed) with its reason; an exception
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
        path = self.folder / RESULTS_FILE
        if self.write and path.is_file():
            try:
                completed = read_results(path).get("status") == "completed"
            except (OSError, ValueError):
                completed = False
            if completed:  # a completed result is never replaced: it is kept beside the new attempt
                kept = set_aside(path)
                print(f"kept the earlier completed record of {self.folder} as {kept.name}", file=sys.stderr)
        self.update("running")
        return self

    def complete(self, metrics: dict[str, float], **fields: Any) -> dict[str, float]:
        """Write ``completed`` with the finite metrics; return them.

        Non-finite values are never recorded as numbers: they and the families ``metrics.missing``
        names go to ``missing_metrics`` with their reason, one line each on stderr.
        """
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
            reason = f"{exc_type.__name__}: {exc}"
            if issubclass(exc_type, KeyboardInterrupt | SystemExit):
                reason = (
                    "interrupted (e.g. Ctrl-C); rerun the same command to resume from the last checkpoint"
                )
            self.update("failed", reason=reason, duration_s=time.time() - self.started)
        return False
