"""The reference code's weights and data layout (mmvi.reference) and its Octave run (scripts/reference_run.py)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from scipy.io import savemat

from mmvi.api import compose_config
from mmvi.instantiate import instantiate_checked
from mmvi.lifecycle import complete_modalities
from mmvi.models.mrbm import MultimodalRBM
from mmvi.reference import (
    column_major_order,
    images_to_reference,
    load_reference_weights,
    score_reference,
    set_reference_weights,
)

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = [
    "data=mnist5k",
    "model.n_hidden=16",
    "evaluation.n_generation=0",
    "evaluation.classifier.refit=train",
    "evaluation.batch_size=700",
    "logger=none",
]


def reference_weights_of(model: MultimodalRBM) -> dict[str, np.ndarray]:
    """The model's parameters as the reference code stores them: halves flattened column-major,
    weights (392, H), biases as column vectors (written by hand, not by the code under test)."""

    def to_matlab(x: torch.Tensor) -> np.ndarray:  # (392, ...) row-major 28x14 -> column-major
        x = x.detach().double().numpy()
        return x.reshape(28, 14, *x.shape[1:]).transpose(1, 0, *range(2, x.ndim + 1)).reshape(x.shape)

    return {
        "vxhid": to_matlab(model.W["left"]),
        "vzhid": to_matlab(model.W["right"]),
        "vxbias": to_matlab(model.b["left"])[:, None],
        "vzbias": to_matlab(model.b["right"])[:, None],
        "hidbias": model.c.detach().double().numpy()[:, None],
    }


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    cfg = compose_config("train", OVERRIDES, run_dir=out)
    dm = instantiate_checked(cfg.data)
    dm.setup()
    complete_modalities(cfg, dm)
    torch.manual_seed(0)
    model = MultimodalRBM(cfg.model.modalities, n_hidden=16, init_std=0.3)
    with torch.no_grad():
        for m in model.names:
            model.b[m].normal_(0, 1)
        model.c.normal_(0, 1)
    return cfg, dm, model, out


def test_column_major_order_is_matlab_flattening():
    img = np.arange(6).reshape(2, 3)  # rows 0..1, columns 0..2
    assert np.array_equal(img.ravel()[column_major_order(2, 3)], img.ravel(order="F"))
    assert np.array_equal(images_to_reference(img[None].astype(float))[:, 0], img.ravel(order="F"))


def test_weights_file_round_trip(job, tmp_path):
    _, _, model, _ = job
    path = tmp_path / "weights.mat"
    savemat(path, {"weights": reference_weights_of(model), "params": {"numhid": 16.0}})
    back = MultimodalRBM({m: {"size": 392} for m in model.names}, n_hidden=16)
    set_reference_weights(back, load_reference_weights(path))
    for a, b in zip(model.parameters(), back.parameters(), strict=True):
        assert torch.equal(a, b)


def test_reference_layout_gives_the_same_hidden_probabilities(job):
    """The reference's own computation (load_mnist's digits, demo_mnist's halves, sigmoid(W'x + W'z + c))
    on the reference-format weights equals mmvi's hidden means of the same images."""
    _, dm, model, _ = job
    split = dm.splits["test"]
    images = dm.example_images(split.modalities).numpy()[:200]
    digits = images_to_reference(images)  # (784, N) as load_mnist returns
    cube = digits.reshape(28, 28, -1, order="F")  # demo_mnist: reshape(xts, [dim, N])
    x = cube[:, :14, :].reshape(392, -1, order="F")
    z = cube[:, 14:, :].reshape(392, -1, order="F")
    w = reference_weights_of(model)
    h_ref = 1 / (1 + np.exp(-(w["vxhid"].T @ x + w["vzhid"].T @ z + w["hidbias"])))
    with torch.no_grad():
        v = {m: t[:200].double() for m, t in split.modalities.items()}
        h = model.double().hidden_probs(v).numpy()
    model.float()
    np.testing.assert_allclose(h_ref.T, h, rtol=0, atol=1e-12)


def test_score_reference_equals_mmvi_evaluation(job, tmp_path):
    cfg, dm, model, _ = job
    lit_steps = instantiate(cfg.objective).native_inference_steps
    evaluate = instantiate(cfg.evaluation, _convert_="all")
    own, _ = evaluate(model=model, dm=dm, out_dir=tmp_path / "own", native_steps=lit_steps)
    scored = score_reference(reference_weights_of(model), OVERRIDES, tmp_path / "scored")
    keys = [k for k in own if not k.startswith("eval/seconds")]  # timings differ run to run
    assert any(k.startswith("classify/err_") for k in keys) and any(k.startswith("cond_ce/") for k in keys)
    for k in keys:
        assert scored[k] == pytest.approx(own[k], rel=1e-6, abs=1e-9), k


def test_set_reference_weights_refuses_another_shape(job):
    _, _, model, _ = job
    w = reference_weights_of(model)
    other = MultimodalRBM({m: {"size": 392} for m in model.names}, n_hidden=8)
    with pytest.raises(ValueError, match="16 hidden units, the model 8"):
        set_reference_weights(other, w)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("octave") is None, reason="GNU Octave not installed")
def test_reference_run_tiny(shared_data, tmp_path):
    """The authors' code under Octave (clone in $MMVI_REFERENCE_REPO): 1 epoch, 20 hidden units,
    1,000 images; its own test representations equal mmvi's inference of its weights."""
    ref = os.environ.get("MMVI_REFERENCE_REPO")
    if not ref:
        pytest.fail("set MMVI_REFERENCE_REPO to a clone of kihyuks/nips2014_multimodal_learning")
    spec = importlib.util.spec_from_file_location("reference_run", REPO / "scripts" / "reference_run.py")
    rr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rr)
    out = tmp_path / "run"
    args = ["--ref", ref, "--data-dir", str(shared_data / "mnist"), "--preset", "pcd", "--epochs", "1"]
    assert rr.main([*args, "--hidden", "20", "--n-train", "1000", "--out", str(out)]) == 0
    import json

    (row,) = json.loads((out / "results.json").read_text())["rows"]
    m = row["metrics"]
    for key in ("both", "left", "right"):
        assert m[f"check/max_abs_diff_{key}"] < 1e-6
    assert 0 < m["classify/err_multimodal"] < 50
    assert np.isfinite(m["cond_ce/right_given_left"])
