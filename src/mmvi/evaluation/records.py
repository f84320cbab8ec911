"""Per-example records: the values behind every measure of an evaluation (``records.parquet``).

One row per (metric, unit), long format (schema version :data:`VERSION`, stored in the parquet
metadata under ``mmvi_records_version``):

============== ================ ==================================================================
column         type             meaning
============== ================ ==================================================================
``metric``     string           the ``results.json`` metric the row contributes to
``unit``       string           ``item`` (a test example) or ``class`` (a class of multi-label data)
``index``      int64            the item's index in the test split (the class index for ``class``)
``value``      float64          the unit's value; the mean over a metric's rows is the metric
``prediction`` int64, nullable  the probe's predicted class (``classify/err_*`` rows)
``label``      int64, nullable  the true class (``classify/err_*`` rows)
============== ================ ==================================================================

Values: ``classify/err_<q>``: 100·(1 − correct); ``cond_ce/*``: nats of the item;
``cond_nll/*`` and ``nll``: −log P of the item (exact, or its AIS estimate); ``cond_nll/vi``: the sum
of the item's ``cond_nll/<m>_given_rest``; ``retrieval/*``: the query item's AP and P@k;
``classify/map_<q>``, ``classify/precision_at_<k>_<q>``: the class's AP and P@k (classes with a
positive test item). Summary numbers (``*_stderr``, ``classify/C``, ``eval/*``) have no rows.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

VERSION = 1
VERSION_KEY = b"mmvi_records_version"
UNITS = ("item", "class")
SCHEMA = pa.schema(
    [
        ("metric", pa.string()),
        ("unit", pa.string()),
        ("index", pa.int64()),
        ("value", pa.float64()),
        ("prediction", pa.int64()),
        ("label", pa.int64()),
    ],
    metadata={VERSION_KEY: str(VERSION).encode()},
)


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class Records:
    """Collects the per-unit values of an evaluation's measures; :meth:`write` stores them."""

    def __init__(self) -> None:
        self._parts: dict[str, dict[str, np.ndarray | str | None]] = {}

    def add(self, metric: str, values, unit: str = "item", index=None, prediction=None, label=None) -> None:
        """Record ``values`` (n,) of ``metric`` for units ``index`` (default 0..n−1); replaces earlier rows.

        Raises:
            ValueError: an unknown unit, or arrays of different lengths.
        """
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
        v = _np(values).astype(np.float64).ravel()
        idx = np.arange(v.size, dtype=np.int64) if index is None else _np(index).astype(np.int64).ravel()
        cols = {"prediction": prediction, "label": label}
        cols = {k: None if c is None else _np(c).astype(np.int64).ravel() for k, c in cols.items()}
        if idx.size != v.size or any(c is not None and c.size != v.size for c in cols.values()):
            raise ValueError(f"records of {metric}: index, value, prediction and label differ in length")
        self._parts[metric] = {"unit": unit, "index": idx, "value": v, **cols}

    def __contains__(self, metric: str) -> bool:
        return metric in self._parts

    def metrics(self) -> list[str]:
        return list(self._parts)

    def values(self, metric: str) -> np.ndarray:
        """The values (n,) recorded for ``metric`` (KeyError when none)."""
        return self._parts[metric]["value"]

    def mean(self, metric: str) -> float:
        """The mean of a metric's values (what ``results.json`` records for it)."""
        return float(self._parts[metric]["value"].mean())

    def table(self, keep: Iterable[str] | None = None) -> pa.Table:
        """The records as one arrow table (the metrics in ``keep`` only, if given)."""
        names = [m for m in self._parts if keep is None or m in set(keep)]
        parts = [self._parts[m] for m in names]
        sizes = np.array([p["value"].size for p in parts], dtype=np.int64)
        n = int(sizes.sum())

        def nullable(key: str) -> pa.Array:
            data = np.zeros(n, dtype=np.int64)
            mask = np.ones(n, dtype=bool)
            start = 0
            for p, size in zip(parts, sizes, strict=True):
                if p[key] is not None:
                    data[start : start + size] = p[key]
                    mask[start : start + size] = False
                start += size
            return pa.array(data, mask=mask, type=pa.int64())

        units = [p["unit"] for p in parts]
        cat = (lambda k: np.concatenate([p[k] for p in parts])) if parts else (lambda k: np.zeros(0))
        columns = [
            pa.array(np.repeat(np.array(names, dtype=object), sizes), type=pa.string()),
            pa.array(np.repeat(np.array(units, dtype=object), sizes), type=pa.string()),
            pa.array(cat("index").astype(np.int64)),
            pa.array(cat("value").astype(np.float64)),
            nullable("prediction"),
            nullable("label"),
        ]
        return pa.Table.from_arrays(columns, schema=SCHEMA)

    def write(self, path: str | Path, keep: Iterable[str] | None = None) -> Path:
        """Write the records (the metrics in ``keep``) to ``path`` atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            pq.write_table(self.table(keep), tmp, compression="zstd")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def read_records(path: str | Path):
    """The records of ``path`` as a pandas DataFrame (columns of :data:`SCHEMA`).

    Raises:
        ValueError: a file of another schema version.
    """
    table = pq.read_table(path)
    version = (table.schema.metadata or {}).get(VERSION_KEY)
    if version is None or int(version) != VERSION:
        raise ValueError(f"{path}: records schema version {version!r}, expected {VERSION}")
    import pandas as pd

    df = table.to_pandas()
    for col in ("prediction", "label"):  # nullable integers, not floats
        df[col] = table[col].to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    return df
