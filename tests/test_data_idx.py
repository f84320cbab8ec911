"""data=idx_images: IDX image sets (gzip or not, any checksum or none) cut into modalities.

The IDX files are written from the real MNIST files: the first 1,200 training and 300 test digits.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from helpers import compose_job
from mmvi.data.idx import IDXImages, ImageCut
from mmvi.data.mnist import MNIST_SHA256
from mmvi.errors import DataError


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _read_mnist(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope="module")
def digits(shared_data) -> dict[str, np.ndarray]:
    d = shared_data / "mnist"
    return {
        "train_images": _read_mnist(d / "train-images-idx3-ubyte.gz")[:1200],
        "train_labels": _read_mnist(d / "train-labels-idx1-ubyte.gz")[:1200],
        "test_images": _read_mnist(d / "t10k-images-idx3-ubyte.gz")[:300],
        "test_labels": _read_mnist(d / "t10k-labels-idx1-ubyte.gz")[:300],
    }


NAMES = {
    "train_images": "lab-train-images.idx",
    "train_labels": "lab-train-labels.idx.gz",
    "test_images": "lab-test-images.idx.gz",
    "test_labels": "lab-test-labels.idx",
}


@pytest.fixture(scope="module")
def folder(digits, tmp_path_factory) -> Path:
    """A lab's own IDX set: its own file names, two of them gzip-compressed, two not."""
    d = tmp_path_factory.mktemp("idx")
    for key, name in NAMES.items():
        raw = _idx_bytes(digits[key])
        (d / name).write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    return d


def test_grid_cut_of_an_idx_set_without_checksums(folder, digits):
    dm = IDXImages(data_dir=str(folder), files=NAMES, cut="grid", grid=[2, 2], n_val=200)
    dm.setup()
    assert dm.modality_sizes == {"r0c0": 196, "r0c1": 196, "r1c0": 196, "r1c1": 196}
    assert {s: len(x) for s, x in dm.splits.items()} == {"train": 1000, "val": 200, "test": 300}
    assert dm.label_names == [str(d) for d in range(10)]
    # the last n_val training images are the validation split; labels from the label files
    val = dm.splits["val"]
    assert (val.labels.argmax(1).numpy() == digits["train_labels"][1000:]).all()
    joined = dm.example_images(val.modalities)
    torch.testing.assert_close(joined, torch.from_numpy(digits["train_images"][1000:] / 255.0).float())
    assert torch.equal(val.modalities["r0c1"][0].reshape(14, 14), joined[0, :14, 14:])
    # a piece left out stays blank
    partial = dm.example_images({"r1c1": val.modalities["r1c1"][:2]})
    assert torch.isnan(partial[:, :14]).all() and not torch.isnan(partial[:, 14:, 14:]).any()
    assert dm.modality_specs()["r1c0"]["units"] == "bernoulli"


def test_own_checksums_are_checked(folder, digits):
    sha = {key: hashlib.sha256(_idx_bytes(digits[key])).hexdigest() for key in NAMES}
    dm = IDXImages(data_dir=str(folder), files=NAMES, sha256=sha, cut="rows", n_val=200)
    dm.setup()
    assert list(dm.modality_sizes) == ["top", "bottom"]
    sha["test_images"] = "0" * 64
    with pytest.raises(DataError, match=r"checksum mismatch for .*lab-test-images\.idx\.gz"):
        IDXImages(data_dir=str(folder), files=NAMES, sha256=sha, n_val=200).setup()


def test_gz_is_found_with_or_without_the_suffix(folder, digits, tmp_path):
    for name in NAMES.values():
        (tmp_path / name.removesuffix(".gz")).write_bytes((folder / name).read_bytes())
    dm = IDXImages(data_dir=str(tmp_path), files=NAMES, n_val=200)
    dm.setup()
    assert torch.equal(
        dm.splits["test"].modalities["left"][:, :14],
        torch.from_numpy(digits["test_images"][:, 0, :14] / np.float32(255)),
    )


def test_bad_idx_files_are_one_line(folder, digits, tmp_path):
    names = dict(NAMES)
    for name in names.values():
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    raw = _idx_bytes(digits["train_images"])
    (tmp_path / names["train_images"]).write_bytes(raw[:-500])
    with pytest.raises(DataError, match=r"lab-train-images\.idx: the IDX header says shape \(1200, 28, 28\)"):
        IDXImages(data_dir=str(tmp_path), files=names, n_val=200).setup()
    (tmp_path / names["train_images"]).write_bytes(b"PK\x03\x04" + raw[4:])
    with pytest.raises(DataError, match=r"lab-train-images\.idx: not an IDX file"):
        IDXImages(data_dir=str(tmp_path), files=names, n_val=200).setup()
    (tmp_path / names["train_images"]).write_bytes(raw)
    (tmp_path / names["test_labels"]).write_bytes(_idx_bytes(digits["test_labels"][:299]))
    with pytest.raises(DataError, match=r"test label file holds 299 labels for 300 images"):
        IDXImages(data_dir=str(tmp_path), files=names, n_val=200).setup()
    with pytest.raises(DataError, match=r"data file not found: .*train-images-idx3-ubyte\.gz"):
        IDXImages(data_dir=str(tmp_path)).setup()
    with pytest.raises(DataError, match=r"data.n_val=1200 leaves no training images"):
        IDXImages(data_dir=str(folder), files=NAMES, n_val=1200).setup()
    with pytest.raises(DataError, match=r"data.data_dir is not set"):
        IDXImages().setup()


def test_cuts_divide_any_size_and_invert():
    images = torch.rand(3, 28, 27)
    cut = ImageCut(28, 27, "grid", [3, 2])
    assert cut.names == ["r0c0", "r0c1", "r1c0", "r1c1", "r2c0", "r2c1"]
    assert cut.sizes() == {"r0c0": 140, "r0c1": 130, "r1c0": 126, "r1c1": 117, "r2c0": 126, "r2c1": 117}
    pieces = cut.split(images)
    assert sum(x.shape[1] for x in pieces.values()) == 28 * 27
    torch.testing.assert_close(cut.join(pieces), images)
    assert list(ImageCut(28, 28, "columns").split(torch.rand(2, 28, 28)).keys()) == ["left", "right"]
    for bad, msg in (
        (("diagonal", None), "data.cut='diagonal'; allowed: columns, rows, grid"),
        (("grid", [1, 1]), r"r\*c >= 2"),
        (("grid", [2]), "two integers"),
        (("grid", [29, 1]), "more pieces"),
    ):
        with pytest.raises(DataError, match=msg):
            ImageCut(28, 28, *bad)


def test_cli_interface_and_mnist_preset_compose(folder, tmp_path):
    """``data=idx_images data.data_dir=<folder> data.sha256=null data.cut=grid 'data.grid=[2,2]'``."""
    cfg = compose_job(
        "train",
        ["data=idx_images", f"data.data_dir={folder}", "data.sha256=null", "data.cut=grid", "data.grid=[2,2]"]
        + [f"data.files.{k}={v}" for k, v in NAMES.items()]
        + ["data.n_val=200"],
        tmp_path / "run",
    )
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup()
    assert list(dm.modality_specs()) == ["r0c0", "r0c1", "r1c0", "r1c1"]
    mnist = compose_job("train", ["data=mnist"], tmp_path / "run2")
    assert (
        dict(mnist.data.sha256) == MNIST_SHA256 and mnist.data.cut == "columns" and mnist.data.n_val == 10000
    )
    assert mnist.data._target_ == "mmvi.data.mnist.MNISTHalves"
