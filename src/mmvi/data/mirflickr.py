"""MIR-Flickr 25K image + tag data (docs/paper.md §3): two sources, 38 multi-labels.

Modalities ``image`` (z-scored with training statistics, Gaussian units) and ``text`` (binary bag
of tags); labels the 38 classes of :data:`MIR_LABELS`, multi-hot; ``min_tags`` filters training
documents only. ``source="features"`` reads Srivastava & Salakhutdinov's preprocessed release
(3857-d image features, 2000 tags, five folds; unlabelled pairs streamed by
:meth:`MIRFlickr.iter_unlabelled`); ``source="offline"`` the partial copy, with image features
computed from its JPEGs and cached, split 50/15/35 % by fold. Layouts, files and caching:
docs/data.md §6.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from mmvi.data.base import MultimodalDataModule, Split
from mmvi.data.files import default_data_dir, require_file, sha256_file
from mmvi.data.image_features import FeatureParams, image_features, load_tar_images, tar_member_names
from mmvi.data.preprocess import apply_zscore, float32_overflow, zscore_stats
from mmvi.errors import DataError
from mmvi.utils import atomic_path

log = logging.getLogger(__name__)

MIR_LABELS = [
    "animals",
    "baby",
    "baby_r1",
    "bird",
    "bird_r1",
    "car",
    "car_r1",
    "clouds",
    "clouds_r1",
    "dog",
    "dog_r1",
    "female",
    "female_r1",
    "flower",
    "flower_r1",
    "food",
    "indoor",
    "lake",
    "male",
    "male_r1",
    "night",
    "night_r1",
    "people",
    "people_r1",
    "plant_life",
    "portrait",
    "portrait_r1",
    "river",
    "river_r1",
    "sea",
    "sea_r1",
    "sky",
    "structures",
    "sunset",
    "transport",
    "tree",
    "tree_r1",
    "water",
]
N_IMAGES = 25000
IMAGE_DIM = 3857
TEXT_DIM = 2000
SPLIT_FILES = {"train": "train", "val": "valid", "test": "test"}
OFFLINE_FRACTIONS = (0.5, 0.15, 0.35)
HOW_TO_GET_FEATURES = (
    "Download Srivastava & Salakhutdinov's preprocessed MIR-Flickr data "
    "(http://www.cs.toronto.edu/~nitish/multimodal/flickr_data.tar.gz), extract it and set data.data_dir "
    "to the extracted folder (default $MMVI_DATA_DIR/flickr); see the layout in mmvi/data/mirflickr.py. "
    "Without it use data.source=offline."
)
HOW_TO_GET_OFFLINE = (
    "The offline MIR-Flickr copy (cleaned20015/, labels38/, images/mirflickr_im1-1000_thumbs.tar) is "
    "described in the shared data folder's mirflickr25k/README.md (sources: GitHub sunnyttr/MATH, "
    "louisfanhz/VTMUCH, swuxyj/DeepHash-pytorch, ophid1an/img-retrieval); set data.data_dir to it "
    "(default $MMVI_DATA_DIR/mirflickr25k)."
)


# ---------------------------------------------------------------------- file readers
def npy_info(path: Path, how_to_get: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header, checking the file size (truncation) without loading."""
    require_file(path, how_to_get)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            shape, _, dtype = readers[version](fh)
            offset = fh.tell()
    except (ValueError, KeyError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc!r}). {how_to_get}") from None
    if dtype.hasobject:
        raise DataError(f"{path}: holds Python objects, expected numbers. {how_to_get}")
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if os.path.getsize(path) != expected:
        raise DataError(
            f"{path}: file is {os.path.getsize(path)} bytes, its header implies {expected} "
            f"(truncated or corrupt). {how_to_get}"
        )
    return tuple(shape), dtype


def load_npy(path: Path, how_to_get: str, mmap: bool = False) -> np.ndarray:
    """``np.load`` with the size check of :func:`npy_info` and a :class:`DataError` on failure."""
    npy_info(path, how_to_get)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot load ({exc}). {how_to_get}") from None


