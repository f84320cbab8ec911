"""Per-item records (``records.parquet``) for run folders in tests: values whose mean is the run's
``results.json`` figure, with item effects shared by every run (so that runs pair on items)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from mmvi.report.paired import RECORDS_FILE, is_compared
from mmvi.run_folder import read_results


def item_values(metric: str, mean: float, n: int, run_seed: int, spread: float = 1.0) -> np.ndarray:
    """``n`` per-item values of ``metric`` with mean exactly ``mean``.

    Error rates (``classify/err_*``, percent): ``round(mean · n / 100)`` items at 100, the rest at
    0, the wrong ones the hardest by an item difficulty shared by all runs plus run noise (exact
    when ``mean · n / 100`` is an integer, e.g. 100 test items). Others: ``mean`` + shared item
    effect + run noise, centred.
    """
    shared = np.random.default_rng(zlib.crc32(metric.encode())).normal(size=n)
    own = np.random.default_rng([run_seed, zlib.crc32(metric.encode())]).normal(size=n)
    if metric.startswith("classify/err_"):
        wrong = int(round(mean * n / 100))
        if abs(wrong - mean * n / 100) < 1e-9:
            order = np.argsort(-(shared + 0.5 * own), kind="stable")
            values = np.zeros(n)
            values[order[:wrong]] = 100.0
            return values
    x = spread * (shared + 0.5 * own)
    return mean + x - x.mean()


def write_records(run_dir: str | Path, n: int, run_seed: int, metrics: list[str] | None = None) -> Path:
    """``records.parquet`` in ``run_dir`` for its compared metrics (or ``metrics``), ``n`` items each."""
    res = read_results(Path(run_dir))
    names = metrics or [m for m, v in res["metrics"].items() if is_compared(m) and isinstance(v, int | float)]
    frames = [
        pd.DataFrame(
            {
                "metric": m,
                "unit": "item",
                "index": np.arange(n, dtype=np.int64),
                "value": item_values(m, float(res["metrics"][m]), n, run_seed),
                "prediction": pd.array([None] * n, dtype="Int64"),
                "label": pd.array([None] * n, dtype="Int64"),
            }
        )
        for m in names
    ]
    path = Path(run_dir) / RECORDS_FILE
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)
    return path
