"""Small helpers: atomic file writes, JSON, nested dicts, measures with their missing families."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success rename it onto ``path``.

    A crash before the rename leaves ``path`` untouched (no half-written file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # the permissions of a file made the ordinary way (mkstemp's are 0600)
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


def deep_merge(base: Mapping, override: Mapping | None) -> dict:
    """``base`` with ``override`` merged in, recursively for nested dicts."""
    out = dict(base)
    for k, v in (override or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out
