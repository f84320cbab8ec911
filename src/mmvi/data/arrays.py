"""Your own multimodal data from array files: one file (or ``.npz`` key) per modality, labels optional.

    python -m mmvi.train data=arrays 'data.files={pix: pix.npy, fou: fou.parquet}' data.labels=labels.npy \\
        'data.units={pix: gaussian, fou: gaussian}' model.n_hidden=64

File formats (``.npy``, ``.npz``, ``.csv``/``.tsv``/``.txt``, ``.parquet``), labels, splits (index
files or stratified fractions) and each unit type's preprocessing (z-scoring with training
statistics stored in the checkpoint, binarisation, counts): docs/data.md §3. Gaussian views are
standardised in float64, then cast; a CSV header 0..n−1 (pandas' default) is recognised. Every
error is one line naming the file and key, raised by ``setup`` before anything is trained.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmvi.data.base import MultimodalDataModule, Split
from mmvi.data.files import sha256_file
from mmvi.data.preprocess import apply_zscore, float32_overflow, stratified_split, zscore_stats
from mmvi.errors import DataError
from mmvi.models.units import DATA_UNIT_TYPES

log = logging.getLogger(__name__)

SUFFIXES = (".npy", ".npz", ".csv", ".tsv", ".txt", ".parquet", ".pq")
BINARIZE = ("threshold", "sample")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# names the evaluation uses for its queries and conditional measures
RESERVED = ("multimodal", "rest")
STATE_FORMAT = 1


@dataclass(frozen=True)
class ArraySource:
    """A file, and the key of the array inside it (``.npz`` only)."""

    path: Path
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.key}" if self.key else str(self.path)


def parse_source(spec: str | Path, root: Path) -> ArraySource:
    """``"dir/x.npz:key"`` → the file (relative paths joined to ``root``) and the key."""
    text = str(spec)
    key = None
    head, sep, tail = text.rpartition(":")
    if sep and head.lower().endswith(".npz") and tail:
        text, key = head, tail
    path = Path(text).expanduser()
    return ArraySource(path if path.is_absolute() else root / path, key)


def _numeric_frame(frame, source: ArraySource, header: str = "auto") -> np.ndarray:
    """All-numeric values of a pandas frame read without a header.

    ``header``: ``auto`` takes a first row holding a non-number as the header; ``true`` always
    drops the first row; ``false`` never does.
    """
    import pandas as pd

    numbers = frame.apply(pd.to_numeric, errors="coerce")
    bad = (numbers.isna() & frame.notna()).to_numpy()
    drop = header == "true" or (header == "auto" and bad.size and bad[0].any() and not bad[1:].any())
    if header == "auto" and not drop and not bad.any():
        drop = default_column_header(numbers.to_numpy(dtype=np.float64), source)
    if drop:
        numbers, bad = numbers.iloc[1:], bad[1:]
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        values = frame.to_numpy()
        value = values[row + (frame.shape[0] - bad.shape[0]), col]
        name = repr(str(values[0, col])) if drop else str(col)
        raise DataError(
            f"{source}: column {name} holds {value!r} in row {row}, not a number (every column must be numeric)"
        )
    return numbers.to_numpy(dtype=np.float64)


def default_column_header(values: np.ndarray, source: ArraySource) -> bool:
    """Whether the first row of a numeric text table (N, n) is pandas' default header ``0,1,…,n−1``.

    ``DataFrame.to_csv(index=False)`` of a frame without column names writes them as a first row
    of numbers. It is taken as the header (logged) when it is exactly 0..n−1 and no other row is,
    and either n ≥ 3 or the other rows hold non-integers (a data row 0..n−1 of n ≥ 3 whole numbers
    is unlikely; of one or two it is common, e.g. bits); when it is ambiguous, a warning names
    ``csv_header``.
    """
    if values.shape[0] < 2:
        return False
    names = np.arange(values.shape[1], dtype=np.float64)
    if not np.array_equal(values[0], names) or (values[1:] == names).all(1).any():
        return False
    rest = values[1:]
    if values.shape[1] >= 3 or bool((rest != np.round(rest)).any()):
        log.warning(
            "%s: first row %s taken as the column names pandas writes (to_csv of an unnamed frame), not "
            "an example; set data.csv_header=false if it is one",
            source,
            ",".join(str(i) for i in range(values.shape[1])),
        )
        return True
    log.warning(
        "%s: the first row %s may be a header (pandas' default column names) or an example; it is "
        "read as an example: set data.csv_header=true if it is a header",
        source,
        ",".join(str(i) for i in range(values.shape[1])),
    )
    return False


def read_array(source: ArraySource, numeric: bool = True, header: str = "auto") -> np.ndarray:
    """The array of one file (see docs/data.md §3).

    ``header`` (text files): ``auto`` | ``true`` | ``false``, see :func:`_numeric_frame`. With
    ``numeric=False`` a text/Parquet file is returned as stored (e.g. class names, a header row
    dropped only with ``header="true"``).

    Raises:
        DataError: missing or unreadable file, unknown suffix, missing key, non-numeric values.
    """
    import pandas as pd

    path = source.path
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{source}: unknown file type {suffix or '(none)'}; allowed: {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if source.key is not None and suffix != ".npz":
        raise DataError(f"{source}: only .npz files hold keys (name.npz:key)")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                keys = list(npz.files)
                key = source.key
                if key is None and len(keys) == 1:
                    key = keys[0]
                if key is None or key not in keys:
                    what = "name one" if key is None else f"no array {key!r}"
                    raise DataError(f"{source}: {what}: the file holds {keys} (write name.npz:key)")
                return npz[key]
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            frame.columns = [str(c) for c in frame.columns]
        else:
            sep = {".csv": ",", ".tsv": "\t"}.get(suffix, r"\s+")
            # names are read as written ("NA", "null", "nan" are names); only empty cells are missing
            text = {} if numeric else {"dtype": str, "keep_default_na": False, "na_values": [""]}
            frame = pd.read_csv(path, header=None, sep=sep, **text)
    except DataError:
        raise
    except Exception as exc:  # numpy/pandas/pyarrow raise many types on a bad file
        raise DataError(f"cannot read {source} ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    if not numeric:
        values = frame.to_numpy()
        return values[1:] if header == "true" and suffix not in (".parquet", ".pq") else values
    if suffix in (".parquet", ".pq"):
        non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if non_numeric:
            raise DataError(f"{source}: columns {non_numeric[:5]} are not numeric (every column must be)")
        return frame.to_numpy(dtype=np.float64)
    return _numeric_frame(frame, source, header)


def read_labels(source: ArraySource, header: str = "auto") -> np.ndarray:
    """Labels as numbers (ids or a 0/1 matrix), else as class names (one column; an empty cell is "")."""
    try:
        return read_array(source, header=header)
    except DataError as exc:
        if "not a number" not in str(exc) and "not numeric" not in str(exc):
            raise
    names = read_array(source, numeric=False, header=header)
    if names.ndim == 2 and names.shape[1] != 1:
        raise DataError(f"{source}: class names must be one column, found {names.shape[1]}")
    import pandas as pd

    names = names.reshape(-1)
    # an empty cell (a missing Parquet value) becomes "", never the class "nan" or "None"
    return np.where(pd.isna(names), "", names).astype(str)


def as_matrix(x: np.ndarray, source: ArraySource, modality: str | None = None) -> np.ndarray:
    """(N,) → (N, 1); (N, d1, d2, …) → (N, d1·d2·…); numbers only, in their own dtype.

    NaN/inf are refused with their count and first row; finite float64 values beyond float32's
    range (|x| > 3.4e38; models train in float32) with their count and range.
    """
    where = f"{source} (modality {modality!r})" if modality else str(source)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{source}: array of {x.dtype} values, expected numbers")
    if x.ndim == 0:
        raise DataError(f"{source}: a single number, expected rows of examples")
    if x.size == 0:
        raise DataError(f"{source}: no values (array of shape {tuple(x.shape)}), expected rows of examples")
    x = x.reshape(x.shape[0], -1) if x.ndim != 1 else x[:, None]
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        if bad.any():
            row = int(np.nonzero(bad.any(1))[0][0])
            raise DataError(
                f"{where}: {int(bad.sum())} NaN/inf values, the first in row {row}; remove or impute them"
            )
        problem = float32_overflow(x, where)
        if problem:
            raise DataError(problem)
    if x.shape[1] == 0:
        raise DataError(f"{source}: no features (shape {x.shape})")
    return x


def label_matrix(
    y: np.ndarray, source: ArraySource, names: Sequence[str] | None
) -> tuple[np.ndarray, list, bool]:
    """Labels → (one-/multi-hot (N, C) float32, class names, single-label?).

    A vector (or (N, 1)) holds class ids or names; a wider 0/1 matrix one column per class.
    """
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 1:
        values = y
        if y.dtype.kind == "f":
            if not np.isfinite(y).all():
                raise DataError(
                    f"{source}: {int((~np.isfinite(y)).sum())} labels are empty or NaN/inf, the first in row "
                    f"{int(np.argmin(np.isfinite(y)))}; give every example a class (or remove the rows from "
                    "every file)"
                )
            if (y != np.round(y)).any():
                row = int(np.nonzero(y != np.round(y))[0][0])
                raise DataError(f"{source}: label {y[row]} in row {row} is not a class id (a whole number)")
            values = y.astype(np.int64)
        classes, index = np.unique(values, return_inverse=True)
        onehot = np.eye(len(classes), dtype=np.float32)[index]
        class_names = [str(c) for c in classes.tolist()]
        return onehot, _names(class_names, names, source), True
    if y.ndim != 2 or y.dtype.kind not in "biuf":
        raise DataError(
            f"{source}: labels of shape {y.shape}, expected class ids (N,) or a 0/1 matrix (N, C)"
        )
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"{source}: a label matrix must hold only 0 and 1 (one column per class)")
    single = bool((y.sum(1) == 1).all())
    return y.astype(np.float32), _names([str(i) for i in range(y.shape[1])], names, source), single


def _names(found: list[str], given: Sequence[str] | None, source: ArraySource) -> list[str]:
    if given is None:
        return found
    if len(given) != len(found):
        raise DataError(f"data.label_names names {len(given)} classes, but {source} has {len(found)}")
    return [str(n) for n in given]


class ArrayFiles(MultimodalDataModule):
    """Modalities from array files (docs/data.md §3).

    Args:
        files: ``{modality: file}`` (``name.npz:key`` selects an array), or one ``.npz`` path whose
            arrays are the modalities.
        labels: optional file of labels (class ids or a 0/1 matrix).
        units: ``{modality: bernoulli | gaussian | softmax}`` (default gaussian).
        binarize: ``{modality: threshold | sample}`` for Bernoulli modalities.
        threshold: the threshold of ``binarize: threshold`` (a number, or ``{modality: number}``).
        standardize: z-score Gaussian modalities with training statistics.
        fractions: train/val/test fractions of the rows (when ``split_files`` is None).
        seed: seed of the split and of ``binarize: sample``.
        split_files: ``{train, val, test: file of row indices}``.
        root: directory relative paths are resolved against (default: the working directory).
        label_names: names of the classes (default: the class ids found).
        csv_header: text files have a header row: ``auto`` (when the first row holds a non-number),
            ``true`` or ``false``.
        **kwargs: :class:`MultimodalDataModule` arguments (batch_size, max_examples, modalities, …).

    Raises (from :meth:`setup`):
        DataError: one line naming the file and key (see docs/data.md §3).
    """

    def __init__(
        self,
        files: Mapping[str, str] | str | None = None,
        labels: str | None = None,
        units: Mapping[str, str] | None = None,
        binarize: Mapping[str, str] | None = None,
        threshold: float | Mapping[str, float] = 0.5,
        standardize: bool = True,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        seed: int = 0,
        split_files: Mapping[str, str] | None = None,
        root: str | None = None,
        label_names: Sequence[str] | None = None,
        csv_header: bool | str = "auto",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.files = files
        self.labels_file = labels
        self.units = dict(units or {})
        self.binarize = {m: b for m, b in (binarize or {}).items() if b is not None}
        self.threshold = threshold
        self.standardize = bool(standardize)
        self.fractions = tuple(fractions)
        self.seed = int(seed)
        self.split_files = None if split_files is None else dict(split_files)
        self.root = Path(root).expanduser() if root else Path.cwd()
        self.given_label_names = None if label_names is None else list(label_names)
        self.csv_header = {True: "true", False: "false"}.get(csv_header, str(csv_header))
        self.single_label = True
        self.sources: dict[str, ArraySource] = {}
        self.label_source: ArraySource | None = None
        #: row indices of each split into the files
        self.indices: dict[str, np.ndarray] = {}
        #: ``{modality: (mean, std)}`` float64 of the standardised (Gaussian) modalities
        self.stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.sha256: dict[str, str] = {}
        self._fixed_stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    # ----------------------------------------------------------------- options
    def _modality_sources(self) -> dict[str, ArraySource]:
        files = self.files
        if files is None or (isinstance(files, Mapping) and not files) or files == "":
            raise DataError(
                "data.files names no file: give one per modality, e.g. 'data.files={pix: pix.npy, fou: fou.parquet}', "
                "or one .npz (data.files=all.npz)"
            )
        if isinstance(files, Mapping):
            out = {str(m): parse_source(f, self.root) for m, f in files.items()}
        else:
            npz = parse_source(files, self.root)
            if npz.path.suffix.lower() != ".npz" or npz.key is not None:
                raise DataError(
                    f"data.files={files}: a single file must be an .npz whose arrays are the modalities; "
                    "otherwise map names to files, e.g. 'data.files={a: a.npy, b: b.csv}'"
                )
            if not npz.path.is_file():
                raise DataError(f"data file not found: {npz.path}")
            with np.load(npz.path, allow_pickle=False) as z:
                keys = list(z.files)
            label = parse_source(self.labels_file, self.root) if self.labels_file else None
            out = {
                k: ArraySource(npz.path, k) for k in keys if not (label and label == ArraySource(npz.path, k))
            }
        for m in out:
            if not NAME.fullmatch(m) or m in RESERVED or m.startswith("no_"):
                raise DataError(
                    f"data.files: modality name {m!r} is not allowed; use letters, digits and _ (starting with a "
                    f"letter), not {', '.join(RESERVED)} or no_*"
                )
        if len(out) < 2:
            raise DataError(
                f"data.files names {len(out)} modality ({list(out)}); a multimodal model needs >= 2"
            )
        return out

    def _check_options(self, names: list[str]) -> None:
        if self.csv_header not in ("auto", "true", "false"):
            raise DataError(f"data.csv_header={self.csv_header!r}; allowed: auto, true, false")
        for what, value in (("data.units", self.units), ("data.binarize", self.binarize)):
            unknown = sorted(set(value) - set(names))
            if unknown:
                raise DataError(f"{what} names {unknown}, which data.files does not; modalities: {names}")
        for m, u in self.units.items():
            if u not in DATA_UNIT_TYPES:
                raise DataError(f"data.units.{m}={u!r}; allowed: {', '.join(DATA_UNIT_TYPES)}")
        for m, b in self.binarize.items():
            if b not in BINARIZE:
                raise DataError(f"data.binarize.{m}={b!r}; allowed: {', '.join(BINARIZE)} (or null)")
            if self.units.get(m, "gaussian") != "bernoulli":
                raise DataError(
                    f"data.binarize.{m}={b} needs data.units.{m}=bernoulli (++data.units.{m}=bernoulli)"
                )
        if isinstance(self.threshold, Mapping):
            unknown = sorted(set(self.threshold) - set(names))
            if unknown:
                raise DataError(
                    f"data.threshold names {unknown}, which data.files does not; modalities: {names}"
                )

    def default_units(self, m: str) -> str:
        """The unit type ``data.units`` gives ``m`` (Gaussian when it names none)."""
        return str(self.units.get(m, "gaussian"))

    def describe_modality(self, m: str) -> str:
        source = self.sources.get(m)
        return f"modality {m!r} ({source})" if source else f"modality {m!r}"

    def unit_fix(self, m: str, units: str) -> str:
        if units == "bernoulli":
            return (
                f"binarise it (++data.binarize.{m}=threshold: 1 where x > data.threshold; or =sample for values in "
                f"[0, 1]), rescale the file to [0, 1], or model it as Gaussian (++data.units.{m}=gaussian)"
            )
        if units == "softmax":
            return f"give counts of words per example, or model it as Gaussian (++data.units.{m}=gaussian)"
        return super().unit_fix(m, units)

    # ----------------------------------------------------------------- loading
    def _read_modalities(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        first: str | None = None
        for m, src in self.sources.items():
            x = as_matrix(read_array(src, header=self.csv_header), src, m)
            if first is not None and x.shape[0] != arrays[first].shape[0]:
                raise DataError(
                    f"{src}: {x.shape[0]} rows, but {self.sources[first]} has {arrays[first].shape[0]}; "
                    "rows are examples and must align across files"
                )
            first = first or m
            arrays[m] = x
            self.sha256[str(src)] = sha256_file(src.path)
        return arrays

    def _read_labels(self, n: int) -> np.ndarray:
        if not self.labels_file:
            self.label_names, self.single_label = [], True
            return np.zeros((n, 0), np.float32)
        src = self.label_source
        y = read_labels(src, self.csv_header)
        if self.csv_header == "auto" and y.dtype.kind in "US" and y.shape[0] == n + 1:
            # class names cannot tell a header from a class by type: one row more than the
            # examples is a header row
            log.info("%s: first row %r taken as the header (one row more than the %d examples)", src, y[0], n)
            y = y[1:]
        if self.csv_header == "auto" and y.dtype.kind == "f" and y.shape[0] == n + 1 and y.ndim <= 2:
            row = y.reshape(n + 1, -1)[0]
            if np.array_equal(row, np.arange(row.size)):
                # an unnamed pandas Series/DataFrame written with to_csv(index=False): header 0[,1,…]
                log.warning(
                    "%s: first row %s taken as the header (one row more than the %d examples)", src, row, n
                )
                y = y[1:]
        if y.shape[0] != n:
            first = next(iter(self.sources.values()))
            raise DataError(f"{src}: {y.shape[0]} labels, but {first} has {n} rows; they must align")
        if y.dtype.kind in "US":
            empty = np.char.strip(y) == ""
            if empty.any():
                raise DataError(
                    f"{src}: {int(empty.sum())} labels are empty, the first in row {int(np.argmax(empty))}; "
                    "give every example a class (or remove the rows from every file)"
                )
        onehot, names, single = label_matrix(y, src, self.given_label_names)
        self.label_names, self.single_label = names, single
        return onehot

    def _read_indices(self, n: int) -> dict[str, np.ndarray]:
        unknown = sorted(set(self.split_files) - {"train", "val", "test"})
        missing = sorted({"train", "val", "test"} - set(self.split_files))
        if unknown or missing:
            raise DataError(
                f"data.split_files needs exactly train, val, test index files (unknown {unknown}, missing {missing})"
            )
        parts = {}
        for name in ("train", "val", "test"):
            src = parse_source(self.split_files[name], self.root)
            idx = read_array(src, header=self.csv_header).reshape(-1)
            if idx.dtype.kind == "f":
                if not np.isfinite(idx).all() or (idx != np.round(idx)).any():
                    raise DataError(f"{src}: row indices must be whole numbers")
                idx = idx.astype(np.int64)
            if idx.dtype.kind not in "iu":
                raise DataError(f"{src}: row indices must be integers, got {idx.dtype}")
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise DataError(f"{src}: row indices must lie in 0..{n - 1} (the files hold {n} rows)")
            parts[name] = idx.astype(np.int64)
        joined = np.concatenate(list(parts.values()))
        if len(np.unique(joined)) != len(joined):
            raise DataError(
                "data.split_files: the train/val/test index files share rows; they must be disjoint"
            )
        return parts

    def _split_rows(self, n: int, labels: np.ndarray) -> dict[str, np.ndarray]:
        if self.split_files is not None:
            return self._read_indices(n)
        fr = np.asarray(self.fractions, dtype=np.float64)
        if fr.shape != (3,) or (fr <= 0).any() or abs(fr.sum() - 1.0) > 1e-6:
            raise DataError(
                f"data.fractions={list(self.fractions)}: give three positive train/val/test fractions summing to 1"
            )
        if labels.shape[1] > 0 and self.single_label:
            parts = stratified_split(labels.argmax(1), tuple(fr), self.seed)
        else:
            perm = np.random.default_rng(self.seed).permutation(n)
            parts = np.split(perm, np.round(np.cumsum(fr[:-1]) * n).astype(int))
        return dict(zip(("train", "val", "test"), parts, strict=True))

    def _preprocess(self, m: str, x: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
        units = self.default_units(m)
        src = self.sources[m]
        if units == "gaussian":
            if not self.standardize:
                return x.astype(np.float32)
            if self._fixed_stats is not None:
                if m not in self._fixed_stats or self._fixed_stats[m][0].shape != (x.shape[1],):
                    have = {k: int(v[0].shape[0]) for k, v in self._fixed_stats.items()}
                    raise DataError(
                        f"{src}: {x.shape[1]} features, but the checkpoint's statistics are for the modalities "
                        f"{have}; evaluate on files with the training data's modalities"
                    )
                mean, std = self._fixed_stats[m]
            else:
                if len(train_rows) == 0:
                    raise DataError(f"{src}: the train split is empty, nothing to standardise with")
                mean, std = zscore_stats(x[train_rows])
            self.stats[m] = (mean, std)
            return apply_zscore(x, mean, std)
        how = self.binarize.get(m)
        if how == "threshold":
            t = self.threshold.get(m, 0.5) if isinstance(self.threshold, Mapping) else self.threshold
            return (x > float(t)).astype(np.float32)
        if how == "sample":
            if x.min() < 0 or x.max() > 1:
                raise DataError(
                    f"{src}: binarize=sample draws Bernoulli(x) and needs values in [0, 1], found "
                    f"[{x.min():.4g}, {x.max():.4g}]; use ++data.binarize.{m}=threshold or rescale the file"
                )
            rng = np.random.default_rng([self.seed, list(self.sources).index(m)])
            return (rng.random(x.shape) < x).astype(np.float32)
        return x.astype(np.float32)

    def load_splits(self) -> dict[str, Split]:
        self.sources = self._modality_sources()
        names = list(self.sources)
        self._check_options(names)
        self.label_source = parse_source(self.labels_file, self.root) if self.labels_file else None
        self.stats, self.sha256 = {}, {}
        arrays = self._read_modalities()
        n = next(iter(arrays.values())).shape[0]
        labels = self._read_labels(n)
        parts = self._split_rows(n, labels)
        for name, idx in parts.items():
            if len(idx) == 0:
                raise DataError(
                    f"the {name} split is empty ({n} examples, "
                    + (
                        f"data.split_files.{name})"
                        if self.split_files
                        else f"data.fractions={list(self.fractions)})"
                    )
                    + "; every split needs at least one example"
                )
        if labels.shape[1] > 0 and self.single_label and len(np.unique(labels[parts["train"]].argmax(1))) < 2:
            raise DataError(
                f"{self.label_source}: the train split holds fewer than 2 classes; the linear probe needs 2"
            )
        self.indices = parts
        mods = {m: self._preprocess(m, x, parts["train"]) for m, x in arrays.items()}
        y = torch.from_numpy(labels)
        return {
            s: Split({m: torch.from_numpy(np.ascontiguousarray(x[idx])) for m, x in mods.items()}, y[idx])
            for s, idx in parts.items()
        }

    # ------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict:
        """The standardisation statistics (float64 tensors), files and their sha256; Lightning checkpoints it."""
        return {
            "format": STATE_FORMAT,
            "standardization": {
                m: {"mean": torch.from_numpy(mean.copy()), "std": torch.from_numpy(std.copy())}
                for m, (mean, std) in self.stats.items()
            },
            "files": {m: str(s) for m, s in self.sources.items()},
            "sha256": dict(self.sha256),
        }

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Standardise with the statistics of ``state_dict`` (those of the training run) from now on.

        Data already loaded with other statistics are loaded again.
        """
        stats = {
            m: (_float64(s["mean"]), _float64(s["std"]))
            for m, s in (state_dict.get("standardization") or {}).items()
        }
        self._fixed_stats = stats
        if not self.splits:
            return
        same = set(stats) == set(self.stats) and all(
            np.array_equal(stats[m][0], self.stats[m][0]) and np.array_equal(stats[m][1], self.stats[m][1])
            for m in stats
        )
        if not same:
            log.info("standardising %s with the checkpoint's training statistics", sorted(stats))
            self.splits = {}
            self.setup()


def _float64(t) -> np.ndarray:
    """A checkpoint's statistic as float64 (checkpoints of earlier releases hold float32 ones)."""
    return t.double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float64)
