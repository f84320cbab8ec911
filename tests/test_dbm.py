"""Multimodal DBM (the deep NLL arm): mean-field fixed points, the unnormalised probability against
brute-force enumeration, the joint-training gradient estimator against exact gradients, the doubled
pre-training RBMs, and the pipeline's ``model=mdbm`` run with resume on real data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers import all_binary, compose_job
from mmvi.deep.dbm import DBMLikelihood
from mmvi.errors import ConfigError
from mmvi.models.dbm import JOINT, MultimodalDBM, PretrainRBM

# three modalities, pathways of 2, 1 and 0 layers (visibles at both parities), every unit type
MODALITIES = {
    "x": {"size": 3, "units": "bernoulli"},
    "y": {"size": 2, "units": "gaussian"},
    "w": {"size": 3, "units": "softmax"},
}
PATHWAYS = {
    "x": {"layers": [{"size": 3}, {"size": 2, "hidden": {"type": "stepped_sigmoid", "n_steps": 2}}]},
    "y": {"layers": [{"size": 2}]},
    "w": {"layers": []},
}


def tiny_dbm(modalities=MODALITIES, pathways=PATHWAYS, n_joint: int = 2, std: float = 0.5, seed: int = 0):
    """A float64 DBM with random weights (N(0, std²)) and biases (N(0, 0.25)) in every RBM half."""
    torch.manual_seed(seed)
    model = MultimodalDBM(modalities, n_joint, pathways, init_std=std).double()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.5)
    return model


def data(model: MultimodalDBM, n: int = 5, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m in model.names:
        size, units = model.sizes[m], model.units[m].name
        if units == "bernoulli":
            out[m] = torch.bernoulli(torch.full((n, size), 0.5, dtype=torch.float64), generator=g)
        elif units == "gaussian":
            out[m] = torch.randn(n, size, generator=g, dtype=torch.float64)
        else:  # word counts, D = 1..4
            out[m] = torch.zeros(n, size, dtype=torch.float64)
            words = torch.randint(size, (n, 4), generator=g)
            keep = torch.arange(4) < torch.randint(1, 5, (n, 1), generator=g)
            out[m].scatter_add_(1, words, keep.double())
    return out


# ----------------------------------------------------------------------------- structure
def test_pretraining_rbms_double_the_inputs_of_layers_with_two_neighbours():
    """Bottom RBM: 2W up; intermediate: 2W both ways; joint RBM: 2W down into pathway tops only."""
    model = tiny_dbm()
    (x1, x2), (y1,), top = model.layers["x"], model.layers["y"], model.top
    assert (x1.up_factor, x1.down_factors) == (2.0, {"x": 1.0})
    assert (x2.up_factor, x2.down_factors) == (2.0, {"x": 2.0})
    assert (y1.up_factor, y1.down_factors) == (2.0, {"y": 1.0})
    assert (top.up_factor, top.down_factors) == (1.0, {"x": 2.0, "y": 2.0, "w": 1.0})
    v = data(model)
    h = torch.rand(5, 3, dtype=torch.float64)
    torch.testing.assert_close(x1.hidden_probs({"x": v["x"]}), torch.sigmoid(2 * (x1.c + v["x"] @ x1.W["x"])))
    torch.testing.assert_close(x1.visible_mean("x", h), torch.sigmoid(x1.b["x"] + h @ x1.W["x"].T))
    t = torch.rand(5, 2, dtype=torch.float64)
    torch.testing.assert_close(x2.visible_mean("x", t), torch.sigmoid(2 * (x2.b["x"] + t @ x2.W["x"].T)))
    # CD surrogate: the free energy's gradient is the reference's statistic −⟨v σ(2(c + Wᵀv))ᵀ⟩
    x1.zero_grad()
    x1.free_energy({"x": v["x"]}).sum().backward()
    torch.testing.assert_close(x1.W["x"].grad, -v["x"].T @ x1.hidden_probs({"x": v["x"]}).detach())
    # the data-derived visible bias is the full input 2b of a doubled visible layer
    means = torch.tensor([0.2, 0.7, 0.5], dtype=torch.float64)
    x2.init_visible_bias_from_data({"x": means})
    torch.testing.assert_close(torch.sigmoid(2 * x2.b["x"]), means)
    with pytest.raises(ValueError, match="unknown modalities"):
        PretrainRBM({"x": {"size": 2}}, 2, down_factors={"z": 2.0})


def test_compose_merges_the_bias_halves_without_changing_the_dbm():
    model = tiny_dbm()
    v = data(model)
    state = model.mean_field(v, steps=3)
    before = model.energy(state).detach()
    model.compose()
    torch.testing.assert_close(model.energy(state), before, rtol=0, atol=1e-12)
    assert not model.top.b["x"].any() and not model.top.b["y"].any() and not model.layers["x"][1].b["x"].any()
    weights, biases = model.dbm_parameters()
    assert len(weights) == 3 + 2 + 1 and len(biases) == 3 + 3 + 1
    merged = {id(model.top.b["x"]), id(model.top.b["y"]), id(model.layers["x"][1].b["x"])}
    assert not merged & {id(p) for p in weights + biases}


# ----------------------------------------------------------------------------- mean-field
@pytest.mark.parametrize("given", [("x", "y", "w"), ("x",), ("y", "w")])
def test_mean_field_fixed_point_satisfies_its_equations(given):
    model = tiny_dbm(seed=2)
    v = data(model)
    clamped = {m: v[m] for m in given}
    state = model.mean_field(clamped, steps=2000, tol=1e-14)
    free = [n for n in model.nodes if not (n.visible and n.modality in given)]
    for node in free:  # μ_n = E_n[x | the neighbours' means] for every free layer
        torch.testing.assert_close(model.node_mean(node, state), state[node.name], rtol=0, atol=1e-10)
    for m in given:
        assert state[f"{m}:0"] is v[m]
    torch.testing.assert_close(model.representation(clamped, steps=2000, tol=1e-14), state[JOINT])
    # a missing modality's prediction from the joint means is the fixed point's own
    completed, h = model.infer_missing(clamped, steps=2000, tol=1e-14)
    torch.testing.assert_close(h, state[JOINT])
    for m in set(model.names) - set(given):
        torch.testing.assert_close(completed[m], state[f"{m}:0"], rtol=0, atol=1e-8)
    # a few steps are not the fixed point
    early = model.mean_field(clamped, steps=1)
    assert (early[JOINT] - state[JOINT]).abs().max() > 1e-6


# ----------------------------------------------------------------------------- enumeration
def brute_log_unnormalized(model: MultimodalDBM, v: dict[str, torch.Tensor]) -> torch.Tensor:
    """log Σ exp(−E) over every binary state of every hidden unit (each stepped-sigmoid copy a bit),
    with the energy written out from the documented parametrisation (bias halves summed)."""
    (l1, l2), top = model.layers["x"], model.top
    a0, a1, a2 = l1.b["x"], l1.c + l2.b["x"], l2.c + top.b["x"]
    bits = all_binary(2 + 4 + 2)  # x:1, the 2 x 2 copies of x:2, joint
    h1, copies, j = bits[:, :2], bits[:, 2:6].reshape(-1, 2, 2), bits[:, 6:]
    s2 = copies.sum(-1)
    offsets = (copies * torch.tensor([0.5, 1.5], dtype=torch.float64)).sum((-1, -2))
    X, Y, Wd = v["x"], v["y"], v["w"]
    length = Wd.sum(-1, keepdim=True)
    neg_energy = (
        -0.5 * ((Y - top.b["y"]) ** 2).sum(-1, keepdim=True)
        + (X @ a0).unsqueeze(-1)
        + (Wd @ top.b["w"]).unsqueeze(-1)
        + (h1 @ a1 + s2 @ a2 - offsets).unsqueeze(0)
        + length * (j @ top.c).unsqueeze(0)
        + (X @ l1.W["x"]) @ h1.T
        + ((h1 @ l2.W["x"]) * s2).sum(-1).unsqueeze(0)
        + ((s2 @ top.W["x"]) * j).sum(-1).unsqueeze(0)
        + (Y @ top.W["y"] + Wd @ top.W["w"]) @ j.T
    )
    return torch.logsumexp(neg_energy, dim=1)


def test_unnormalised_log_probability_equals_brute_force_enumeration():
    pathways = {
        "x": {"layers": [{"size": 2}, {"size": 2, "hidden": {"type": "stepped_sigmoid", "n_steps": 2}}]},
        "y": {"layers": []},
        "w": {"layers": []},
    }
    model = tiny_dbm(pathways=pathways, std=0.8, seed=3)
    v = data(model, n=6)
    torch.testing.assert_close(
        model.log_unnormalized(v), brute_log_unnormalized(model, v), rtol=0, atol=1e-10
    )
    # the energy of one state (stepped-sigmoid values, without the copies' offsets)
    state = {"x:0": v["x"], "y:0": v["y"], "w:0": v["w"], "x:1": torch.ones(6, 2, dtype=torch.float64)}
    state["x:2"] = torch.tensor([[2.0, 1.0]], dtype=torch.float64).expand(6, 2)
    state[JOINT] = torch.tensor([[1.0, 0.0]], dtype=torch.float64).expand(6, 2)
    (l1, l2), top = model.layers["x"], model.top
    expected = (
        0.5 * ((v["y"] - top.b["y"]) ** 2).sum(-1)
        - v["x"] @ l1.b["x"]
        - v["w"] @ top.b["w"]
        - (l1.c + l2.b["x"]).sum()
        - state["x:2"] @ (l2.c + top.b["x"])
        - v["w"].sum(-1) * top.c[0]
        - (v["x"] @ l1.W["x"]).sum(-1)
        - (l2.W["x"] @ state["x:2"][0]).sum()
        - (state["x:2"] @ top.W["x"])[:, 0]
        - (v["y"] @ top.W["y"] + v["w"] @ top.W["w"])[:, 0]
    )
    torch.testing.assert_close(model.energy(state), expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="missing"):
        model.log_unnormalized({"x": v["x"]})


# ----------------------------------------------------------------------------- estimator
def all_states(model: MultimodalDBM) -> dict[str, torch.Tensor]:
    """Every joint state of an all-binary DBM, as ``{layer: (2^n, size)}``."""
    bits, out, start = all_binary(sum(n.size for n in model.nodes)), {}, 0
    for node in model.nodes:
        out[node.name] = bits[:, start : start + node.size]
        start += node.size
    return out


def mean_field_bound(model: MultimodalDBM, v, states, mu=None) -> torch.Tensor:
    """E_Q[−E(v, ·)] + H(Q) − log Z, averaged over the batch (Q = the mean-field fixed point μ,
    re-solved unless given; log Z by enumeration)."""
    mu = mu if mu is not None else {k: x.detach() for k, x in model.mean_field(v).items()}
    hidden = [n.name for n in model.nodes if not n.visible]
    entropy = sum(-(mu[k] * mu[k].log() + (1 - mu[k]) * (-mu[k]).log1p()).sum(-1) for k in hidden)
    log_z = torch.logsumexp(-model.energy(states), 0)
    return (-model.energy(mu) + entropy).mean() - log_z


def flat_grad(model: MultimodalDBM) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("deep", [True, False])
def test_joint_training_estimator_matches_the_exact_gradient_in_expectation(deep):
    """The estimator's expectation (persistent chains run long, many of them) equals the exact
    gradient, with log Z and the model expectations enumerated.

    deep=True (x → 2 → joint, y → joint): the positive phase is mean-field, so the estimator targets
    the mean-field lower bound E_Q[−E] + H(Q) − log Z; its exact gradient is checked against finite
    differences of the bound (re-solving the mean-field at each point: the envelope property of a
    stationary Q), and the estimator against it. deep=False (no pathway layers, an RBM): the
    posterior factorises, mean-field is exact, the bound is log p(v) and the estimator targets the
    exact log-likelihood gradient.
    """
    pathways = {"x": {"layers": [{"size": 2}] if deep else []}, "y": {"layers": []}}
    modalities = {
        "x": {"size": 2 if deep else 3, "units": "bernoulli"},
        "y": {"size": 2, "units": "bernoulli"},
    }
    model = tiny_dbm(modalities, pathways, n_joint=2 if deep else 3, std=1.0, seed=4)
    model.mf_steps, model.mf_tol = 1000, 1e-13  # the estimator's positive phase at the fixed point
    v = data(model, n=4)
    states = all_states(model)
    mu = {k: x.detach() for k, x in model.mean_field(v).items()}

    model.zero_grad()
    (-mean_field_bound(model, v, states, mu)).backward()
    exact = flat_grad(model)  # −∇ bound: what the loss's gradient estimates
    if deep:  # envelope: the bound's total derivative (Q re-solved) is the derivative at fixed Q
        W = model.layers["x"][0].W["x"]
        for i, j in ((0, 0), (1, 1)):
            old = W.data[i, j].item()
            values = []
            for eps in (1e-5, -1e-5):
                W.data[i, j] = old + eps
                values.append(float(mean_field_bound(model, v, states).detach()))
            W.data[i, j] = old
            torch.testing.assert_close(
                -(values[0] - values[1]) / 2e-5, float(W.grad[i, j]), rtol=1e-5, atol=1e-7
            )
    else:  # mean-field is exact: the bound is the log-likelihood
        log_p = model.log_unnormalized(v) - torch.logsumexp(-model.energy(states), 0)
        torch.testing.assert_close(mean_field_bound(model, v, states, mu), log_p.mean(), rtol=0, atol=1e-10)

    torch.manual_seed(5)
    grads = []
    for _ in range(8):  # independent estimates: 8 objectives x 2000 chains, 100 sweeps of burn-in
        objective = DBMLikelihood(n_chains=2000, gibbs_steps=1)
        objective.setup(model)
        with torch.no_grad():
            for _ in range(100):
                objective.negative_phase(model, mu)
        model.zero_grad()
        objective(model, v)[0].backward()
        grads.append(flat_grad(model))
    grads = torch.stack(grads)
    mean, stderr = grads.mean(0), grads.std(0) / grads.shape[0] ** 0.5
    assert ((mean - exact).abs() <= 4 * stderr + 1e-4).all(), (mean - exact) / stderr
    # the test has power: the positive phase alone is many standard errors away
    model.zero_grad()
    model.energy(mu).mean().backward()
    assert ((flat_grad(model) - exact).abs() > 20 * stderr + 1e-3).any()


def test_chains_are_checkpointed_buffers_and_the_estimator_needs_a_dbm():
    model = tiny_dbm()
    objective = DBMLikelihood(n_chains=7, gibbs_steps=2)
    objective.setup(model)
    assert objective.native_inference_steps == model.mf_steps
    v = data(model)
    loss, logs = objective(model, v)
    assert torch.isfinite(loss) and set(logs) == {"energy_data", "energy_model"}
    state = objective.state_dict()
    assert bool(state["chains_ready"]) and state["chain_0"].shape == (7, 3)
    assert torch.equal(state["chain_5"].sum(-1), v["w"].sum(-1)[torch.arange(7) % 5])  # lengths kept
    from mmvi.models import MultimodalRBM

    with pytest.raises(ValueError, match="model=mdbm"):
        DBMLikelihood().setup(MultimodalRBM({"x": {"size": 2}}, 2))


# ----------------------------------------------------------------------------- pipeline
def tiny_run(shared_data: Path, run_dir: Path, extra: list[str] = ()):
    return compose_job(
        "deep",
        [
            "experiment=wikipedia_deep",
            "model=mdbm",
            f"data.data_dir={shared_data / 'wikipedia_xmodal'}",
            "data.max_examples={train:300,val:100,test:100}",
            "model.n_joint=12",
            "model.mf_steps=4",
            "model.pathways.image.layers=[{size:12,hidden:stepped_sigmoid},{size:8}]",
            "stages.pathway.epochs=1",
            "stages.top.epochs=1",
            "stages.joint.epochs=2",
            "stages.joint.objective.n_chains=20",
            "evaluation.classifier.Cs=[1.0]",
            "logger=none",
            *extra,
        ],
        run_dir,
    )


def stage_times(run_dir: Path, stages: list[str]) -> dict[str, int]:
    return {s: (run_dir / "stages" / s / "done.json").stat().st_mtime_ns for s in stages}


def test_model_mdbm_wins_over_the_experiments_model_and_takes_its_pathways(tmp_path):
    for order in (["experiment=flickr_offline", "model=mdbm"], ["model=mdbm", "experiment=flickr_offline"]):
        cfg = compose_job("deep", order, tmp_path)
        assert cfg.model._target_.endswith("MultimodalDBM") and cfg.model.n_joint == 256
        assert [layer.size for layer in cfg.model.pathways.text.layers] == [256, 128]
        assert cfg.stages.joint.epochs == 40


def test_pipeline_trains_the_dbm_and_resumes(shared_data, tmp_path):
    from mmvi.deep.pipeline import run

    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match="stop_after='finetune_recurrent' is not a stage"):
        run(tiny_run(shared_data, run_dir, ["stop_after=finetune_recurrent"]))
    bad = ["stages.joint.objective._target_=mmvi.objectives.ContrastiveDivergence"]
    with pytest.raises(ConfigError, match="stages.joint.objective"):
        run(tiny_run(shared_data, tmp_path / "bad", bad))
    assert not (tmp_path / "bad" / "stages").exists()  # refused before any stage trained

    assert run(tiny_run(shared_data, run_dir, ["stop_after=top"])) == {}
    first = ["pathway_image_1", "pathway_image_2", "top"]
    assert sorted(p.name for p in (run_dir / "stages").iterdir()) == sorted(first)
    spec = json.loads((run_dir / "stages" / "top" / "done.json").read_text())["spec"]
    assert spec["model"]["down_factors"] == {"image": 2.0, "text": 1.0}
    assert spec["objective"]["_target_"].endswith("ContrastiveDivergence")  # NLL, as the pathway layers
    before = stage_times(run_dir, first)

    metrics = run(tiny_run(shared_data, run_dir))
    assert stage_times(run_dir, first) == before
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "completed" and set(res["stages"]) == {*first, "joint"}
    assert metrics["eval/mf_steps"] == 4  # native inference: the DBM's training mean-field steps
    for key in ("classify/err_multimodal", "classify/err_image", "classify/err_text", "retrieval/map_text"):
        assert key in res["metrics"] and torch.isfinite(torch.tensor(metrics[key]))
    joint = torch.load(run_dir / "stages" / "joint" / "checkpoints" / "last.ckpt", weights_only=False)
    assert joint["state_dict"]["objective.chain_0"].shape == (20, 128)  # chains in the checkpoint

    # the joint stage loses its done.json: it resumes from last.ckpt, the others are loaded
    (run_dir / "stages" / "joint" / "done.json").unlink()
    again = run(tiny_run(shared_data, run_dir))
    assert stage_times(run_dir, first) == before
    for m in (metrics, again):  # wall seconds differ between the two
        for key in [k for k in m if k.startswith("eval/seconds")]:
            m.pop(key)
    assert again == pytest.approx(metrics)

    # evaluation after a stage, in its own folder (the finished stages copied: nothing retrains)
    top_dir = tmp_path / "top"
    for stage in first:
        shutil.copytree(run_dir / "stages" / stage, top_dir / "stages" / stage)
    top = run(tiny_run(shared_data, top_dir, ["stop_after=top", "evaluate_stopped=true"]))
    res = json.loads((top_dir / "results.json").read_text())
    assert res["status"] == "completed" and res["stopped_after"] == "top" and "classify/err_text" in top
    assert top["cond_ce/image_given_text"] != pytest.approx(
        metrics["cond_ce/image_given_text"]
    )  # pre-trained only
    with pytest.raises(ConfigError, match="holds an evaluation after stage top"):
        run(tiny_run(shared_data, top_dir))
    assert json.loads((top_dir / "results.json").read_text())["status"] == "completed"
