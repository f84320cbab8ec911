"""MIR-Flickr ``source=features``: the preprocessed-release layout, written small and synthetic.

Format test only: 3 labelled shards of 10 rows, 2 unlabelled shards (7 + 5 rows); image column 0
holds each row's global index so order and pairing can be checked after standardisation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mmvi.data import mirflickr as mf
from mmvi.data.mirflickr import IMAGE_DIM, TEXT_DIM, MIRFlickr
from mmvi.errors import DataError

LAB_SHARDS = ["combined-00001-of-00100.npy", "combined-00002-of-00100.npy", "combined-00003_0-of-00100.npy"]
UNL_SHARDS = {"combined-00003_1-of-00100.npy": 7, "combined-00004-of-00100.npy": 5}
N_LAB = 30
UNL_OFFSET = 1000.0


def _image_rows(rng: np.random.Generator, ids: np.ndarray) -> np.ndarray:
    x = rng.normal(3.0, 2.0, size=(len(ids), IMAGE_DIM)).astype(np.float32)
    x[:, 0] = ids
    return x


def write_release(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the documented layout under ``root``; return the arrays written."""
    rng = np.random.default_rng(seed)
    (root / "image" / "labelled").mkdir(parents=True)
    (root / "image" / "unlabelled").mkdir(parents=True)
    (root / "text").mkdir()
    (root / "splits").mkdir()
    image = _image_rows(rng, np.arange(N_LAB, dtype=np.float32))
    for k, name in enumerate(LAB_SHARDS):
        np.save(root / "image" / "labelled" / name, image[10 * k : 10 * (k + 1)])
    counts = sp.random(N_LAB, TEXT_DIM, density=0.002, format="csr", random_state=seed, dtype=np.float64)
    counts.data[:] = rng.integers(1, 4, size=counts.nnz)
    counts = (
        counts
        + sp.csr_matrix((np.full(N_LAB, 2.0), (np.arange(N_LAB), np.arange(N_LAB))), shape=(N_LAB, TEXT_DIM))
    ).tocsr()
    sp.save_npz(root / "text" / "text_all_2000_labelled.npz", counts)
    labels = rng.integers(0, 2, size=(N_LAB, 38)).astype(np.float64)
    np.save(root / "labels.npy", labels)
    for fold in range(1, 6):
        perm = np.random.default_rng(100 + fold).permutation(N_LAB)
        for stem, idx in (("train", perm[:15]), ("valid", perm[15:20]), ("test", perm[20:])):
            np.save(root / "splits" / f"{stem}_indices_{fold}.npy", idx)
    # unlabelled: release-style npz (data/indices/indptr/shape, no "format"); row i has tag i (+ a few)
    n_unl = sum(UNL_SHARDS.values())
    unl_image = _image_rows(rng, UNL_OFFSET + np.arange(n_unl, dtype=np.float32))
    start = 0
    for name, n in UNL_SHARDS.items():
        np.save(root / "image" / "unlabelled" / name, unl_image[start : start + n].astype(np.float64))
        start += n
    unl = sp.lil_matrix((n_unl, TEXT_DIM))
    for i in range(n_unl):
        unl[i, i] = 3.0
        unl[i, 100 + np.arange(i % 4)] = 1.0  # row i has 1 + i % 4 tags
    unl = unl.tocsr()
    np.savez(
        root / "text" / "text_all_2000_unlabelled.npz",
        data=unl.data,
        indices=unl.indices,
        indptr=unl.indptr,
        shape=np.array(unl.shape),
    )
    return {"image": image, "text": counts.toarray(), "labels": labels, "unl_image": unl_image}


@pytest.fixture
def release(tmp_path):
    root = tmp_path / "flickr"
    return root, write_release(root)


def load(root: Path, **kwargs) -> MIRFlickr:
    dm = MIRFlickr(source="features", data_dir=str(root), **kwargs)
    dm.setup()
    return dm


def unstandardise(dm: MIRFlickr, x: torch.Tensor) -> np.ndarray:
    return x.numpy() * dm.image_std + dm.image_mean


