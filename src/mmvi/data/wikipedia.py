"""Wikipedia cross-modal dataset (Rasiwasia et al., ACM MM 2010): 2866 image–text pairs, 10 classes.

File ``wiki_data.mat`` in ``data_dir`` (checksum verified unless ``verify_checksum=False``):
``image`` = 128-word SIFT bag of visual words, ``text`` = 10-topic LDA proportions; the canonical
2173 / 693 split with a stratified validation fraction; both z-scored with training statistics
for Gaussian units with σ = 1 (docs/design.md §2.1; details: docs/data.md §5). Labels are one-hot.
The module also holds helpers the other real-data modules share: :func:`standardize` (with
:func:`zscore_stats`, :func:`apply_zscore`) and :func:`stratified_split`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmvi.data.base import MultimodalDataModule, Split, check_values
from mmvi.data.files import default_data_dir, require_file, sha256_file
from mmvi.data.preprocess import standardize, stratified_split
from mmvi.errors import DataError

WIKI_FILE = "wiki_data.mat"
WIKI_SHA256 = "618dda68117816abb1264ca8dcf4350a547467d856ff6581d3d874bbf757dfc0"
HOW_TO_GET_WIKI = (
    f"Get {WIKI_FILE} (1,080,101 bytes, sha256 {WIKI_SHA256}) from the GitHub repository "
    "cuilimeng/MCTD (commit 49f39d078586b1d2b51685e4f727a415ca24e1ec, file wiki_data.mat) and put it "
    "in the data dir (data.data_dir, or $MMVI_DATA_DIR/wikipedia_xmodal)."
)
WIKI_SHAPES = {
    "I_tr": (2173, 128),
    "T_tr": (2173, 10),
    "L_tr": (2173, 1),
    "I_te": (693, 128),
    "T_te": (693, 10),
    "L_te": (693, 1),
}
WIKI_CLASSES = [
    "art & architecture",
    "biology",
    "geography & places",
    "history",
    "literature & theatre",
    "media",
    "music",
    "royalty & nobility",
    "sport & recreation",
    "warfare",
]


def _read_mat(path: Path, verify_checksum: bool) -> dict[str, np.ndarray]:
    import scipy.io

    require_file(path, HOW_TO_GET_WIKI, WIKI_SHA256)
    if verify_checksum:
        got = sha256_file(path)
        if got != WIKI_SHA256:
            raise DataError(
                f"checksum mismatch for {path}: sha256 {got}, expected {WIKI_SHA256}. "
                f"The file is corrupt or not the expected one. {HOW_TO_GET_WIKI}"
            )
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError/TypeError/OSError/... on bad files
        raise DataError(f"cannot read {path} as a MATLAB file ({exc}). {HOW_TO_GET_WIKI}") from None
    for key, shape in WIKI_SHAPES.items():
        if key not in mat:
            raise DataError(f"{path}: variable {key!r} missing. {HOW_TO_GET_WIKI}")
        if mat[key].shape != shape:
            raise DataError(f"{path}: {key} has shape {mat[key].shape}, expected {shape}. {HOW_TO_GET_WIKI}")
    return mat


def _classes(mat: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    y = mat[key].astype(np.int64).ravel() - 1
    if y.min() < 0 or y.max() > 9:
        raise DataError(f"{path}: {key} holds classes outside 1..10. {HOW_TO_GET_WIKI}")
    return y


class WikipediaXModal(MultimodalDataModule):
    """Wikipedia image (128-d SIFT BoW) + text (10-d LDA) pairs, z-scored, 10 single labels."""

    single_label = True
    label_names = WIKI_CLASSES

    def __init__(
        self,
        data_dir: str | None = None,
        val_fraction: float = 0.15,
        seed: int = 0,
        verify_checksum: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        self.data_dir = Path(data_dir) if data_dir else default_data_dir() / "wikipedia_xmodal"
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.verify_checksum = bool(verify_checksum)
        self.indices: dict[str, np.ndarray] = {}  # rows of I_tr/T_tr (train, val) and I_te/T_te (test)

    def default_units(self, m: str) -> str:
        """Both modalities are z-scored: Gaussian."""
        return "gaussian"

    def unit_fix(self, m: str, units: str) -> str:
        if units in ("bernoulli", "softmax"):
            return f"{m} is z-scored real-valued data: use data.modalities.{m}.units=gaussian"
        return super().unit_fix(m, units)

    def load_splits(self) -> dict[str, Split]:
        path = self.data_dir / WIKI_FILE
        mat = _read_mat(path, self.verify_checksum)
        y_tr, y_te = _classes(mat, "L_tr", path), _classes(mat, "L_te", path)
        tr, va = stratified_split(y_tr, (1.0 - self.val_fraction, self.val_fraction), self.seed)
        rows = {"train": ("tr", tr), "val": ("tr", va), "test": ("te", np.arange(len(y_te)))}
        self.indices = {s: idx for s, (_, idx) in rows.items()}
        labels = {"tr": y_tr, "te": y_te}
        mods: dict[str, dict[str, np.ndarray]] = {}
        for m, key in (("image", "I"), ("text", "T")):
            raw = {s: mat[f"{key}_{part}"][idx] for s, (part, idx) in rows.items()}
            for s, x in raw.items():
                check_values(m, torch.from_numpy(x), f"{path} ({s})")
            mods[m] = standardize(raw)
        return {
            s: Split(
                {m: torch.from_numpy(mods[m][s]) for m in mods},
                torch.nn.functional.one_hot(torch.from_numpy(labels[part][idx]), 10).float(),
            )
            for s, (part, idx) in rows.items()
        }
