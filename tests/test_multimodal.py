"""Three or more modalities end to end: samplers and estimators, training, queries, measures, figures."""

from __future__ import annotations

import gzip

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from helpers import all_binary, assert_gradient_matches_finite_differences, tiny_model
from mmvi.data.idx import IDXImages
from mmvi.data.mfeat import UCIMultiFeature
from mmvi.evaluation.generation import generation_queries
from mmvi.evaluation.protocol import conditional_ce_metrics, evaluate
from mmvi.evaluation.representations import query_types, split_representations
from mmvi.lit.module import MultimodalLitModule
from mmvi.objectives import MultiPrediction
from mmvi.report.tables import measure_label

OPTIM = {
    "lr": 0.01,
    "lr_decay": 0.0,
    "momentum_initial": 0.5,
    "momentum": 0.5,
    "momentum_switch_epoch": 1,
    "weight_decay": 1e-4,
}


def test_clamped_chain_given_two_modalities_samples_the_exact_conditional():
    """M = 3: x | (y, z) by Gibbs with y, z clamped → P(x | y, z) ∝ exp(−F(x, y, z)) (enumeration)."""
    model = tiny_model({"x": 3, "y": 2, "z": 2}, n_hidden=3, std=1.0, seed=11)
    given = {"y": torch.tensor([[1.0, 0.0]]), "z": torch.tensor([[0.0, 1.0]])}
    xs = all_binary(3)
    f = model.free_energy(
        {"x": xs, "y": given["y"].expand(8, -1).double(), "z": given["z"].expand(8, -1).double()}
    )
    exact = torch.softmax(-f, 0)
    n = 40000
    torch.manual_seed(0)
    chains = {m: x.double().expand(n, -1) for m, x in given.items()}
    start = torch.bernoulli(torch.full((n, 3), 0.5, dtype=torch.float64))
    *_, last = model.clamped_chain(chains, "x", start, 30)
    codes = (last[0] @ torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)).long()
    empirical = torch.bincount(codes, minlength=8).double() / n
    assert (empirical - exact).abs().sum() / 2 < 0.015  # total variation


def test_mp_generalised_mask_over_three_modalities():
    """``p_modality`` hides each other modality whole with that probability; the loss gradient is exact."""
    model = tiny_model({"x": 4, "y": 3, "z": 2}, n_hidden=5, std=0.5, seed=4)
    g = torch.Generator().manual_seed(0)
    v = {m: torch.rand(8, model.sizes[m], generator=g, dtype=torch.float64) for m in model.names}
    obj = MultiPrediction(mask_rate=0.5, mf_steps=4, bptt_steps=4, grow_every=0, p_modality=0.5)
    torch.manual_seed(1)
    hidden = {"y": 0, "z": 0}
    for _ in range(4000):
        masks = obj.sample_masks(model, v, "x")
        masks = masks[0] if isinstance(masks, tuple) else masks  # (masks, nominal rates)
        assert masks["x"] is not None
        for m in ("y", "z"):
            if masks[m] is not None:
                assert not masks[m].any()
                hidden[m] += 1
    assert all(abs(k / 4000 - 0.5) < 0.03 for k in hidden.values())

    def loss() -> torch.Tensor:
        torch.manual_seed(7)  # the same masks at every evaluation
        return obj(model, v)[0]

    assert_gradient_matches_finite_differences(loss, model, samples=4)


@pytest.fixture(scope="module")
def mfeat3(shared_data):
    dm = UCIMultiFeature(
        data_dir=str(shared_data / "uci_mfeat"),
        views=["pix", "fou", "kar"],
        batch_size=50,
        max_examples={"train": 300, "val": 100, "test": 100},
    )
    dm.setup()
    return dm


OBJECTIVES = {
    "nll_pcd": {
        "_target_": "mmvi.objectives.ContrastiveDivergence",
        "k": 2,
        "persistent": True,
        "n_chains": 20,
    },
    "minvi_ccd": {"_target_": "mmvi.objectives.ConditionalCD", "k": 1},
    "minvi_cdpl": {"_target_": "mmvi.objectives.CDPercLoss", "k": 3},
    "minvi_mp": {"_target_": "mmvi.objectives.MultiPrediction", "mf_steps": 3, "p_modality": 0.3},
    "hybrid": {
        "_target_": "mmvi.objectives.Mixture",
        "alpha": 0.5,
        "minvi": {"_target_": "mmvi.objectives.MultiPrediction", "mf_steps": 3},
        "nll": {
            "_target_": "mmvi.objectives.ContrastiveDivergence",
            "k": 1,
            "persistent": True,
            "n_chains": 20,
        },
    },
}


