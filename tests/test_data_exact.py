"""data=arrays reads user files exactly: large offsets, values beyond float32, empty labels, pandas headers.

Files are written in a tmp dir from the real UCI mfeat views (every 4th digit: 500 rows, 50 per
class), plus a view of timestamps on a large offset.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import tiny_checkpoint
from mmvi.data.arrays import ArrayFiles
from mmvi.data.base import DataError, load_data_state

OFFSET = 1.7e9  # seconds since 1970: float32's spacing there is 128 s
# stratified 84/6/10 % of 50 digits per class: 42 per class, 420 training rows
FRACTIONS = (0.84, 0.06, 0.10)


@pytest.fixture(scope="module")
def mfeat(shared_data) -> dict[str, np.ndarray]:
    out = {}
    for view in ("pix", "kar"):
        table = pd.read_csv(shared_data / "uci_mfeat" / f"mfeat-{view}.csv").to_numpy()[::4]
        out[view], out["y"] = table[:, :-1], table[:, -1].astype(np.int64)
    return out


@pytest.fixture(scope="module")
def folder(mfeat, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("exact")
    np.save(d / "pix.npy", mfeat["pix"])
    np.save(d / "labels.npy", mfeat["y"])
    # a timestamp per digit, a quarter of a second apart, in the digits' order
    stamps = OFFSET + 0.25 * np.arange(500, dtype=np.float64)
    np.save(d / "time.npy", stamps)
    np.save(d / "time_later.npy", stamps + 30.0)
    return d


def _dm(folder: Path, **kwargs) -> ArrayFiles:
    kwargs.setdefault("files", {"pix": "pix.npy", "time": "time.npy"})
    kwargs.setdefault("labels", "labels.npy")
    kwargs.setdefault("fractions", FRACTIONS)
    dm = ArrayFiles(root=str(folder), **kwargs)
    dm.setup()
    return dm


def _checkpoint(dm: ArrayFiles, tmp_path: Path) -> Path:
    """A real Lightning checkpoint of a tiny model trained one step on ``dm``."""
    return tiny_checkpoint(dm, tmp_path, n_hidden=4, batches=1)


def test_a_view_on_a_large_offset_is_standardised_in_float64(folder, tmp_path):
    """420 distinct training timestamps stay 420 distinct z-scores, equal to a float64 reference;
    the float64 statistics travel with the checkpoint and standardise other files identically."""
    dm = _dm(folder)
    stamps = np.load(folder / "time.npy")
    train = stamps[dm.indices["train"]]
    assert len(train) == 420 == len(np.unique(train))
    z = dm.splits["train"].modalities["time"].numpy()[:, 0]
    assert z.dtype == np.float32 and len(np.unique(z)) == 420
    mean, std = dm.stats["time"]
    assert mean.dtype == std.dtype == np.float64
    for split, idx in dm.indices.items():
        ref = (stamps[idx] - train.mean()) / train.std()
        got = dm.splits[split].modalities["time"].numpy()[:, 0].astype(np.float64)
        assert np.abs(got - ref).max() < 1e-6, split  # float32 rounding of z-scores within ±2
    # the checkpoint keeps the float64 statistics; other files are standardised with them exactly
    ckpt = _checkpoint(dm, tmp_path)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["ArrayFiles"]
    assert state["standardization"]["time"]["mean"].dtype == torch.float64
    later = ArrayFiles(
        root=str(folder), files={"pix": "pix.npy", "time": "time_later.npy"}, fractions=FRACTIONS
    )
    assert load_data_state(later, ckpt)
    later.setup()
    got = later.splits["test"].modalities["time"].numpy()[:, 0].astype(np.float64)
    ref = (stamps[later.indices["test"]] + 30.0 - train.mean()) / train.std()
    assert np.abs(got - ref).max() < 1e-6


def test_finite_values_beyond_float32_are_named_as_such(folder, mfeat):
    kar = mfeat["kar"].copy()
    kar[[5, 9, 9], [0, 3, 4]] = [1e39, -2e39, 3e300]
    np.save(folder / "kar_huge.npy", kar)
    with pytest.raises(DataError) as err:
        _dm(folder, files={"pix": "pix.npy", "kar": "kar_huge.npy"})
    msg = str(err.value)
    assert "kar_huge.npy (modality 'kar'): 3 finite values beyond float32's range" in msg
    assert "in [-2e+39, 3e+300], the first in row 5" in msg
    assert "NaN" not in msg and "impute" not in msg and "\n" not in msg


def test_class_names_with_empty_cells_are_refused_like_numeric_gaps(folder, mfeat):
    names = pd.Series([f"digit {d}" for d in mfeat["y"]], name="digit")
    gaps = np.arange(3, 500, 16)[:30]
    names.iloc[gaps] = None
    names.to_csv(folder / "names_gaps.csv", index=False)  # header "digit"; empty cells
    with pytest.raises(DataError) as err:
        _dm(folder, labels="names_gaps.csv")
    assert str(err.value).endswith(
        "names_gaps.csv: 30 labels are empty, the first in row 3; give every example a class "
        "(or remove the rows from every file)"
    )
    numeric = mfeat["y"].astype(np.float64)
    numeric[gaps] = np.nan
    pd.Series(numeric, name="digit").to_csv(folder / "ids_gaps.csv", index=False)
    with pytest.raises(
        DataError, match=r"ids_gaps\.csv: 30 labels are empty or NaN/inf, the first in row 3;"
    ):
        _dm(folder, labels="ids_gaps.csv")
    # names pandas would read as missing by default ("NA", "null") are names
    special = np.array(["NA", "null", "nan", "None", "zero", "one", "two", "three", "four", "five"])
    pd.Series(special[mfeat["y"]], name="class").to_csv(folder / "names_na.csv", index=False)
    dm = _dm(folder, labels="names_na.csv")
    assert dm.label_names == sorted(special.tolist())
    assert dm.splits["train"].labels.sum(0).tolist() == [42.0] * 10


def test_the_header_pandas_writes_for_unnamed_columns_is_not_an_example(folder, mfeat, caplog):
    """``DataFrame.to_csv(index=False)`` of an unnamed frame writes the header 0,1,…,63: 60 rows are
    60 examples, the first the file's first row of numbers."""
    pd.DataFrame(mfeat["kar"][:60]).to_csv(folder / "kar60.csv", index=False)
    np.save(folder / "pix60.npy", mfeat["pix"][:60])
    assert (folder / "kar60.csv").read_text().splitlines()[0] == ",".join(map(str, range(64)))
    with caplog.at_level(logging.WARNING, logger="mmvi.data.arrays"):
        dm = _dm(folder, files={"pix": "pix60.npy", "kar": "kar60.csv"}, labels=None, standardize=False)
    assert sum(len(s) for s in dm.splits.values()) == 60
    rows = np.concatenate([dm.splits[s].modalities["kar"].numpy() for s in dm.indices])
    order = np.concatenate(list(dm.indices.values()))
    np.testing.assert_allclose(rows, mfeat["kar"][:60][order], rtol=1e-6)
    assert "taken as the column names pandas writes" in caplog.text
    # csv_header=false keeps it as an example (61 rows, which the other file does not have)
    with pytest.raises(DataError, match=r"kar60\.csv: 61 rows, but .*pix60\.npy has 60"):
        _dm(folder, files={"pix": "pix60.npy", "kar": "kar60.csv"}, labels=None, csv_header=False)
    # an unnamed Series of class ids is written with the header 0: one row more than the examples
    pd.Series(mfeat["y"][:60]).to_csv(folder / "y60.csv", index=False)
    dm = _dm(folder, files={"pix": "pix60.npy", "kar": "kar60.csv"}, labels="y60.csv")
    assert dm.splits["train"].labels.shape[1] == 2  # classes 0 and 1, no class from the header


def test_a_first_row_0_1_of_two_whole_number_columns_stays_an_example_with_a_warning(folder, mfeat, caplog):
    counts = mfeat["pix"][:, [0, 5]].astype(np.int64) + 2
    counts[0] = [0, 1]
    pd.DataFrame(counts).to_csv(folder / "counts.csv", index=False, header=False)
    with caplog.at_level(logging.WARNING, logger="mmvi.data.arrays"):
        dm = _dm(folder, files={"pix": "pix.npy", "counts": "counts.csv"})
    assert sum(len(s) for s in dm.splits.values()) == 500
    assert "may be a header" in caplog.text and "data.csv_header=true" in caplog.text
    # two 0/1 columns whose other rows hold 0,1 too: data, no warning
    bits = (mfeat["pix"][:, :2] > 3).astype(np.int64)
    bits[0] = [0, 1]
    assert ((bits[1:] == [0, 1]).all(1)).any()
    pd.DataFrame(bits).to_csv(folder / "bits.csv", index=False, header=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mmvi.data.arrays"):
        dm = _dm(folder, files={"pix": "pix.npy", "bits": "bits.csv"}, units={"bits": "bernoulli"})
    assert sum(len(s) for s in dm.splits.values()) == 500 and "header" not in caplog.text