def test_splits_order_standardisation_and_binary_text(release):
    root, arrays = release
    dm = load(root, fold=2)
    assert dm.modality_sizes == {"image": IMAGE_DIM, "text": TEXT_DIM}
    assert not dm.single_label and len(dm.label_names) == 38
    for split, stem in (("train", "train"), ("val", "valid"), ("test", "test")):
        idx = np.load(root / "splits" / f"{stem}_indices_2.npy")
        s = dm.splits[split]
        ids = unstandardise(dm, s.modalities["image"])[:, 0]
        assert np.allclose(ids, idx, atol=1e-3)  # shards concatenated in sorted name order
        assert np.allclose(unstandardise(dm, s.modalities["image"]), arrays["image"][idx], atol=1e-3)
        assert torch.equal(
            s.modalities["text"], torch.from_numpy((arrays["text"][idx] > 0).astype(np.float32))
        )
        assert torch.equal(s.labels, torch.from_numpy(arrays["labels"][idx]).float())
    train = dm.splits["train"].modalities["image"].double()
    assert train.mean(0).abs().max() < 1e-4
    assert torch.allclose(train.std(0, unbiased=False), torch.ones(IMAGE_DIM, dtype=torch.float64), atol=1e-3)
    other = load(root, fold=3)
    assert not torch.equal(other.splits["test"].labels, dm.splits["test"].labels)


def test_min_tags_drops_training_documents_only(release):
    root, arrays = release
    full, dm = load(root), load(root, min_tags=2)
    n_tags = (arrays["text"] > 0).sum(1)
    train_idx = np.load(root / "splits" / "train_indices_1.npy")
    assert len(dm.splits["train"]) == int((n_tags[train_idx] >= 2).sum()) < len(full.splits["train"])
    assert (dm.splits["train"].modalities["text"].sum(1) >= 2).all()
    for s in ("val", "test"):
        assert torch.equal(dm.splits[s].modalities["text"], full.splits[s].modalities["text"])


