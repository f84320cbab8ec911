"""Find runs: every ``results.json`` under sweep folders, split into completed, running and skipped runs.

A run is *completed* only when its ``results.json`` reads as JSON, has ``status: completed`` and
holds at least one finite metric; everything else is a :class:`Skipped` entry with its reason
(never averaged), and ``running`` runs are also kept in :attr:`Collection.running`. A run whose
record holds a ``divergence`` is kept apart in :attr:`Collection.diverged` (never averaged unless
``include_diverged``; a stopped one is skipped and listed among the diverged). A run's
*configuration* is its Hydra choices plus its recorded result-defining settings (``fingerprint.settings``,
else :func:`mmvi.fingerprint.result_settings` of its config) minus the repeat keys (seed, data
fold) (docs/workflow.md §2). A record written before runs recorded their choices and fingerprint
takes its settings from its ``config`` and its choices from the runs with the same settings, else
from the config options it holds (:func:`choices_from_config`); a record whose fields have the
wrong types is skipped with the reason (:func:`record_problem`).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mmvi.fingerprint import flatten, is_path_setting, result_settings
from mmvi.report.curves import Curves, read_curves
from mmvi.run_folder import CONFIG_FILE, RESULTS_FILE, STAGES_DIR

# Hydra choices that always define a configuration (the columns of the report's tables)
KEY_CHOICES = ("data", "model", "objective", "experiment")
# settings that are repeats, not configurations: seeds, and the data folds the paper averages
# over (docs/paper.md §3)
REPEAT_KEYS = ("seed", "data.fold")
# overrides that never define a configuration (the legacy grouping of records without a config)
IGNORED_KEYS = {*REPEAT_KEYS, "sweep_name", "task_name", "ckpt_path", "tags"}
IGNORED_PREFIXES = ("hydra", "paths.", "logger", "callbacks", "trainer.enable_progress_bar")
# the value of a setting a run does not have (e.g. objective.alpha of a non-hybrid run)
UNSET = "–"
# the config groups whose option a record without choices is matched to (by its config node)
DERIVABLE_CHOICES = ("data", "model", "objective")
CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
# the fields of a results.json and the types they must have when present (None is allowed too)
RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "status": (str,),
    "metrics": (Mapping,),
    "choices": (Mapping,),
    "config": (Mapping,),
    "fingerprint": (Mapping,),
    "overrides": (list,),
    "missing_metrics": (Mapping,),
    "job_num": (int,),
    "duration_s": (int, float),
    "reason": (str,),
    "checkpoint": (str,),
}
NESTED_FIELDS: dict[str, tuple[type, ...]] = {
    "config.data": (Mapping,),
    "config.seed": (int,),
    "config.task_name": (str,),
    "fingerprint.settings": (Mapping,),
    "fingerprint.digest": (str,),
}


@dataclass
class Run:
    """One run: its configuration (choices + settings), seed, final metrics and per-epoch curves.

    ``settings`` maps dotted config keys to their values as text (:func:`setting_text`), repeat
    keys removed. ``curves`` holds the per-epoch log (:mod:`.curves`), ``None`` when the run has
    none. ``status`` is ``completed`` or ``running``; ``updated`` is the last modification time of
    its files (seconds since the epoch) and ``root`` the folder it was found under.
    """

    source: str
    choices: dict[str, str]
    settings: dict[str, str]
    seed: int | None
    metrics: dict[str, float]
    run_dir: str = ""
    job_num: int | None = None
    duration_s: float | None = None
    status: str = "completed"
    fold: int | None = None
    curves: Curves | None = None
    updated: float | None = None
    root: str = ""
    missing: dict[str, str] = field(default_factory=dict)
    divergence: dict[str, Any] | None = None

    @property
    def folder(self) -> Path:
        """The run folder (where its ``results.json`` is)."""
        return Path(self.source).parent


@dataclass
class Skipped:
    """A run left out of the report, with why."""

    source: str
    status: str
    reason: str
    root: str = ""


@dataclass
class Collection:
    """The runs found in some sources (folders or a wandb project)."""

    sources: list[str]
    runs: list[Run] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    running: list[Run] = field(default_factory=list)
    diverged: list[Run] = field(default_factory=list)

    def extend(self, other: Collection) -> None:
        self.sources += other.sources
        self.runs += other.runs
        self.skipped += other.skipped
        self.running += other.running
        self.diverged += other.diverged


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
        if is_path_setting(key, value):  # files and folders never define a configuration
            continue
        pairs[key] = value
    return pairs


def setting_text(value: Any) -> str:
    """A setting's value as table text: ``1.0`` → ``1``, ``0.25`` → ``0.25``, lists/None as JSON."""
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def run_settings(res: Mapping[str, Any]) -> dict[str, str]:
    """The result-defining settings of a ``results.json`` dict, flat, repeat keys removed, as text.

    ``fingerprint.settings`` when recorded, else :func:`result_settings` of the recorded
    ``config``. A record with neither (no settings beyond the repeat keys) falls back to its
    parsed command-line ``overrides``. A deep pipeline's ``stopped_after`` stage is one more setting.
    """
    fp = res.get("fingerprint")
    settings = fp.get("settings") if isinstance(fp, Mapping) else None
    if not isinstance(settings, Mapping):
        config = res.get("config")
        settings = result_settings(config) if isinstance(config, Mapping) else {}
    flat = {k: v for k, v in flatten(settings).items() if k not in REPEAT_KEYS}
    out = parse_overrides(res.get("overrides")) if not flat else {k: setting_text(v) for k, v in flat.items()}
    if res.get("stopped_after"):  # a deep pipeline evaluated at an earlier stage is its own configuration
        out["stopped_after"] = str(res["stopped_after"])
    return out


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


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def training_record(checkpoint: str | None) -> dict | None:
    """The record of the training run that wrote ``checkpoint`` (``<run>/checkpoints/x.ckpt``):
    its ``results.json``, else its ``config_resolved.json``; None when neither is readable."""
    if not checkpoint:
        return None
    folder = Path(checkpoint).parent.parent
    for name in (RESULTS_FILE, CONFIG_FILE):
        try:
            record = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record_problem(record) is None:
            if record.get("fingerprint") or record.get("config"):
                return record
    return None


