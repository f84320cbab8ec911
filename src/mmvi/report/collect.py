"""Find runs: every ``results.json`` under sweep folders, split into completed runs and skipped ones.

A run is *completed* only when its ``results.json`` reads as JSON, has ``status: completed`` and
holds at least one finite metric. Everything else (``failed``, ``running`` = crashed or still
running, unreadable, no metrics) is kept as a :class:`Skipped` entry with its reason, so that the
report lists it and never averages it in.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmvi.utils import RESULTS_FILE

# Hydra choices that always define a configuration (the columns of the report's tables)
KEY_CHOICES = ("data", "model", "objective", "experiment")
# overrides that never define a configuration: repeats (seeds, and the data folds the paper
# averages over, PAPER.md §3) and bookkeeping
IGNORED_KEYS = {"seed", "data.fold", "sweep_name", "task_name", "ckpt_path", "tags"}
IGNORED_PREFIXES = ("hydra", "paths.", "logger", "callbacks", "trainer.enable_progress_bar")
PATH_SUFFIXES = ("_dir", "_path", "_file", "dir", "path")
DEFAULT = "default"


@dataclass
class Run:
    """One completed run: its configuration, seed and final metrics."""

    source: str
    choices: dict[str, str]
    overrides: dict[str, str]
    seed: int | None
    metrics: dict[str, float]
    run_dir: str = ""
    job_num: int | None = None
    duration_s: float | None = None


@dataclass
class Skipped:
    """A run left out of the report, with why."""

    source: str
    status: str
    reason: str


@dataclass
class Collection:
    """The runs found in some sources (folders or a wandb project)."""

    sources: list[str]
    runs: list[Run] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def extend(self, other: Collection) -> None:
        self.sources += other.sources
        self.runs += other.runs
        self.skipped += other.skipped


def is_path_like(key: str, value: str) -> bool:
    """True for overrides that name files or folders (never part of a configuration)."""
    leaf = key.rsplit(".", 1)[-1]
    return leaf.endswith(PATH_SUFFIXES) or value.startswith(("/", "./", "../", "~"))


def parse_overrides(overrides: list[str] | None) -> dict[str, str]:
    """``["a.b=1", "+c=x", "~d"]`` → ``{"a.b": "1", "c": "x", "~d": "removed"}``, minus ignored keys."""
    pairs: dict[str, str] = {}
    for item in overrides or []:
        key, sep, value = str(item).partition("=")
        key = key.lstrip("+")
        if key.startswith("~"):
            value = "removed"
        elif not sep:
            continue
        bare = key.lstrip("~")
        if bare in IGNORED_KEYS or bare in KEY_CHOICES or bare.startswith(IGNORED_PREFIXES):
            continue
        if is_path_like(key, value):
            continue
        pairs[key] = value
    return pairs


def finite_numbers(metrics: dict[str, Any] | None) -> dict[str, float]:
    """The finite numeric entries of a metrics dict (null / NaN / text dropped)."""
    out = {}
    for k, v in (metrics or {}).items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if math.isfinite(float(v)):
            out[str(k)] = float(v)
    return out


def _choice(value: Any) -> str:
    return "" if value is None else str(value).removesuffix(".yaml")


def run_from_results(res: dict[str, Any], source: str) -> Run | Skipped:
    """A :class:`Run` from a ``results.json`` dict, or the :class:`Skipped` reason it is not one."""
    status = str(res.get("status", "missing"))
    if status != "completed":
        reason = res.get("reason") or (
            "incomplete: status running (crashed, killed or still running)"
            if status == "running"
            else f"status {status}"
        )
        return Skipped(source, status, str(reason))
    metrics = finite_numbers(res.get("metrics"))
    if not metrics:
        return Skipped(source, status, "completed but no finite metrics")
    config = res.get("config") or {}
    choices = res.get("choices") or {}
    seed = config.get("seed")
    return Run(
        source=source,
        choices={k: _choice(choices.get(k)) for k in KEY_CHOICES},
        overrides=parse_overrides(res.get("overrides")),
        seed=int(seed) if isinstance(seed, int | float) else None,
        metrics=metrics,
        run_dir=str(res.get("run_dir") or Path(source).parent),
        job_num=res.get("job_num"),
        duration_s=res.get("duration_s"),
    )


def find_results(folder: Path) -> list[Path]:
    """Every ``results.json`` under ``folder`` (recursively), wandb folders excluded, sorted."""
    found = (p for p in folder.rglob(RESULTS_FILE) if "wandb" not in p.relative_to(folder).parts)
    return sorted(found, key=lambda p: (len(p.parts), str(p)))


def collect_folders(folders: list[str | Path]) -> Collection:
    """Read the runs under each folder; a missing folder is an error, a folder twice is read once."""
    out = Collection(sources=[str(f) for f in folders])
    seen: set[Path] = set()
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder")
        for path in find_results(folder):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                res = json.loads(path.read_text())
                if not isinstance(res, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as exc:
                out.skipped.append(Skipped(str(path), "unreadable", f"unreadable results.json: {exc}"))
                continue
            item = run_from_results(res, str(path))
            (out.runs if isinstance(item, Run) else out.skipped).append(item)
    return out


def swept_keys(runs: list[Run]) -> list[str]:
    """Override keys that take ≥ 2 values among runs with the same choices (a swept axis).

    An override missing from a run counts as the value ``default``. Keys constant within every
    choice combination (fixed budgets, the data slice) do not split configurations.
    """
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.overrides if k not in keys]
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(run.choices[c] for c in KEY_CHOICES), []).append(run)
    return [
        k
        for k in keys
        if any(len({r.overrides.get(k, DEFAULT) for r in group}) > 1 for group in groups.values())
    ]
