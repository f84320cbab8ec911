"""Objectives: gradients against finite differences, samplers against their definitions."""

from __future__ import annotations

import pytest
import torch

from helpers import all_binary, assert_gradient_matches_finite_differences, split_state, tiny_model
from mmvi.objectives import CDPercLoss, ContrastiveDivergence, Mixture, MultiPrediction, sparsity_penalty


def _batch(model, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.rand(n, model.sizes[m], generator=g, dtype=torch.float64) for m in model.names}


def test_mp_loss_gradient_matches_finite_differences():
    model = tiny_model({"x": 4, "y": 3}, n_hidden=5, std=0.5, seed=4)
    obj = MultiPrediction(mask_rate=0.5, mf_steps=4, bptt_steps=4, grow_every=0)
    v = _batch(model)

    def loss() -> torch.Tensor:
        torch.manual_seed(123)  # same masks at every evaluation
        return obj(model, v)[0]

    assert_gradient_matches_finite_differences(loss, model, samples=5)


def test_mp_truncation_cuts_the_gradient_of_early_steps():
    model = tiny_model({"x": 4, "y": 3}, n_hidden=5, std=0.5, seed=5)
    v = _batch(model)
    grads = {}
    for k in (1, 4):
        obj = MultiPrediction(mask_rate=0.5, mf_steps=4, bptt_steps=k, grow_every=0)
        model.zero_grad()
        torch.manual_seed(0)
        obj(model, v)[0].backward()
        grads[k] = model.W["x"].grad.clone()
    assert not torch.allclose(grads[1], grads[4])
    obj = MultiPrediction(mf_steps=5, bptt_steps=5, grow_every=20)
    assert [obj.truncation() for obj.epoch in (0, 19, 20, 45, 200)] == [1, 1, 2, 3, 5]


def test_cd_percloss_returns_the_lowest_free_energy_state_seen():
    model = tiny_model({"x": 6, "y": 5}, n_hidden=7, std=1.0, seed=9)
    g = torch.Generator().manual_seed(0)
    v = {
        m: torch.bernoulli(torch.full((16, model.sizes[m]), 0.5, dtype=torch.float64), generator=g)
        for m in model.names
    }
    obj = CDPercLoss(k=6)
    torch.manual_seed(3)
    best, best_act = obj.lowest_energy_prediction(model, v, "y")
    # replay the same chain (same seed) and score every state with the model's free energy
    torch.manual_seed(3)
    h = model.hidden.sample(model.hidden_input({"x": v["x"]}, model.missing_scale(["x"])))
    states = [s for s, _, _ in model.clamped_chain({"x": v["x"]}, "y", model.sample_visible("y", h), 6)]
    assert len(states) == 7  # the start state and k chain states
    energies = torch.stack([model.free_energy({"x": v["x"], "y": s}) for s in states])
    expected = torch.stack(states)[energies.argmin(0), torch.arange(16)]
    torch.testing.assert_close(best, expected)
    # the kept state's hidden input comes with it (reused for the negative statistics)
    torch.testing.assert_close(best_act, model.hidden_input({"x": v["x"], "y": best}))
    assert len({tuple(r) for s in states for r in s.tolist()}) > 16  # the chain moved


def test_clamped_chain_energies_are_free_energies():
    model = tiny_model({"x": 4, "y": 3}, n_hidden=5, std=0.8, seed=10)
    v = _batch(model)
    for x, f, act in model.clamped_chain({"x": v["x"]}, "y", v["y"], 3):
        torch.testing.assert_close(f, model.free_energy({"x": v["x"], "y": x}))
        torch.testing.assert_close(act, model.hidden_input({"x": v["x"], "y": x}))


