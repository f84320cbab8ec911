"""Per-epoch learning curves of a run, read from the CSV logs it writes (or its wandb history).

Training runs log to ``<run>/csv/metrics.csv`` (or ``csv/version_<n>/``), deep-pipeline runs per
stage to ``<run>/stages/<stage>/csv/version_<n>/metrics.csv``; a deep run's stages are put one
after the other on one pipeline-epoch axis, each measure prefixed by its stage. A curve keeps the
last value logged per epoch; rows without an epoch and non-finite values are left out
(docs/workflow.md §2).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mmvi.run_folder import CSV_DIR, DONE_FILE, STAGES_DIR

CSV_FILE = "metrics.csv"
# columns of a CSV log that index rows, not measures
INDEX_COLUMNS = ("epoch", "step")
# history keys of wandb that are bookkeeping, not per-epoch measures
HISTORY_SKIP = ("_", "trainer/", "figures/")
STAGE_ORDER = ("pathway", "top", "joint", "finetune")
# the first segment of a per-epoch measure name after its stage prefix
PHASES = ("train", "val")
# order of measures within a stage: validation conditional CEs, the rest of validation, the
# training loss, its parts, then the optimiser's schedule and the step counters
MEASURE_ORDER = (
    r"val/cond_ce/.+_given_.+",
    r"val/cond_ce/sum",
    r"val/.+",
    r"train/loss",
    r"train/(?!lr$|momentum$|sparsity$|nonfinite_steps$).+",
    r"train/lr",
    r"train/momentum",
    r"train/sparsity",
    r"train/nonfinite_steps",
)


@dataclass
class Stage:
    """One deep-pipeline stage on the pipeline-epoch axis: epochs ``first`` … ``last`` (inclusive)."""

    name: str  # folder name, e.g. pathway_image_1
    prefix: str  # measure prefix, e.g. pathway/image_1
    first: int
    last: int
    done: bool


@dataclass
class Curves:
    """Per-epoch measures of one run.

    ``frame``: index ``epoch`` (int; the pipeline epoch for deep runs), one column per measure
    (float, NaN where not logged). ``files``: the logs read. ``stages``: the deep pipeline's
    stages in order (empty for a training run).
    """

    frame: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)

    @property
    def last_epoch(self) -> int | None:
        """The last epoch with any measure (``None`` when nothing was logged yet)."""
        rows = self.frame.index[self.frame.notna().any(axis=1)]
        return int(rows.max()) if len(rows) else None

    def current(self) -> tuple[Stage | None, int | None, dict[str, float]]:
        """The stage being (or last) trained, its last epoch (counted within it) and that epoch's values.

        Values are keyed by the measure name without the stage prefix.
        """
        last = self.last_epoch
        if last is None:
            return (self.stages[-1] if self.stages else None), None, {}
        stage = next((s for s in reversed(self.stages) if s.first <= last), None)
        row = self.frame.loc[last]
        values = {k: float(v) for k, v in row.items() if math.isfinite(v)}
        if stage is None:
            return None, last, values
        cut = len(stage.prefix) + 1
        inside = {k[cut:]: v for k, v in values.items() if k.startswith(stage.prefix + "/")}
        return stage, last - stage.first, inside


def version_number(path: Path) -> int:
    match = re.fullmatch(r"version_(\d+)", path.parent.name)
    return int(match.group(1)) if match else -1


def csv_files(folder: Path) -> list[Path]:
    """``<folder>/csv/metrics.csv`` and ``<folder>/csv/version_<n>/metrics.csv``, oldest version first."""
    found = [p for p in (folder / CSV_DIR).glob(f"**/{CSV_FILE}") if p.is_file()]
    return sorted(found, key=lambda p: (version_number(p), str(p)))


def read_csv(path: Path) -> pd.DataFrame | None:
    """One CSV log, or ``None`` when it is empty, being written or unreadable."""
    try:
        return pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None


def epoch_frame(log: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch table of a metrics log: the last finite value of each measure in each epoch.

    ``log`` has an ``epoch`` column (rows without one are dropped) and one column per measure.
    Returns a frame indexed by the integer epoch, sorted, with the measures that have a value.
    """
    if "epoch" not in log:
        return pd.DataFrame(index=pd.Index([], name="epoch", dtype=int))
    epoch = pd.to_numeric(log["epoch"], errors="coerce")
    log = log[epoch.notna()]
    measures = [c for c in log.columns if c not in INDEX_COLUMNS and not str(c).startswith(HISTORY_SKIP)]
    values = log[measures].apply(pd.to_numeric, errors="coerce").replace([np.inf, -np.inf], np.nan)
    values = values.loc[:, values.notna().any()]
    frame = values.groupby(epoch[epoch.notna()].astype(int).to_numpy(), sort=True).last()
    frame.index.name = "epoch"
    return frame


