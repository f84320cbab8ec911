"""The offline grey-level image sets of scripts/image_sets.py load as IDX image data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from mmvi.data.idx import IDXImages

REPO = Path(__file__).resolve().parents[1]


def image_sets():
    spec = importlib.util.spec_from_file_location("image_sets", REPO / "scripts" / "image_sets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_glyph_set_builds_deterministically_and_loads(tmp_path):
    sets = image_sets()
    a = sets.glyphs(tmp_path / "a", n_train=60, n_test=30, seed=3)
    b = sets.glyphs(tmp_path / "b", n_train=60, n_test=30, seed=3)
    assert a["sha256"] == b["sha256"]
    assert not set(a["fonts"]["train"]) & set(a["fonts"]["test"])  # test fonts unseen in training
    dm = IDXImages(data_dir=str(tmp_path / "a"), n_val=20)
    dm.setup()
    assert {k: len(s) for k, s in dm.splits.items()} == {"train": 40, "val": 20, "test": 30}
    x = torch.cat([dm.splits["train"].modalities[m] for m in ("left", "right")], 1)
    assert x.shape[1] == 784 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert float(((x > 0) & (x < 1)).float().mean()) > 0.02  # grey levels, not a binary set
    assert 0.02 < float(x.mean()) < 0.5  # letters on a black ground


def test_fashion_folder():
    sets = image_sets()
    if not sets.FASHION_DIR.is_dir():
        with pytest.raises(SystemExit, match="apt-get install dataset-fashion-mnist"):
            sets.fashion()
        return
    dm = IDXImages(data_dir=str(sets.fashion()))
    dm.setup()
    assert {k: len(s) for k, s in dm.splits.items()} == {"train": 50000, "val": 10000, "test": 10000}