def evaluation_identity(res: Mapping[str, Any]) -> tuple[dict, dict[str, str], Any] | None:
    """An ``mmvi.eval`` record read as the training run it evaluated: (choices, settings, seed).

    The settings are the training run's with its ``evaluation.*`` and ``data.*`` replaced by the
    evaluation's own and ``evaluation.by=mmvi.eval`` added, so a re-evaluation (e.g. with
    ``evaluation.inference=converged``) sits beside its training run as another configuration and
    its seeds average with the other seeds' re-evaluations. None for any other record.
    """
    config = res.get("config") or {}
    if config.get("task_name") != "eval":
        return None
    trained = training_record(res.get("checkpoint"))
    if trained is None:
        return None
    own = {k: v for k, v in run_settings(res).items() if k.startswith(("evaluation.", "data."))}
    base = {k: v for k, v in run_settings(trained).items() if not k.startswith(("evaluation.", "data."))}
    settings = {**base, **own, "evaluation.by": "mmvi.eval"}
    return trained.get("choices") or {}, settings, (trained.get("config") or {}).get("seed")


def make_run(res: Mapping[str, Any], source: str, status: str, metrics: dict[str, float]) -> Run:
    """A :class:`Run` of a ``results.json`` dict (choices, settings, seed, fold), without curves;
    an evaluation record takes its training run's identity (:func:`evaluation_identity`)."""
    config = res.get("config") or {}
    choices = res.get("choices") or {}
    settings, seed = None, config.get("seed")
    evaluated = evaluation_identity(res)
    if evaluated is not None:
        choices, settings, seed = evaluated
    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    return Run(
        source=source,
        choices={k: _choice(choices.get(k)) for k in KEY_CHOICES},
        settings=settings if settings is not None else run_settings(res),
        seed=_int(seed),
        metrics=metrics,
        run_dir=str(Path(source).parent),
        job_num=res.get("job_num"),
        duration_s=res.get("duration_s"),
        status=status,
        fold=_int(data.get("fold")),
        missing={str(k): str(v) for k, v in (res.get("missing_metrics") or {}).items()},
        divergence=dict(res["divergence"]) if isinstance(res.get("divergence"), Mapping) else None,
    )


def record_problem(res: Mapping[str, Any]) -> str | None:
    """Why a ``results.json`` dict cannot be read as a run (a field of the wrong type), or None.

    Checks the fields of :data:`RECORD_FIELDS` (each may be absent or null) and the nodes of
    ``config`` and ``fingerprint`` the report reads.
    """
    for key, types in RECORD_FIELDS.items():
        value = res.get(key)
        if value is None:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            want = " or ".join("an object" if t is Mapping else t.__name__ for t in types)
            return f"malformed results.json: {key} is {type(value).__name__} {_short(value)}, expected {want}"
    for dotted, types in NESTED_FIELDS.items():
        node, key = dotted.split(".")
        value = (res.get(node) or {}).get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            return f"malformed results.json: {dotted} is {type(value).__name__} {_short(value)}"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


@functools.cache
def _options(group: str) -> dict[str, dict[str, Any]]:
    """``{option: flat values}`` of ``conf/<group>/*.yaml`` (empty when the config folder is absent)."""
    out = {}
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        try:
            node = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(node, dict) and "_target_" in node:
            out[path.stem] = flatten({k: v for k, v in node.items() if k != "defaults"})
    return out


def choices_from_config(config: Mapping[str, Any]) -> dict[str, str]:
    """The options of :data:`DERIVABLE_CHOICES` a recorded ``config`` was composed from.

    For each group, the options of ``conf/<group>`` with the config node's ``_target_``; of these
    the one with the most values equal to the node's (an override changes a few); none when two
    tie or none has the target.
    """
    out = {}
    for group in DERIVABLE_CHOICES:
        node = config.get(group)
        if not isinstance(node, Mapping) or "_target_" not in node:
            continue
        flat = flatten(node)
        scores = {
            name: sum(flat.get(k) == v for k, v in values.items() if not str(v).startswith("${"))
            for name, values in _options(group).items()
            if values.get("_target_") == node["_target_"]
        }
        best = sorted(scores.items(), key=lambda kv: -kv[1])
        if best and (len(best) == 1 or best[0][1] > best[1][1]):
            out[group] = best[0][0]
    return out