def test_iter_unlabelled_streams_one_shard_at_a_time(release, monkeypatch):
    root, arrays = release
    dm = load(root)
    calls: list[tuple[str, str | None]] = []
    real_load = np.load

    def spy(path, *args, **kwargs):
        calls.append((Path(path).name, kwargs.get("mmap_mode")))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    stream = dm.iter_unlabelled(batch_size=4)
    first = next(stream)
    shard_calls = [c for c in calls if c[0] in UNL_SHARDS]
    assert shard_calls == [("combined-00003_1-of-00100.npy", "r")]  # only the first shard, memory-mapped
    batches = [first, *stream]
    shard_calls = [c for c in calls if c[0] in UNL_SHARDS]
    assert shard_calls == [(name, "r") for name in UNL_SHARDS]
    assert [len(b["image"]) for b in batches] == [4, 3, 4, 1]  # batches never span shards
    image = np.concatenate([unstandardise(dm, b["image"]) for b in batches])
    assert np.allclose(image, arrays["unl_image"], atol=1e-3)
    text = torch.cat([b["text"] for b in batches])
    assert set(text.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(text[:, :100].argmax(1), torch.arange(12))  # row i of the text matrix pairs row i
    # min_tags also skips unlabelled rows; shuffle permutes rows but keeps the pairs
    few = load(root, min_tags=3)
    kept = np.concatenate([unstandardise(few, b["image"])[:, 0] for b in few.iter_unlabelled(5)])
    assert np.allclose(np.sort(kept) - UNL_OFFSET, [i for i in range(12) if 1 + i % 4 >= 3], atol=1e-3)
    shuffled = list(dm.iter_unlabelled(batch_size=4, shuffle=True, seed=1))
    ids = np.concatenate([unstandardise(dm, b["image"])[:, 0] for b in shuffled]) - UNL_OFFSET
    assert sorted(np.round(ids).astype(int).tolist()) == list(range(12))
    assert not np.allclose(ids, np.arange(12))
    for b in shuffled:
        row = np.round(unstandardise(dm, b["image"])[:, 0] - UNL_OFFSET).astype(int)
        assert torch.equal(b["text"][:, :100].argmax(1), torch.from_numpy(row))


def test_missing_split_file(release):
    root, _ = release
    (root / "splits" / "valid_indices_1.npy").unlink()
    with pytest.raises(DataError, match=r"valid_indices_1\.npy.*flickr_data\.tar\.gz"):
        load(root)


def test_wrong_label_shape(release):
    root, arrays = release
    np.save(root / "labels.npy", arrays["labels"][:, :37])
    with pytest.raises(DataError, match=r"labels\.npy.*expected \(N, 38\)"):
        load(root)


def test_nan_feature(release):
    root, arrays = release
    bad = arrays["image"][10:20].copy()
    bad[4, 7] = np.nan
    np.save(root / "image" / "labelled" / LAB_SHARDS[1], bad)
    dm = MIRFlickr(source="features", data_dir=str(root))
    with pytest.raises(DataError, match=rf"{LAB_SHARDS[1]}.*NaN"):
        dm.setup()
    assert dm.splits == {}


def test_truncated_npy(release):
    root, _ = release
    shard = root / "image" / "labelled" / LAB_SHARDS[2]
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(DataError, match=rf"{LAB_SHARDS[2]}.*truncated"):
        load(root)


def test_row_count_and_index_errors(release):
    root, arrays = release
    np.save(root / "labels.npy", np.zeros((N_LAB + 1, 38)))
    with pytest.raises(DataError, match=r"31"):
        load(root)
    np.save(root / "labels.npy", arrays["labels"])
    np.save(root / "splits" / "test_indices_1.npy", np.array([0, 1, 2]))  # overlaps train/valid of fold 1
    with pytest.raises(DataError, match="overlap"):
        load(root)
    np.save(root / "splits" / "test_indices_1.npy", np.array([N_LAB]))
    with pytest.raises(DataError, match=r"test_indices_1\.npy.*outside"):
        load(root)


def test_unlabelled_errors(release):
    root, arrays = release
    dm = load(root)
    np.save(root / "image" / "unlabelled" / "combined-00004-of-00100.npy", arrays["unl_image"][7:11])
    with pytest.raises(DataError, match=r"text_all_2000_unlabelled\.npz.*12 rows.*11"):
        next(dm.iter_unlabelled(4))
    bad = arrays["unl_image"][7:].copy()
    bad[3, 5] = np.inf
    np.save(root / "image" / "unlabelled" / "combined-00004-of-00100.npy", bad)
    with pytest.raises(DataError, match=r"combined-00004-of-00100\.npy.*NaN"):
        list(dm.iter_unlabelled(4))
    (root / "text" / "text_all_2000_unlabelled.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DataError, match=r"text_all_2000_unlabelled\.npz"):
        next(dm.iter_unlabelled(4))


def test_bad_arguments(release):
    root, _ = release
    with pytest.raises(ValueError, match="fold"):
        MIRFlickr(source="features", data_dir=str(root), fold=6)
    with pytest.raises(ValueError, match="source"):
        MIRFlickr(source="pixels")
    with pytest.raises(ValueError, match="features"):
        next(MIRFlickr(source="offline", data_dir=str(root)).iter_unlabelled())
    with pytest.raises(DataError, match=r"nowhere/labels\.npy"):
        MIRFlickr(source="features", data_dir=str(root / "nowhere")).setup()
    (root / "image" / "labelled").rename(root / "image" / "elsewhere")
    with pytest.raises(DataError, match=r"no image shards.*image/labelled"):
        load(root)
    assert mf.HOW_TO_GET_FEATURES in str(pytest.raises(DataError, load, root / "nowhere").value)


def test_features_on_a_large_offset_are_standardised_exactly(release):
    """float64 shards whose column 1 is a timestamp ≈ 1.7e9 s (float32's spacing there is 128 s):
    the z-scores of the labelled splits and of the unlabelled stream equal a float64 reference."""
    root, arrays = release
    stamps = 1.7e9 + 0.25 * np.arange(N_LAB + 12, dtype=np.float64)
    image = arrays["image"].astype(np.float64)
    image[:, 1] = stamps[:N_LAB]
    for k, name in enumerate(LAB_SHARDS):
        np.save(root / "image" / "labelled" / name, image[10 * k : 10 * (k + 1)])
    unl = arrays["unl_image"].astype(np.float64)
    unl[:, 1] = stamps[N_LAB:]
    start = 0
    for name, n in UNL_SHARDS.items():
        np.save(root / "image" / "unlabelled" / name, unl[start : start + n])
        start += n
    dm = load(root)
    train = image[np.load(root / "splits" / "train_indices_1.npy"), 1]
    mean, std = train.mean(), train.std()
    for split, stem in (("train", "train"), ("val", "valid"), ("test", "test")):
        idx = np.load(root / "splits" / f"{stem}_indices_1.npy")
        z = dm.splits[split].modalities["image"][:, 1].double().numpy()
        assert np.abs(z - (image[idx, 1] - mean) / std).max() < 1e-5, split
    z = torch.cat([b["image"][:, 1] for b in dm.iter_unlabelled(batch_size=4)]).double().numpy()
    assert np.abs(z - (unl[:, 1] - mean) / std).max() < 1e-5
    # finite values float32 cannot hold: named as such, not as NaN/inf
    image[3, 5] = 1e39
    np.save(root / "image" / "labelled" / LAB_SHARDS[0], image[:10])
    with pytest.raises(DataError, match=r"1 finite values beyond float32's range .* the first in row 3"):
        load(root)
