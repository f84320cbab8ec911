"""Follow a running sweep: watch its run folders and rewrite the report when one changes.

A sweep has ended when no run's ``results.json`` says ``running`` and either every job of its
multiruns has a ``results.json`` (the job count comes from each ``multirun.yaml``: the product of
the swept values, or the Optuna sweeper's ``n_trials``), or, when the count is unknown, nothing
changed for ``settle`` seconds. A sweep in which nothing changed for ``stale`` seconds is taken
as ended too (a run killed without a word stays ``running`` forever; it is then reported as
crashed or unfinished).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from mmvi.report.collect import find_results
from mmvi.report.curves import csv_files
from mmvi.run_folder import STAGES_DIR

MULTIRUN_FILE = "multirun.yaml"
ENDED = ("completed", "failed", "unreadable")


@dataclass
class SweepState:
    """What the watcher sees in the folders at one moment.

    ``signature``: (path, mtime_ns, size) of every ``results.json`` and per-epoch log;
    ``statuses``: the status of each ``results.json``; ``expected``: the number of jobs the
    multiruns will run (``None`` when unknown); ``newest``: the latest modification time seen.
    """

    signature: tuple = ()
    statuses: dict[str, str] = field(default_factory=dict)
    expected: int | None = None
    newest: float = 0.0

    @property
    def running(self) -> int:
        return sum(s == "running" for s in self.statuses.values())


def count_sweep(overrides: list[str]) -> int | None:
    """Jobs of a basic sweep over Hydra override strings (``a=1,2 b=range(3)`` → 6); ``None`` if not countable."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        n = 1
        for override in parsed:
            if override.is_sweep_override():
                n *= len(list(override.sweep_string_iterator()))
        return n
    except Exception:  # noqa: BLE001 - any sweep Hydra cannot enumerate (intervals, tags) is uncountable
        return None


def expected_jobs(multirun_yaml: Path) -> int | None:
    """The number of jobs a multirun will run, from its ``multirun.yaml``; ``None`` when unknown."""
    try:
        cfg = OmegaConf.load(multirun_yaml)
        sweeper = cfg.hydra.sweeper
        target = str(sweeper.get("_target_", ""))
        if "Optuna" in target:
            return int(sweeper.n_trials)
        if target and not target.endswith("BasicSweeper"):
            return None
        params = {str(k): f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()}
        for item in cfg.hydra.overrides.task:
            params[str(item).split("=", 1)[0].lstrip("+~")] = str(item)
        return count_sweep(list(params.values()))
    except Exception:  # noqa: BLE001 - an unreadable multirun.yaml leaves the count unknown
        return None


def status_of(path: Path) -> str:
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        return "unreadable"
    return str(res.get("status", "missing")) if isinstance(res, dict) else "unreadable"


def scan(folders: list[str | Path]) -> SweepState:
    """Stat every ``results.json``, per-epoch log and ``multirun.yaml`` under the folders."""
    entries, statuses, newest = [], {}, 0.0
    expected: int | None = 0
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        multiruns = [p for p in folder.rglob(MULTIRUN_FILE) if ".hydra" not in p.parts]
        counts = [expected_jobs(p) for p in multiruns]
        newest = max([newest, *(p.stat().st_mtime for p in multiruns)])
        if not multiruns or None in counts:
            expected = None
        elif expected is not None:
            expected += sum(counts)
        for results in find_results(folder):
            run = results.parent
            stage_logs = [f for d in (run / STAGES_DIR).glob("*") if d.is_dir() for f in csv_files(d)]
            for path in [results, *csv_files(run), *stage_logs]:
                try:
                    st = path.stat()
                except OSError:
                    continue
                entries.append((str(path), st.st_mtime_ns, st.st_size))
                newest = max(newest, st.st_mtime)
            statuses[str(results)] = status_of(results)
    return SweepState(tuple(sorted(entries)), statuses, expected, newest)


def has_ended(state: SweepState, now: float, settle: float, stale: float) -> bool:
    """True when the sweep is over (see the module docstring)."""
    quiet = now - state.newest if state.newest else math.inf
    if quiet >= stale:
        return True
    if state.running:
        return False
    if state.expected is not None:
        return len(state.statuses) >= state.expected or quiet >= stale
    return bool(state.statuses) and quiet >= settle


def watch(
    folders: list[str | Path],
    write: Callable[[bool], object],
    interval: float,
    stale: float = 3600.0,
    settle: float | None = None,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll the folders every ``interval`` seconds; ``write(live)`` whenever something changed.

    ``write(True)`` while the sweep runs, ``write(False)`` once when it has ended (or on Ctrl-C);
    ``settle`` (default ``max(3 × interval, 10)`` s) is the quiet time that ends a sweep whose job
    count is unknown. Returns the number of reports written.
    """
    settle = max(3 * interval, 10.0) if settle is None else settle
    last: tuple | None = None
    written = 0
    try:
        while True:
            state = scan(folders)
            ended = has_ended(state, time.time(), settle, stale)
            if ended or state.signature != last:
                write(not ended)
                written += 1
                done = sum(s in ENDED for s in state.statuses.values())
                of = f" of {state.expected}" if state.expected is not None else ""
                log(
                    f"[{time.strftime('%H:%M:%S')}] {done}{of} run(s) ended, {state.running} running"
                    + ("; the sweep has ended" if ended else "")
                )
                last = state.signature
            if ended:
                return written
            sleep(interval)
    except KeyboardInterrupt:
        write(False)
        log("stopped watching; the report no longer reloads")
        return written + 1