def _check_finite(x: np.ndarray, path: Path) -> None:
    """NaN/inf, and finite values float32 cannot hold, are refused with their count (DataError)."""
    problem = float32_overflow(x, f"{path} (modality 'image')")
    if problem:
        raise DataError(f"{problem}. {HOW_TO_GET_FEATURES}")
    bad = ~np.isfinite(x)
    if bad.any():
        raise DataError(f"{path}: holds {int(bad.sum())} NaN/inf values. {HOW_TO_GET_FEATURES}")


def load_sparse_csr(path: Path, how_to_get: str, n_cols: int) -> sp.csr_matrix:
    """A CSR matrix from ``.npz`` arrays data/indices/indptr/shape (release or ``save_npz`` format)."""
    require_file(path, how_to_get)
    try:
        with np.load(path, allow_pickle=False) as z:
            fmt = z["format"].item() if "format" in z.files else "csr"
            fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
            if fmt != "csr":
                raise DataError(f"{path}: sparse format {fmt!r}, expected 'csr'. {how_to_get}")
            arrays = (z["data"], z["indices"], z["indptr"])
            shape = tuple(int(s) for s in z["shape"])
        mat = sp.csr_matrix(arrays, shape=shape)
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable CSR .npz file ({exc!r}). {how_to_get}") from None
    if mat.shape[1] != n_cols:
        raise DataError(f"{path}: matrix has shape {mat.shape}, expected {n_cols} columns. {how_to_get}")
    if not np.isfinite(mat.data).all():
        raise DataError(f"{path}: holds NaN/inf values. {how_to_get}")
    return mat


def read_lines(path: Path, how_to_get: str) -> list[str]:
    """UTF-8 text lines (LF or CRLF) without trailing blank lines."""
    require_file(path, how_to_get)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: cannot read as UTF-8 text ({exc}). {how_to_get}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    return [ln.strip() for ln in lines]


def _image_ids(names: list[str], path: Path, how_to_get: str) -> np.ndarray:
    """``…im{N}.jpg`` names → int ids N, with a DataError naming the first bad line."""
    ids = []
    for i, name in enumerate(names):
        m = re.fullmatch(r"(?:.*/)?im(\d+)\.jpg", name)
        if m is None:
            raise DataError(f"{path}: line/member {i + 1} {name!r} is not an 'im<N>.jpg' name. {how_to_get}")
        ids.append(int(m.group(1)))
    return np.asarray(ids, dtype=np.int64)


def read_labels38(folder: Path) -> np.ndarray:
    """(25000, 38) 0/1 labels, row N−1 = image imN, from ``labels38/{database,train,test}.txt``."""
    labels = np.full((N_IMAGES, len(MIR_LABELS)), -1, dtype=np.int8)
    for part in ("database", "train", "test"):
        path = folder / f"{part}.txt"
        lines = read_lines(path, HOW_TO_GET_OFFLINE)
        if not lines:
            raise DataError(f"{path}: file is empty. {HOW_TO_GET_OFFLINE}")
        heads = [ln.partition(" ")[0] for ln in lines]
        ids = _image_ids(heads, path, HOW_TO_GET_OFFLINE)
        try:
            vals = np.array(" ".join(ln.partition(" ")[2] for ln in lines).split(), dtype=np.int8)
            vals = vals.reshape(len(lines), len(MIR_LABELS))
        except ValueError:
            raise DataError(
                f"{path}: every line must be 'im<N>.jpg' and 38 values 0/1. {HOW_TO_GET_OFFLINE}"
            ) from None
        if ((vals != 0) & (vals != 1)).any() or ids.min(initial=1) < 1 or ids.max(initial=1) > N_IMAGES:
            raise DataError(f"{path}: values must be 0/1 and ids within 1..{N_IMAGES}. {HOW_TO_GET_OFFLINE}")
        labels[ids - 1] = vals
    if (labels < 0).any():
        raise DataError(
            f"{folder}: labels missing for {(labels[:, 0] < 0).sum()} images. {HOW_TO_GET_OFFLINE}"
        )
    return labels