def read_logs(paths: list[Path]) -> pd.DataFrame:
    """The per-epoch frame of one or more CSV logs of the same fit (a later file wins an epoch)."""
    logs = [log for log in map(read_csv, paths) if log is not None]
    if not logs:
        return pd.DataFrame(index=pd.Index([], name="epoch", dtype=int))
    return epoch_frame(pd.concat(logs, ignore_index=True))


def stage_prefix(name: str) -> str:
    """The metric prefix of a deep-pipeline stage folder (:func:`mmvi.deep.stages.stage_prefix`)."""
    from mmvi.deep.stages import stage_prefix as prefix  # imported when a deep run is read

    return prefix(name)


def stage_rank(name: str) -> int:
    kind = name.split("/", 1)[0].split("_", 1)[0]
    return STAGE_ORDER.index(kind) if kind in STAGE_ORDER else len(STAGE_ORDER)


def read_done(folder: Path) -> dict | None:
    try:
        done = json.loads((folder / DONE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return done if isinstance(done, dict) else None


def read_stage_curves(root: Path) -> Curves | None:
    """The curves of a deep-pipeline run: its stages' logs one after the other (``root`` = ``<run>/stages``)."""
    entries = []
    for folder in (p for p in root.iterdir() if p.is_dir()):
        files = csv_files(folder)
        done = read_done(folder)
        if not files and not done:
            continue
        finished = float(done.get("finished", math.inf)) if done else math.inf
        entries.append((finished, stage_rank(folder.name), folder.name, files, done))
    entries.sort(key=lambda e: e[:3])
    parts, stages, offset = [], [], 0
    for _, _, name, files, done in entries:
        frame = read_logs(files)
        span = max(int(frame.index.max()) + 1 if len(frame) else 0, int((done or {}).get("epochs", 0) or 0))
        if span == 0:
            continue
        prefix = stage_prefix(name)
        frame.index = frame.index + offset
        parts.append(frame.add_prefix(prefix + "/"))
        stages.append(Stage(name, prefix, offset, offset + span - 1, done is not None))
        offset += span
    if not parts:
        return None
    frame = pd.concat(parts, axis=1).sort_index()
    frame.index.name = "epoch"
    return Curves(frame, [f for e in entries for f in e[3]], stages)


def read_curves(run_dir: str | Path) -> Curves | None:
    """The per-epoch curves of a run folder (training run or deep pipeline), ``None`` without logs."""
    run_dir = Path(run_dir)
    stages = run_dir / STAGES_DIR
    if stages.is_dir():
        curves = read_stage_curves(stages)
        if curves is not None:
            return curves
    files = csv_files(run_dir)
    if not files:
        return None
    return Curves(read_logs(files), files)


def from_history(history: pd.DataFrame) -> Curves | None:
    """Curves from a wandb run history (``run.history(pandas=True)``: one row per logged step)."""
    if history is None or "epoch" not in history:
        return None
    frame = epoch_frame(history)
    return Curves(frame) if len(frame.columns) else None


# ------------------------------------------------------------------------ across runs
def split_stage(measure: str) -> tuple[str, str]:
    """``top/val/cond_ce/sum`` → (``top``, ``val/cond_ce/sum``); ``train/loss`` → (``""``, ``train/loss``).

    The stage prefix is what precedes the first ``train``/``val`` segment.
    """
    parts = measure.split("/")
    cut = next((i for i, p in enumerate(parts) if p in PHASES), 0)
    return "/".join(parts[:cut]), "/".join(parts[cut:])


def measure_rank(name: str) -> int:
    for i, pattern in enumerate(MEASURE_ORDER):
        if re.fullmatch(pattern, name):
            return i
    return len(MEASURE_ORDER)


def curve_measures(curves: list[Curves]) -> list[str]:
    """Every measure of some runs' curves: training runs' first, then each stage's, in pipeline order."""
    first: dict[str, int] = {}
    for c in curves:
        for stage in c.stages:
            first[stage.prefix] = min(first.get(stage.prefix, stage.first), stage.first)
    names = {m for c in curves for m in c.frame.columns}

    def key(measure: str) -> tuple:
        stage, rest = split_stage(measure)
        return (
            stage != "",
            first.get(stage, 0),
            stage_rank(stage) if stage else 0,
            stage,
            measure_rank(rest),
            rest,
        )

    return sorted(names, key=key)


def across_runs(series: list[pd.Series]) -> pd.DataFrame:
    """Mean, std (ddof = 1; NaN with one run) and n over runs, per epoch (runs aligned by epoch)."""
    wide = pd.concat(series, axis=1)
    return pd.DataFrame({"mean": wide.mean(axis=1), "std": wide.std(axis=1, ddof=1), "n": wide.count(axis=1)})
