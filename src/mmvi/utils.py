"""Small helpers: atomic file writes and the run's ``results.json``."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
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


def read_results(path: str | Path) -> dict:
    """Read a ``results.json`` (or the one inside a run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    return json.loads(path.read_text())


def finite_metrics(metrics: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """Split metrics into the finite ones and the names of non-finite ones."""
    good = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
    return good, [k for k in metrics if k not in good]