def fill_missing_choices(runs: list[Run], records: Mapping[str, Mapping[str, Any]]) -> None:
    """Give runs whose record holds no choices those of the runs with the same settings (when they
    agree), else :func:`choices_from_config` of their config; in place. ``records``: source → dict."""
    known: dict[tuple, set[tuple]] = {}
    for run in runs:
        if records[run.source].get("choices"):
            key = tuple(sorted(run.settings.items()))
            known.setdefault(key, set()).add(tuple(run.choices[c] for c in KEY_CHOICES))
    for run in runs:
        res = records[run.source]
        if res.get("choices"):
            continue
        same = known.get(tuple(sorted(run.settings.items())), set())
        if len(same) == 1:
            run.choices = dict(zip(KEY_CHOICES, next(iter(same)), strict=True))
        elif isinstance(res.get("config"), Mapping):
            run.choices.update(choices_from_config(res["config"]))


def run_from_results(res: dict[str, Any], source: str) -> Run | Skipped:
    """A completed :class:`Run` from a ``results.json`` dict, or the :class:`Skipped` reason it is not one."""
    problem = record_problem(res)
    if problem is not None:
        return Skipped(source, "malformed", problem)
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
    return make_run(res, source, status, metrics)


def find_results(folder: Path) -> list[Path]:
    """Every ``results.json`` under ``folder`` (recursively), wandb and stage folders excluded, sorted."""
    found = (
        p
        for p in folder.rglob(RESULTS_FILE)
        if not {"wandb", STAGES_DIR} & set(p.relative_to(folder).parts[:-1])
    )
    return sorted(found, key=lambda p: (len(p.parts), str(p)))


def modified(folder: Path, curves: Curves | None) -> float:
    """Last modification time of a run's ``results.json`` and per-epoch logs."""
    paths = [folder / RESULTS_FILE, *(curves.files if curves else [])]
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


def collect_folders(folders: list[str | Path], include_diverged: bool = False) -> Collection:
    """Read the runs under each folder; a missing folder is an error, a folder twice is read once,
    and a completed run with the fingerprint of one already read (the same settings, data and
    seed, e.g. a copied folder; for a deep pipeline also the stage it stopped after) is listed as a
    duplicate and counted once. Diverged runs go to
    :attr:`Collection.diverged` (completed ones also to the runs with ``include_diverged``)."""
    out = Collection(sources=[str(f) for f in folders])
    seen: set[Path] = set()
    digests: dict[str, str] = {}
    records: dict[str, dict] = {}
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
                out.skipped.append(
                    Skipped(str(path), "unreadable", f"unreadable results.json: {exc}", str(folder))
                )
                continue
            records[str(path)] = res
            item = run_from_results(res, str(path))
            if isinstance(item, Skipped):
                item.root = str(folder)
                out.skipped.append(item)
                if isinstance(res.get("divergence"), Mapping):
                    gone = make_run(res, str(path), item.status, finite_numbers(res.get("metrics")))
                    gone.root = str(folder)
                    out.diverged.append(gone)
                if item.status != "running":
                    continue
                item = make_run(res, str(path), "running", finite_numbers(res.get("metrics")))
                out.running.append(item)
            else:
                recorded = res.get("fingerprint")
                digest = recorded.get("digest") if isinstance(recorded, dict) else None
                if digest and res.get("stopped_after"):  # a pipeline evaluated at an earlier stage
                    digest = f"{digest}@{res['stopped_after']}"
                if digest and digest in digests:
                    out.skipped.append(
                        Skipped(
                            str(path),
                            "duplicate",
                            f"the same settings, data and seed as {digests[digest]}: counted once",
                            str(folder),
                        )
                    )
                    continue
                if digest:
                    digests[digest] = str(path)
                if item.divergence is not None:
                    out.diverged.append(item)
                    if not include_diverged:
                        item.root = str(folder)
                        continue
                out.runs.append(item)
            item.root = str(folder)
            item.curves = read_curves(path.parent)
            item.updated = modified(path.parent, item.curves)
    fill_missing_choices(out.runs + out.running, records)
    return out


def swept_keys(runs: list[Run]) -> list[str]:
    """Setting keys that take ≥ 2 values among runs with the same choices (a swept axis).

    A setting missing from a run counts as the value :data:`UNSET`. Keys constant within every
    choice combination (fixed budgets, the data slice) do not split configurations. Keys in the
    order they first appear.
    """
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(run.choices[c] for c in KEY_CHOICES), []).append(run)
    keys: dict[str, None] = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        frame = pd.DataFrame([r.settings for r in group]).fillna(UNSET)
        keys.update(dict.fromkeys(c for c in frame.columns if frame[c].nunique() > 1))
    return list(keys)
