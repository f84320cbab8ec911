"""The options that make the PCD update follow the reference code (docs/paper.md §2, docs/reference-settings.md):
negative statistics from hidden states, momentum on the positive statistics only, a zero first velocity,
the visible-bias clip."""

from __future__ import annotations

import pytest
import torch

from helpers import tiny_model
from mmvi.api import run
from mmvi.errors import ConfigError
from mmvi.lit import reference_update
from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives.nll import ContrastiveDivergence


def _grads(loss, model):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("persistent", [False, True])
def test_hidden_state_statistics_are_the_references(persistent):
    """∂loss/∂W_m = −v_mᵀσ(act)/B + E[v_m|h_k]ᵀh_k/n, ∂/∂b_m, ∂/∂c likewise (mrbm_train_bin_bin.m)."""
    model = tiny_model({"x": 4, "y": 3}, n_hidden=5, std=0.7, seed=1)
    obj = ContrastiveDivergence(k=3, persistent=persistent, n_chains=9, negative_statistics="hidden_states")
    obj.setup(model)
    torch.manual_seed(0)
    v = {m: torch.bernoulli(torch.full((8, n), 0.4, dtype=torch.float64)) for m, n in model.sizes.items()}
    loss, _ = obj(model, v)
    g = _grads(loss, model)
    h = obj.last_hidden
    assert set(h.unique().tolist()) <= {0.0, 1.0} and h.shape[0] == (9 if persistent else 8)
    with torch.no_grad():
        ph = torch.sigmoid(model.hidden_input(v))
        for m in model.names:
            vm = torch.sigmoid(h @ model.W[m].T + model.b[m])
            want_w = -v[m].T @ ph / 8 + vm.T @ h / h.shape[0]
            torch.testing.assert_close(g[f"W.{m}"], want_w)
            torch.testing.assert_close(g[f"b.{m}"], -v[m].mean(0) + vm.mean(0))
        torch.testing.assert_close(g["c"], -ph.mean(0) + h.mean(0))
    # the negative part alone carries the model statistics
    torch.testing.assert_close(obj.negative_part, loss - model.free_energy(v).mean())


def test_negative_statistics_refuses_unknown():
    with pytest.raises(ValueError, match="negative_statistics='states'"):
        ContrastiveDivergence(negative_statistics="states")


def test_update_is_the_references_pcd_update():
    """update_params.m with usepcd: u ← μu + (1 − μ)ε·pos; θ ← θ + u − ε·neg, u₀ = 0 (three steps)."""
    torch.manual_seed(0)
    theta = torch.nn.Parameter(torch.randn(6, dtype=torch.float64))
    ref_theta, u = theta.detach().clone(), torch.zeros(6, dtype=torch.float64)
    mu, eps = 0.33, 0.1
    opt = torch.optim.SGD([theta], lr=eps, momentum=mu, dampening=mu)
    optim = {"momentum_negative": False, "velocity_init": "zero"}
    for _ in range(3):
        pos, neg = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
        # the descent gradient of the positive part is −pos; the negative part's is +neg
        theta.grad = -pos.clone()
        reference_update.init_velocity(optim, opt)
        opt.step()
        reference_update.apply_negative(opt, [theta], (neg,))
        u = mu * u + (1 - mu) * eps * pos
        ref_theta = ref_theta + u - eps * neg
        torch.testing.assert_close(theta.detach(), ref_theta)


def test_default_velocity_starts_at_the_gradient():
    theta = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = torch.optim.SGD([theta], lr=0.1, momentum=0.5, dampening=0.5)
    theta.grad = torch.ones(3, dtype=torch.float64)
    reference_update.init_velocity({"velocity_init": "gradient"}, opt)
    opt.step()
    torch.testing.assert_close(theta.detach(), torch.full((3,), -0.1, dtype=torch.float64))


def test_visible_bias_clip():
    model = MultimodalRBM({"x": {"size": 3}}, n_hidden=2, visible_bias_clip=0.01)
    model.init_visible_bias_from_data({"x": torch.tensor([0.0, 0.5, 1.0])})
    want = torch.logit(torch.tensor([0.01, 0.5, 0.99]))
    torch.testing.assert_close(model.b["x"].detach(), want)
    with pytest.raises(ValueError, match="visible_bias_clip"):
        MultimodalRBM({"x": {"size": 3}}, n_hidden=2, visible_bias_clip=0.5)


TINY = [
    "data=mnist5k",
    "data.max_examples={train:500,val:200,test:200}",
    "model.n_hidden=12",
    "trainer.max_epochs=2",
    "evaluation.n_generation=0",
    "logger=none",
    "optim=paper_sgd",
]


def test_reference_update_trains(tmp_path):
    """A real run with every reference option on: it finishes with finite measures."""
    over = [
        *TINY,
        "objective=nll_pcd",
        "objective.n_chains=50",
        "objective.negative_statistics=hidden_states",
        "optim.momentum_negative=false",
        "optim.velocity_init=zero",
        "model.visible_bias_clip=0.01",
    ]
    out = run(over, run_dir=tmp_path / "run")
    assert out["results"]["status"] == "completed"
    assert 0 < out["metrics"]["classify/err_multimodal"] < 100
    assert torch.isfinite(torch.tensor(out["metrics"]["cond_ce/right_given_left"]))


def test_momentum_negative_needs_a_negative_phase(tmp_path):
    with pytest.raises(ConfigError, match="momentum_negative=false needs an objective with a negative phase"):
        run([*TINY, "objective=minvi_mp", "optim.momentum_negative=false"], run_dir=tmp_path / "run")