def _fit(dm, objective: dict, n_hidden: int = 16, batches: int = 3) -> MultimodalLitModule:
    lit = MultimodalLitModule(
        model={
            "_target_": "mmvi.models.MultimodalRBM",
            "modalities": dm.modality_specs(),
            "n_hidden": n_hidden,
        },
        objective=objective,
        optim=OPTIM,
    )
    lit.model.init_visible_bias_from_data(dm.modality_means())
    lit.initial_W = {m: w.detach().clone() for m, w in lit.model.W.items()}
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=batches,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(lit, datamodule=dm)
    return lit, trainer


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_trains_on_three_real_views(mfeat3, name):
    torch.manual_seed(0)
    lit, trainer = _fit(mfeat3, OBJECTIVES[name])
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert int(lit.bad_steps) == 0
    for m in ("pix", "fou", "kar"):
        assert not torch.equal(lit.model.W[m], lit.initial_W[m])
        ce = trainer.callback_metrics[f"val/cond_ce/{m}_given_rest"]
        assert torch.isfinite(ce)


def test_evaluation_queries_and_measures_for_three_views(mfeat3, tmp_path):
    torch.manual_seed(0)
    lit, _ = _fit(mfeat3, OBJECTIVES["minvi_mp"], batches=6)
    model = lit.model
    likelihood = {"enabled": True, "n_examples": 20, "n_ais_runs": 2, "n_betas": 20, "joint_ais_runs": 2}
    metrics, artefacts = evaluate(
        model=model,
        dm=mfeat3,
        out_dir=tmp_path,
        native_steps=3,
        batch_size=64,
        n_generation=4,
        likelihood={**likelihood, "joint_betas": 20},
    )
    names = ["pix", "fou", "kar"]
    queries = ["multimodal", *names, *(f"no_{m}" for m in names)]
    assert {k for k in metrics if k.startswith("classify/err_")} == {f"classify/err_{q}" for q in queries}
    assert {k for k in metrics if k.startswith("cond_ce/")} == {f"cond_ce/{m}_given_rest" for m in names}
    for m in names:
        assert metrics[f"cond_nll/{m}_given_rest"] > 0
    assert "generation" not in artefacts  # feature views are not images
    # leave-one-out = the other modalities given, the left-out one inferred
    reps = split_representations(model, mfeat3.splits["test"], 64, 3, None, ["no_fou", "multimodal"])
    v = mfeat3.splits["test"].modalities
    want = model.representation({"pix": v["pix"], "kar": v["kar"]}, steps=3, tol=None)
    torch.testing.assert_close(reps["no_fou"], want)
    assert measure_label("classify/err_no_fou") == "error, all but fou (%)"
    assert measure_label("classify/err_fou") == "error, fou only (%)"


def test_two_modality_names_are_unchanged():
    model = tiny_model({"left": 4, "right": 3}, n_hidden=5, std=0.5, seed=2)
    assert query_types(model) == ["multimodal", "left", "right"]
    assert generation_queries(model.names) == [("left → right", ["left"]), ("right → left", ["right"])]

    class _Split:
        modalities = {
            "left": torch.rand(6, 4, dtype=torch.float64),
            "right": torch.rand(6, 3, dtype=torch.float64),
        }

        def __len__(self):
            return 6

    assert set(conditional_ce_metrics(model, _Split(), 6, 5, None)) == {
        "cond_ce/left_given_right",
        "cond_ce/right_given_left",
    }


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_mnist_quadrants_train_evaluate_and_draw(shared_data, tmp_path):
    """Four modalities = the quadrants of real digits (an IDX set written from MNIST's test file)."""
    raw = gzip.open(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz").read()
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:800]
    labels = np.frombuffer(
        gzip.open(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8
    )
    for key, arr in (("train_images", images[:600]), ("train_labels", labels[:600])):
        (tmp_path / f"{key}.idx").write_bytes(_idx(arr))
    for key, arr in (("test_images", images[600:800]), ("test_labels", labels[600:800])):
        (tmp_path / f"{key}.idx").write_bytes(_idx(arr))
    files = {k: f"{k}.idx" for k in ("train_images", "train_labels", "test_images", "test_labels")}
    dm = IDXImages(data_dir=str(tmp_path), files=files, cut="grid", grid=[2, 2], n_val=100, batch_size=50)
    dm.setup()
    torch.manual_seed(0)
    lit, _ = _fit(dm, OBJECTIVES["minvi_mp"], n_hidden=32, batches=4)
    metrics, artefacts = evaluate(
        model=lit.model, dm=dm, out_dir=tmp_path / "eval", native_steps=3, n_generation=3
    )
    quads = ["r0c0", "r0c1", "r1c0", "r1c1"]
    assert {k for k in metrics if k.startswith("classify/err_")} == {
        f"classify/err_{q}" for q in ["multimodal", *quads, *(f"no_{m}" for m in quads)]
    }
    assert {k for k in metrics if k.startswith("cond_ce/")} == {f"cond_ce/{m}_given_rest" for m in quads}
    rows = generation_queries(quads)
    assert [r[0] for r in rows] == [f"{m} → rest" for m in quads] + [f"rest → {m}" for m in quads]
    assert artefacts["generation"].endswith("generation.png")
    from PIL import Image

    with Image.open(artefacts["generation"]) as png:
        assert png.size[1] > png.size[0] * 2  # 9 rows (true + 8 queries) of 3 digits
