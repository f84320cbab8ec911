"""Hydra callbacks of every mmvi entry point (registered in ``conf/hydra/default.yaml``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepRecords(Callback):
    """A multirun keeps every earlier record of its sweep folder and ends in one line per refused job.

    * ``on_multirun_start``: a ``multirun.yaml`` already in the sweep folder (an earlier sweep's
      record, which Hydra would overwrite) is renamed aside to ``multirun.<timestamp>.yaml``.
    * ``on_multirun_end``: the jobs that a configuration or data error ended (each said so in one
      ``error:`` line when it ended, and the others ran) are listed again, and the process exits
      with status 2.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mmvi.cli import REFUSED_JOBS
        from mmvi.utils import set_aside

        REFUSED_JOBS.clear()
        record = Path(str(config.hydra.sweep.dir)) / "multirun.yaml"
        if record.is_file():
            kept = set_aside(record)
            print(f"{record.parent}: kept the earlier sweep's multirun.yaml as {kept.name}", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mmvi.cli import REFUSED_JOBS
        from mmvi.run_folder import RESULTS_FILE, read_results

        refused = dict(REFUSED_JOBS)
        # jobs run in other processes (joblib's workers) leave their refusal in their failed record
        for path in sorted(Path(str(config.hydra.sweep.dir)).glob(f"*/{RESULTS_FILE}")):
            try:
                record = read_results(path)
            except (OSError, ValueError):
                continue
            if record.get("status") == "failed" and str(record.get("reason", "")).startswith(
                ("ConfigError", "DataError")
            ):
                refused.setdefault(str(path.parent), str(record["reason"]).split(": ", 1)[-1])
        if not refused:
            return
        lines = [f"error: {len(refused)} job(s) of this sweep refused:"]
        lines += [f"  {m}" if m.startswith(f) else f"  {f}: {m}" for f, m in refused.items()]
        print("\n".join(lines), file=sys.stderr, flush=True)
        raise SystemExit(2)