def tag_bag(tag_lines: list[str], vocab: list[str], path: Path) -> np.ndarray:
    """Comma-separated tag lines → binary (n, len(vocab)) float32 bag over ``vocab`` order."""
    index = {t: j for j, t in enumerate(vocab)}
    rows, cols = [], []
    for i, line in enumerate(tag_lines):
        for tag in filter(None, (t.strip() for t in line.split(","))):
            if tag not in index:
                raise DataError(
                    f"{path}: line {i + 1} has tag {tag!r} not in TagList.txt. {HOW_TO_GET_OFFLINE}"
                )
            rows.append(i)
            cols.append(index[tag])
    bag = np.zeros((len(tag_lines), len(vocab)), dtype=np.float32)
    bag[rows, cols] = 1.0
    return bag


# ---------------------------------------------------------------------- offline image features
def default_cache_dir() -> Path:
    return Path(os.environ.get("MMVI_CACHE_DIR", Path.home() / ".cache" / "mmvi"))


def cached_tar_features(
    tar_path: Path, cache_dir: Path, params: FeatureParams, chunk: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, D) of every ``im<N>.jpg`` in the tar, sorted by N, and the ids N.

    Cached as ``mirflickr-thumbs-<tar sha256[:16]>-<params sha256[:16]>.npy`` in ``cache_dir``
    (written to a temporary file, then renamed). A cache that cannot be read or has the wrong
    shape or non-finite values is recomputed.
    """
    require_file(tar_path, HOW_TO_GET_OFFLINE)
    names = tar_member_names(tar_path)
    ids = _image_ids(names, tar_path, HOW_TO_GET_OFFLINE)
    order = np.argsort(ids, kind="stable")
    names, ids = [names[i] for i in order], ids[order]
    cache = cache_dir / f"mirflickr-thumbs-{sha256_file(tar_path)[:16]}-{params.digest()[:16]}.npy"
    if cache.is_file():
        try:
            feats = np.load(cache, allow_pickle=False)
            if feats.shape == (len(ids), params.dim) and np.isfinite(feats).all():
                log.info("mirflickr offline: image features read from cache %s", cache)
                return feats.astype(np.float32, copy=False), ids
            log.warning(
                "mirflickr offline: cache %s has shape %s or non-finite values; recomputing",
                cache,
                feats.shape,
            )
        except (ValueError, OSError, EOFError) as exc:
            log.warning("mirflickr offline: cache %s unreadable (%s); recomputing", cache, exc)
    parts = [
        image_features(load_tar_images(tar_path, names[i : i + chunk], params.size), params)
        for i in range(0, len(names), chunk)
    ]
    feats = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, params.dim), np.float32)
    if not np.isfinite(feats).all():
        raise DataError(f"{tar_path}: image features hold NaN/inf values; nothing cached")
    try:
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.save(fh, feats)
        log.info("mirflickr offline: image features of %d images cached in %s", len(ids), cache)
    except OSError as exc:
        log.warning("mirflickr offline: cannot write feature cache %s (%s); continuing without", cache, exc)
    return feats, ids


# ---------------------------------------------------------------------- data module
class MIRFlickr(MultimodalDataModule):
    """MIR-Flickr image + tags, 38 labels; ``source`` = "features" (paper data) or "offline"."""

    single_label = False
    label_names = MIR_LABELS

    def __init__(
        self,
        source: str = "offline",
        data_dir: str | None = None,
        fold: int = 1,
        min_tags: int = 0,
        cache_dir: str | None = None,
        feature_params: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if source not in ("offline", "features"):
            raise ValueError(f"data.source must be 'offline' or 'features', got {source!r}")
        if int(fold) < 1 or (source == "features" and int(fold) > 5):
            raise ValueError(f"data.fold must be 1..5 (features) or ≥ 1 (offline), got {fold}")
        default = "flickr" if source == "features" else "mirflickr25k"
        self.source = source
        self.data_dir = Path(data_dir) if data_dir else default_data_dir() / default
        self.fold = int(fold)
        self.min_tags = int(min_tags)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        fp = dict(feature_params or {})
        if "hist_bins" in fp:
            fp["hist_bins"] = tuple(int(b) for b in fp["hist_bins"])
        self.feature_params = FeatureParams(**fp)
        self.image_mean: np.ndarray | None = None
        self.image_std: np.ndarray | None = None
        #: float64 (n,) subtracted from the image features as they are read (their first row)
        self.image_offset: np.ndarray | None = None
        self.image_ids: dict[str, np.ndarray] | None = None

    def default_units(self, m: str) -> str:
        """``image``: z-scored descriptors (Gaussian); ``text``: binary bag of tags (Bernoulli)."""
        return "gaussian" if m == "image" else "bernoulli"

    def unit_fix(self, m: str, units: str) -> str:
        if m == "image" and units in ("bernoulli", "softmax"):
            return "image holds z-scored descriptors: use data.modalities.image.units=gaussian"
        return super().unit_fix(m, units)

    # ------------------------------------------------------------------ shared
    def _make_splits(
        self, image: dict[str, np.ndarray], text: dict[str, np.ndarray], labels: dict[str, np.ndarray]
    ) -> dict[str, Split]:
        if self.min_tags > 0:
            keep = text["train"].sum(1) >= self.min_tags
            log.info(
                "mirflickr %s: min_tags=%d drops %d of %d training documents",
                self.source,
                self.min_tags,
                int((~keep).sum()),
                len(keep),
            )
            image["train"], text["train"], labels["train"] = (
                a[keep] for a in (image["train"], text["train"], labels["train"])
            )
        if len(image["train"]) == 0:
            raise DataError(f"{self.data_dir}: no training documents left (min_tags={self.min_tags})")
        # the arrays hold x - image_offset (float32, taken in float64): the z-scores are exact
        # even when the features sit on a large offset
        offset = np.zeros(image["train"].shape[1]) if self.image_offset is None else self.image_offset
        mean, self.image_std = zscore_stats(image["train"])
        self.image_mean = mean + offset
        for x in image.values():  # fresh float32 copies: standardise in place
            x -= mean
            x /= self.image_std
        return {
            s: Split(
                {"image": torch.from_numpy(image[s]), "text": torch.from_numpy(text[s])},
                torch.from_numpy(labels[s].astype(np.float32)),
            )
            for s in ("train", "val", "test")
        }

    def load_splits(self) -> dict[str, Split]:
        return self._load_features() if self.source == "features" else self._load_offline()

    # ------------------------------------------------------------------ features source
    def _shards(self, kind: str) -> list[tuple[Path, int]]:
        folder = self.data_dir / "image" / kind
        paths = sorted(folder.glob("*.npy"))
        if not paths:
            raise DataError(f"no image shards (*.npy) found in {folder}. {HOW_TO_GET_FEATURES}")
        out = []
        for p in paths:
            shape, _ = npy_info(p, HOW_TO_GET_FEATURES)
            if len(shape) != 2 or shape[1] != IMAGE_DIM:
                raise DataError(f"{p}: shape {shape}, expected (rows, {IMAGE_DIM}). {HOW_TO_GET_FEATURES}")
            out.append((p, shape[0]))
        return out

    def _labelled_images(self) -> np.ndarray:
        shards = self._shards("labelled")
        out = np.empty((sum(n for _, n in shards), IMAGE_DIM), dtype=np.float32)
        self.image_offset = None
        start = 0
        for path, n in shards:
            raw = load_npy(path, HOW_TO_GET_FEATURES, mmap=True)
            _check_finite(raw, path)
            if self.image_offset is None:
                self.image_offset = np.asarray(raw[0], dtype=np.float64) if n else np.zeros(IMAGE_DIM)
            # x - offset in float64, then float32 (:func:`apply_zscore`): no precision lost to an offset
            out[start : start + n] = apply_zscore(raw, self.image_offset, np.ones(IMAGE_DIM))
            start += n
        return out

    def _fold_indices(self, n: int) -> dict[str, np.ndarray]:
        parts = {}
        for split, stem in SPLIT_FILES.items():
            path = self.data_dir / "splits" / f"{stem}_indices_{self.fold}.npy"
            idx = load_npy(path, HOW_TO_GET_FEATURES)
            if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or idx.size == 0:
                raise DataError(f"{path}: expected a non-empty 1-d integer array. {HOW_TO_GET_FEATURES}")
            if idx.min() < 0 or idx.max() >= n:
                raise DataError(f"{path}: indices outside 0..{n - 1}. {HOW_TO_GET_FEATURES}")
            parts[split] = idx.astype(np.int64)
        joined = np.concatenate(list(parts.values()))
        if len(np.unique(joined)) != len(joined):
            raise DataError(
                f"{self.data_dir / 'splits'}: fold {self.fold} index files overlap. {HOW_TO_GET_FEATURES}"
            )
        return parts

    def _load_features(self) -> dict[str, Split]:
        labels_path = self.data_dir / "labels.npy"
        labels = load_npy(labels_path, HOW_TO_GET_FEATURES)
        if labels.ndim != 2 or labels.shape[1] != len(MIR_LABELS):
            raise DataError(
                f"{labels_path}: shape {labels.shape}, expected (N, {len(MIR_LABELS)}). {HOW_TO_GET_FEATURES}"
            )
        if not np.isin(labels, (0, 1)).all():
            raise DataError(f"{labels_path}: labels must be 0/1. {HOW_TO_GET_FEATURES}")
        image = self._labelled_images()
        text_path = self.data_dir / "text" / "text_all_2000_labelled.npz"
        text = load_sparse_csr(text_path, HOW_TO_GET_FEATURES, TEXT_DIM)
        n = labels.shape[0]
        for what, rows in (
            (self.data_dir / "image" / "labelled", image.shape[0]),
            (text_path, text.shape[0]),
        ):
            if rows != n:
                raise DataError(f"{what}: {rows} rows, but labels.npy has {n}. {HOW_TO_GET_FEATURES}")
        idx = self._fold_indices(n)
        log.info("mirflickr features: fold %d, %s", self.fold, {s: len(i) for s, i in idx.items()})
        return self._make_splits(
            {s: image[i] for s, i in idx.items()},
            {s: (text[i].toarray() > 0).astype(np.float32) for s, i in idx.items()},
            {s: labels[i] for s, i in idx.items()},
        )

    def iter_unlabelled(
        self, batch_size: int | None = None, shuffle: bool = False, seed: int = 0
    ) -> Iterator[dict[str, Tensor]]:
        """Stream unlabelled ``{"image", "text"}`` batches, one memory-mapped shard at a time.

        Images are z-scored with the labelled training statistics, text is binary; rows with fewer
        than ``min_tags`` tags are skipped. Batches never span two shards (a shard's last batch may
        be smaller). With ``shuffle`` the shard order and the rows within each shard are permuted.
        """
        if self.source != "features":
            raise ValueError(
                "iter_unlabelled needs data.source=features (the offline copy has no unlabelled pairs)"
            )
        self.setup()
        bs = int(batch_size or self.batch_size)
        shards = self._shards("unlabelled")
        text_path = self.data_dir / "text" / "text_all_2000_unlabelled.npz"
        text = load_sparse_csr(text_path, HOW_TO_GET_FEATURES, TEXT_DIM)
        if text.shape[0] != sum(n for _, n in shards):
            raise DataError(
                f"{text_path}: {text.shape[0]} rows, but the unlabelled image shards hold "
                f"{sum(n for _, n in shards)}. {HOW_TO_GET_FEATURES}"
            )
        starts = np.cumsum([0] + [n for _, n in shards])
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(shards)) if shuffle else range(len(shards))
        for k in order:
            yield from self._shard_batches(
                shards[k][0], text[starts[k] : starts[k + 1]], bs, rng if shuffle else None
            )

    def _shard_batches(
        self, path: Path, text: sp.csr_matrix, bs: int, rng: np.random.Generator | None
    ) -> Iterator[dict[str, Tensor]]:
        images = load_npy(path, HOW_TO_GET_FEATURES, mmap=True)
        n_tags = np.diff((text > 0).indptr) if self.min_tags > 0 else None
        rows = np.arange(images.shape[0]) if n_tags is None else np.flatnonzero(n_tags >= self.min_tags)
        if rng is not None:
            rows = rng.permutation(rows)
        for start in range(0, len(rows), bs):
            sel = rows[start : start + bs]
            x = np.asarray(images[sel])
            _check_finite(x, path)
            yield {
                "image": torch.from_numpy(apply_zscore(x, self.image_mean, self.image_std)),
                "text": torch.from_numpy((text[sel].toarray() > 0).astype(np.float32)),
            }

    # ------------------------------------------------------------------ offline source
    def _load_offline(self) -> dict[str, Split]:
        root = self.data_dir
        tag_dir = root / "cleaned20015"
        img_names = read_lines(tag_dir / "all_imgs.txt", HOW_TO_GET_OFFLINE)
        tag_ids = _image_ids(img_names, tag_dir / "all_imgs.txt", HOW_TO_GET_OFFLINE)
        tag_lines = read_lines(tag_dir / "all_tags.txt", HOW_TO_GET_OFFLINE)
        if len(tag_lines) != len(tag_ids):
            raise DataError(
                f"{tag_dir / 'all_tags.txt'}: {len(tag_lines)} lines, but all_imgs.txt has "
                f"{len(tag_ids)}. {HOW_TO_GET_OFFLINE}"
            )
        vocab = read_lines(tag_dir / "TagList.txt", HOW_TO_GET_OFFLINE)
        labels = read_labels38(root / "labels38")
        tar_path = root / "images" / "mirflickr_im1-1000_thumbs.tar"
        feats, pix_ids = cached_tar_features(tar_path, self.cache_dir, self.feature_params)

        usable = np.intersect1d(pix_ids, tag_ids)
        log.info(
            "mirflickr offline: %d of %s images have both pixels and tags (%d with pixels, %s with tags); "
            "using those",
            len(usable),
            f"{N_IMAGES:,}",
            len(pix_ids),
            f"{len(tag_ids):,}",
        )
        if len(usable) < 3:
            raise DataError(
                f"{root}: only {len(usable)} images have both pixels and tags. {HOW_TO_GET_OFFLINE}"
            )
        if len(np.unique(tag_ids)) != len(tag_ids):
            raise DataError(f"{tag_dir / 'all_imgs.txt'}: image ids repeat. {HOW_TO_GET_OFFLINE}")
        tag_row = np.argsort(tag_ids)[np.searchsorted(np.sort(tag_ids), usable)]
        text = tag_bag([tag_lines[r] for r in tag_row], vocab, tag_dir / "all_tags.txt")
        image = feats[np.searchsorted(pix_ids, usable)]
        perm = np.random.default_rng(self.fold).permutation(len(usable))
        cuts = np.round(np.cumsum(OFFLINE_FRACTIONS[:-1]) * len(usable)).astype(int)
        parts = dict(zip(("train", "val", "test"), np.split(perm, cuts), strict=True))
        self.image_ids = {s: usable[i] for s, i in parts.items()}
        return self._make_splits(
            {s: image[i] for s, i in parts.items()},
            {s: text[i] for s, i in parts.items()},
            {s: labels[usable[i] - 1] for s, i in parts.items()},
        )