def test_pcd_chains_persist_across_steps_and_live_in_the_state_dict():
    model = tiny_model({"x": 4, "y": 3}, n_hidden=5, std=0.5, seed=6)
    obj = ContrastiveDivergence(k=2, persistent=True, n_chains=10)
    obj.setup(model)
    assert "chains_hidden" in obj.state_dict() and "chains_ready" in obj.state_dict()
    v = _batch(model)
    starts = []
    original = model.sample_visible

    def recording(m, h, length=None):
        starts.append(h.clone())
        return original(m, h, length)

    model.sample_visible = recording
    obj(model, v)
    after_first = obj.chains_hidden.clone()
    starts.clear()
    obj(model, v)
    assert starts[0].shape == (10, 5)
    torch.testing.assert_close(starts[0], after_first)  # the second update starts where the first ended
    assert not torch.equal(obj.chains_hidden, after_first)
    # CD restarts at a hidden sample of the data
    cd = ContrastiveDivergence(k=1, persistent=False)
    starts.clear()
    cd(model, v)
    assert starts[0].shape == (8, 5)


def test_nll_gradient_estimates_the_likelihood_gradient():
    """With exact negative statistics, ∇[F(data) − F(model samples)] → −∇ mean log P(v)."""
    model = tiny_model({"x": 3, "y": 2}, n_hidden=3, std=0.7, seed=7)
    states = split_state(model, all_binary(5))
    data = {m: x[[1, 5, 6, 30]] for m, x in states.items()}
    # exact −mean log P(data) gradient by autograd through log Z
    f_all = model.free_energy(states)
    exact = model.free_energy(data).mean() + torch.logsumexp(-f_all, 0)
    g_exact = torch.autograd.grad(exact, model.W["x"])[0]
    # the surrogate with many exact samples from P(v)
    p = torch.softmax(-f_all.detach(), 0)
    idx = torch.multinomial(p, 200000, replacement=True, generator=torch.Generator().manual_seed(0))
    neg = {m: x[idx] for m, x in states.items()}
    surrogate = model.free_energy(data).mean() - model.free_energy(neg).mean()
    g_sur = torch.autograd.grad(surrogate, model.W["x"])[0]
    assert (g_sur - g_exact).abs().max() < 0.02


def test_mixture_endpoints_equal_their_parts():
    model = tiny_model({"x": 4, "y": 3}, n_hidden=5, std=0.5, seed=8)
    v = _batch(model)
    mp = MultiPrediction(mask_rate=0.3, mf_steps=3, bptt_steps=3, grow_every=0)
    cd = ContrastiveDivergence(k=1)
    for alpha, part in ((1.0, mp), (0.0, cd)):
        mix = Mixture(minvi=mp, nll=cd, alpha=alpha)
        torch.manual_seed(1)
        a = mix(model, v)[0]
        torch.manual_seed(1)
        b = part(model, v)[0]
        torch.testing.assert_close(a, b)


def test_sparsity_penalty_is_minimal_at_the_target():
    target = 0.1
    values = torch.linspace(0.01, 0.9, 90)
    pens = torch.stack([sparsity_penalty(torch.full((4, 3), float(p)), target) for p in values])
    assert abs(values[pens.argmin()].item() - target) < 0.011


@pytest.mark.slow
def test_compiled_objective_equals_eager():
    model = tiny_model({"x": 4, "y": 3}, n_hidden=5, std=0.5, seed=11)
    # mask_rate 0 hides the predicted half whole: the loss is deterministic (compiled code draws
    # its random numbers differently from eager code)
    obj = MultiPrediction(mask_rate=0.0, mf_steps=3, bptt_steps=3, grow_every=0)
    v = _batch(model)
    eager = obj(model, v)[0]
    compiled = torch.compile(obj.forward)(model, v)[0]
    torch.testing.assert_close(compiled, eager)
    g_eager = torch.autograd.grad(eager, model.W["x"])[0]
    g_compiled = torch.autograd.grad(torch.compile(obj.forward)(model, v)[0], model.W["x"])[0]
    torch.testing.assert_close(g_compiled, g_eager)
