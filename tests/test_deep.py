"""Deep model (MDRNN): the recurrent encoder against its feed-forward and single-RBM special cases,
fine-tuning gradients against finite differences, and the staged pipeline's resume on real data."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from helpers import assert_gradient_matches_finite_differences, compose_job
from mmvi.deep.finetune import RecurrentPrediction
from mmvi.errors import ConfigError
from mmvi.models import MultimodalRBM
from mmvi.models.deep import MDRNN

CONF = Path(__file__).resolve().parents[1] / "conf"
MODALITIES = {"x": {"size": 5, "units": "gaussian"}, "y": {"size": 4, "units": "bernoulli"}}
PATHWAYS = {
    "x": {"layers": [{"size": 4, "hidden": "stepped_sigmoid"}, {"size": 3}]},
    "y": {"layers": [{"size": 3}]},
}


def tiny_mdrnn(pathways=PATHWAYS, seed: int = 0) -> MDRNN:
    torch.manual_seed(seed)
    model = MDRNN(MODALITIES, n_joint=6, pathways=pathways, init_std=0.5).double()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.5)
    return model


def batch(n: int = 7, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(n, 5, generator=g, dtype=torch.float64),
        "y": torch.bernoulli(torch.full((n, 4), 0.4, dtype=torch.float64), generator=g),
    }


def stepped(a: torch.Tensor, n: int = 5) -> torch.Tensor:
    return sum(torch.sigmoid(a - i + 0.5) for i in range(1, n + 1))


def test_recurrent_encoder_with_zero_steps_is_the_feed_forward_pass():
    model = tiny_mdrnn()
    v = batch()
    lx, ly, top = model.layers["x"], model.layers["y"], model.top
    x1 = stepped(lx[0].c + v["x"] @ lx[0].W["x"])
    x2 = torch.sigmoid(lx[1].c + x1 @ lx[1].W["x"])
    y1 = torch.sigmoid(ly[0].c + v["y"] @ ly[0].W["y"])
    full = torch.sigmoid(top.c + x2 @ top.W["x"] + y1 @ top.W["y"])
    torch.testing.assert_close(model.representation(v), full, rtol=0, atol=1e-12)
    # y missing: the x input scaled by s = 1 + (3 missing top inputs) / (3 given)
    h0 = torch.sigmoid(top.c + 2.0 * (x2 @ top.W["x"]))
    acts, h = model.mean_field({"x": v["x"]}, steps=0)
    torch.testing.assert_close(h, h0, rtol=0, atol=1e-12)
    down = ly[0].b["y"] + torch.sigmoid(top.b["y"] + h0 @ top.W["y"].T) @ ly[0].W["y"].T
    torch.testing.assert_close(acts["y"], down, rtol=0, atol=1e-12)
    visibles, h_inf = model.infer_missing({"x": v["x"]}, steps=0)
    torch.testing.assert_close(h_inf, h0, rtol=0, atol=1e-12)
    torch.testing.assert_close(visibles["y"], torch.sigmoid(down), rtol=0, atol=1e-12)
    assert visibles["x"] is v["x"]


def test_without_pathway_layers_the_loop_is_the_rbm_mean_field():
    model = tiny_mdrnn(pathways={})
    rbm = MultimodalRBM(MODALITIES, 6).double()
    rbm.load_state_dict(model.top.state_dict())
    v = batch()
    for k in (0, 1, 3):
        # both run the reference's order: h0, then k updates (v_miss <- E[v|h]; h <- E[h|v])
        expected = rbm.infer_missing({"x": v["x"]}, steps=k, tol=None)
        got = model.infer_missing({"x": v["x"]}, steps=k, tol=None)
        torch.testing.assert_close(got[1], expected[1])
        torch.testing.assert_close(got[0]["y"], expected[0]["y"])


def test_mean_field_converges_to_a_fixed_point_and_stops_at_tol():
    model = tiny_mdrnn(seed=2)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    v = batch()
    vis, h = model.infer_missing({"y": v["y"]}, steps=500, tol=1e-12)
    up = model.top.hidden_probs({"y": model.up("y", v["y"]), "x": model.up("x", vis["x"])})
    torch.testing.assert_close(up, h, rtol=0, atol=1e-9)


def test_finetune_loss_gradient_matches_finite_differences():
    model = tiny_mdrnn(seed=3)
    v = batch()
    objective = RecurrentPrediction(steps=3)

    def loss() -> torch.Tensor:
        return objective(model, v)[0]

    assert_gradient_matches_finite_differences(loss, model, samples=3)


def test_finetune_truncation_and_directions():
    model = tiny_mdrnn(seed=4)
    v = batch()
    grads = {}
    for k in (1, 3, None):
        model.zero_grad()
        RecurrentPrediction(steps=3, bptt_steps=k, directions=["y"])(model, v)[0].backward()
        grads[k] = model.layers["x"][0].W["x"].grad.clone()
    assert torch.equal(grads[3], grads[None])
    assert not torch.allclose(grads[1], grads[None], rtol=1e-4, atol=0)
    loss, logs = RecurrentPrediction(steps=2, directions=["y"])(model, v)
    assert set(logs) == {"pred_nll/y"}
    with pytest.raises(ValueError, match="unknown modalities"):
        RecurrentPrediction(directions=["z"])(model, v)


# ----------------------------------------------------------------------------- configs
def compose_deep(overrides: list[str], run_dir: Path):
    return compose_job("deep", overrides, run_dir)


@pytest.mark.parametrize("experiment", ["wikipedia_deep", "mfeat_deep", "flickr_offline", "paper_flickr"])
@pytest.mark.parametrize("objective", ["nll_cd", "minvi_mp"])
def test_deep_experiments_compose_and_build(experiment, objective, tmp_path):
    cfg = compose_deep([f"experiment={experiment}", f"objective={objective}"], tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["evaluation"]["retrieval"]["enabled"]
    if experiment != "paper_flickr":
        model = instantiate(cfg.model, _convert_="all")
        assert model.names == list(resolved["data"]["modalities"])
    instantiate(cfg.objective)


def test_paper_flickr_follows_the_paper(tmp_path):
    cfg = compose_deep(["experiment=paper_flickr"], tmp_path)
    assert cfg.data.source == "features" and cfg.data.modalities.image.size == 3857
    assert cfg.data.modalities.text.size == 2000 and cfg.model.n_joint == 2048
    image, text = cfg.model.pathways.image.layers, cfg.model.pathways.text.layers
    assert [layer.size for layer in image] == [1024, 1024] and [layer.size for layer in text] == [1024, 1024]
    assert image[0].hidden.type == "stepped_sigmoid" and image[0].hidden.n_steps == 5
    first = cfg.stages.pathway.layers.image_1
    assert first.epochs == 300 and first.optim.lr == 0.001 and first.objective.sparsity_weight == 1.0
    assert cfg.stages.top.epochs == 200 and cfg.stages.top.batch_size == 200 and cfg.optim.lr == 0.01
    assert cfg.objective.sparsity_weight == 0.01 and cfg.objective.sparsity_target == 0.2
    last = cfg.stages.finetune.image_to_text
    assert last.objective.directions == ["text"] and last.optimizer.lr == 0.03 and last.epochs == 200
    assert list(cfg.stages.finetune) == ["recurrent", "image_to_text"]


# ----------------------------------------------------------------------------- pipeline
def tiny_pipeline(shared_data: Path, run_dir: Path, extra: list[str] = ()):
    return compose_deep(
        [
            "experiment=wikipedia_deep",
            "objective=minvi_mp",
            f"data.data_dir={shared_data / 'wikipedia_xmodal'}",
            "data.max_examples={train:300,val:100,test:100}",
            "model.n_joint=12",
            "model.pathways.image.layers=[{size:12,hidden:stepped_sigmoid},{size:8}]",
            "model.pathways.text.layers=[{size:8}]",
            "stages.pathway.epochs=1",
            "stages.top.epochs=1",
            "stages.finetune.recurrent.epochs=2",
            "evaluation.mf_steps=5",
            "evaluation.classifier.Cs=[1.0]",
            *extra,
        ],
        run_dir,
    )


def stage_files(run_dir: Path, stage: str) -> dict[str, int]:
    folder = run_dir / "stages" / stage
    files = [folder / "done.json", folder / "model.pt", folder / "checkpoints" / "last.ckpt"]
    return {str(f): f.stat().st_mtime_ns for f in files}


def test_pipeline_resumes_stage_by_stage(shared_data, tmp_path):
    from mmvi.deep.pipeline import run

    run_dir = tmp_path / "run"
    assert run(tiny_pipeline(shared_data, run_dir, ["stop_after=top"])) == {}
    first = ["pathway_image_1", "pathway_image_2", "pathway_text_1", "top"]
    assert sorted(p.name for p in (run_dir / "stages").iterdir()) == sorted(first)
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "running" and res["stopped_after"] == "top"
    before = {s: stage_files(run_dir, s) for s in first}

    metrics = run(tiny_pipeline(shared_data, run_dir))
    assert {s: stage_files(run_dir, s) for s in first} == before  # not retrained
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "completed" and set(res["stages"]) == {*first, "finetune_recurrent"}
    for key in ("classify/err_multimodal", "classify/err_image", "classify/err_text", "retrieval/map_text"):
        assert key in metrics and key in res["metrics"]
    assert json.loads((run_dir / "stages" / "top" / "done.json").read_text())["metrics"]

    # the last stage loses its done.json: it resumes from its last.ckpt, the others are loaded
    (run_dir / "stages" / "finetune_recurrent" / "done.json").unlink()
    again = run(tiny_pipeline(shared_data, run_dir))
    assert {s: stage_files(run_dir, s) for s in first} == before
    assert (run_dir / "stages" / "finetune_recurrent" / "done.json").is_file()
    for m in (metrics, again):  # wall seconds differ between the two
        for key in [k for k in m if k.startswith("eval/seconds")]:
            m.pop(key)
    assert again == pytest.approx(metrics)

    # the run folder asked for with another config is refused, naming the key and both values
    with pytest.raises(ConfigError, match=r"holds a run of another configuration .*stages.top.epochs: 1 → 2"):
        run(tiny_pipeline(shared_data, run_dir, ["stages.top.epochs=2"]))
    # so is a finished stage, even without the run's record
    (run_dir / "results.json").unlink()
    with pytest.raises(
        ConfigError, match=r"stage 'top' .* finished with another configuration: epochs: 1 → 2"
    ):
        run(tiny_pipeline(shared_data, run_dir, ["stages.top.epochs=2"]))


def test_unlabelled_pairs_are_streamed_filtered_and_mapped_before_the_labelled_split():
    from mmvi.data.base import Split
    from mmvi.deep.pipeline import min_active_rows, stage_data
    from mmvi.deep.stages import SplitsDataModule, StreamDataModule

    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(
            {"t": torch.bernoulli(torch.full((n, 6), 0.3), generator=g)}, torch.eye(2)[torch.arange(n) % 2]
        )

    class WithUnlabelled(SplitsDataModule):
        def iter_unlabelled(self, batch_size: int, shuffle: bool = False, seed: int = 0):
            rng = torch.Generator().manual_seed(seed)
            for _ in range(3):
                yield {"t": torch.bernoulli(torch.full((batch_size, 6), 0.3), generator=rng)}

    dm = WithUnlabelled({"train": split(10), "val": split(4), "test": split(4)})
    dm.setup()
    data = stage_data(
        dm,
        lambda v: {"t": 2 * v["t"]},
        4,
        100,
        keep=partial(min_active_rows, "t", 2),
        unlabelled=True,
        seed=5,
    )
    assert isinstance(data, StreamDataModule)
    data.setup()
    batches = list(data.train_dataloader())
    streamed = [b for b in batches if "index" not in b]
    labelled = [b for b in batches if "index" in b]
    assert batches[: len(streamed)] == streamed and len(streamed) == 3  # unlabelled first
    assert all(set(b["modalities"]["t"].unique().tolist()) <= {0.0, 2.0} for b in batches)
    assert all(((b["modalities"]["t"] > 0).sum(-1) >= 2).all() for b in batches)
    rows = sum(b["modalities"]["t"].shape[0] for b in labelled)
    assert rows == len(data.splits["train"])
    second = list(data.train_dataloader())  # the next epoch draws other unlabelled batches
    assert not torch.equal(second[0]["modalities"]["t"], batches[0]["modalities"]["t"])
