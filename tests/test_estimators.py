"""The estimators as the reference code runs them, computed without repeated work.

* the negative statistics from a chain's own hidden input equal autograd through F (every unit type);
* CD/PCD, conditional CD and CD-PercLoss give the gradient of F(data) − F(negative states) exactly;
* MP's graph-free steps before the back-propagation window give the gradient of the unrolled loop
  with the reference's truncation (the visible state feeding update T − K held constant);
* dynamic binarisation, the PCD Gibbs-step ramp, running-average sparsity, the MP hidden clamp.
"""

from __future__ import annotations

import pytest
import torch

from helpers import tiny_model
from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives import CDPercLoss, ConditionalCD, ContrastiveDivergence, Mixture, MultiPrediction
from mmvi.objectives.base import sparsity_penalty


def _batch(model, n=8, seed=0, binary=False):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m in model.names:
        x = torch.rand(n, model.sizes[m], generator=g, dtype=torch.float64)
        if model.units[m].name == "softmax":
            x = torch.randint(0, 4, (n, model.sizes[m]), generator=g).double()
        elif model.units[m].name == "gaussian":
            x = torch.randn(n, model.sizes[m], generator=g, dtype=torch.float64)
        out[m] = (x > 0.5).double() if binary and model.units[m].name == "bernoulli" else x
    return out


def _grads(loss, model) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)))


def _mixed_model(hidden="bernoulli") -> MultimodalRBM:
    torch.manual_seed(0)
    model = MultimodalRBM(
        {
            "img": {"size": 4, "units": "gaussian"},
            "txt": {"size": 5, "units": "softmax"},
            "bin": {"size": 3, "units": "bernoulli"},
        },
        n_hidden=6,
        init_std=0.5,
        hidden_units=hidden,
    ).double()
    with torch.no_grad():
        for m in model.names:
            model.b[m].normal_(0, 0.5)
        model.c.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("hidden", ["bernoulli", "stepped_sigmoid"])
def test_free_energy_from_the_chains_hidden_input_has_the_free_energy_gradient(hidden):
    model = _mixed_model(hidden)
    v = _batch(model, n=7)
    act = model.hidden_input(v).detach()
    fast = model.mean_free_energy_given_input(v, act)
    slow = model.free_energy(v).mean()
    torch.testing.assert_close(fast, slow)
    g_fast, g_slow = _grads(fast, model), _grads(slow, model)
    for name in g_slow:
        torch.testing.assert_close(g_fast[name], g_slow[name], msg=name)


def _record(obj, attr):
    """Wrap ``obj.attr`` to keep its outputs (the negative states an estimator used)."""
    seen = []
    original = getattr(obj, attr)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out)
        return out

    setattr(obj, attr, wrapper)
    return seen


@pytest.mark.parametrize("persistent", [False, True])
def test_cd_and_pcd_give_the_gradient_of_the_free_energy_difference(persistent):
    model = tiny_model({"x": 4, "y": 3}, n_hidden=5, std=0.7, seed=1)
    obj = ContrastiveDivergence(k=3, persistent=persistent, n_chains=9)
    obj.setup(model)
    v = _batch(model, binary=True)
    negatives = _record(obj, "negative_sample")
    torch.manual_seed(0)
    loss, _ = obj(model, v)
    neg, neg_act = negatives[0]
    torch.testing.assert_close(neg_act, model.hidden_input(neg))
    assert next(iter(neg.values())).shape[0] == (9 if persistent else 8)
    reference = model.free_energy(v).mean() - model.free_energy(neg).mean()
    torch.testing.assert_close(loss, reference)
    g, g_ref = _grads(loss, model), _grads(reference, model)
    for name in g_ref:
        torch.testing.assert_close(g[name], g_ref[name], msg=name)


@pytest.mark.parametrize("cls", [ConditionalCD, CDPercLoss])
def test_conditional_samplers_give_the_gradient_of_the_free_energy_difference(cls):
    model = tiny_model({"x": 4, "y": 3}, n_hidden=5, std=0.7, seed=2)
    obj = cls(k=4)
    obj.setup(model)
    v = _batch(model, binary=True)
    torch.manual_seed(5)
    loss, _ = obj(model, v)
    # replay the chains with the same seed to get the negative states
    torch.manual_seed(5)
    negs = []
    for m in model.names:
        rest = {n: v[n] for n in model.names if n != m}
        if cls is CDPercLoss:
            best, _ = obj.lowest_energy_prediction(model, v, m)
        else:
            *_, (best, _, _) = model.clamped_chain(rest, m, v[m], obj.k)
        negs.append({**rest, m: best})
    reference = model.free_energy(v).mean() - sum(model.free_energy(n).mean() for n in negs) / 2
    torch.testing.assert_close(loss, reference)
    g, g_ref = _grads(loss, model), _grads(reference, model)
    for name in g_ref:
        torch.testing.assert_close(g[name], g_ref[name], msg=name)


def _reference_truncated_mp(model, v, observed, rates, T, K):
    """The unrolled MP loop with autograd everywhere and the reference's truncation: the visible
    state feeding update T − K is detached (nothing detached when K ≥ T)."""
    part = [m for m in model.names if observed[m] is not None]
    full = {m: v[m] for m in model.names if observed[m] is None}
    s = 1 + sum((1 - rates[m]) * model.sizes[m] for m in part) / sum(model.sizes[m] for m in full)
    h = torch.sigmoid(
        model.c + s * model.bottom_up(full) + model.bottom_up({m: observed[m] * v[m] for m in part})
    )
    for t in range(T):
        state = {m: torch.lerp(model.visible_mean(m, h), v[m], observed[m]) for m in part}
        if t == T - K - 1:
            state = {m: x.detach() for m, x in state.items()}
        h = torch.sigmoid(model.c + model.bottom_up(full) + model.bottom_up(state))
    return {m: model.visible_input(m, h) for m in part}


@pytest.mark.parametrize("K", [1, 2, 4, 5])
def test_mp_window_without_graph_equals_the_reference_truncation(K):
    model = tiny_model({"x": 4, "y": 3}, n_hidden=5, std=0.7, seed=3)
    obj = MultiPrediction(mask_rate=0.5, mf_steps=5, bptt_steps=K, grow_every=0)
    v = _batch(model)
    torch.manual_seed(2)
    observed, rates = obj.sample_masks(model, v, "y")
    acts, _ = obj.predict(model, v, observed, rates)
    ref = _reference_truncated_mp(model, v, observed, rates, 5, K)
    torch.testing.assert_close(acts["y"], ref["y"])
    g = _grads(acts["y"].sum(), model)
    g_ref = _grads(ref["y"].sum(), model)
    for name in g_ref:
        torch.testing.assert_close(g[name], g_ref[name], msg=name)


def test_mp_initial_scale_is_the_references_two_minus_p():
    model = tiny_model({"x": 4, "y": 4}, n_hidden=3, std=0.7, seed=4)
    obj = MultiPrediction(mask_rate=0.25, mf_steps=1, bptt_steps=1, grow_every=0)
    v = _batch(model)
    observed = {"x": None, "y": torch.zeros_like(v["y"])}
    seen = []
    original = model.hidden.mean
    model.hidden.mean = lambda x: seen.append(x) or original(x)
    obj.predict(model, v, observed, {"y": 0.25})
    model.hidden.mean = original
    torch.testing.assert_close(seen[0], model.c + 1.75 * v["x"] @ model.W["x"])


def test_mp_clamps_hidden_means_inside_the_loop():
    model = tiny_model({"x": 4, "y": 3}, n_hidden=5, std=0.7, seed=5)
    with torch.no_grad():
        model.c.fill_(40.0)  # σ(40) = 1 − 4e-18
    obj = MultiPrediction(mask_rate=0.0, mf_steps=3, bptt_steps=3, grow_every=0, hidden_clamp=1e-6)
    _, h = obj.predict(model, _batch(model), {"x": None, "y": torch.zeros(8, 3, dtype=torch.float64)})
    assert float(h.max()) == pytest.approx(1 - 1e-6)


def test_dynamic_binarisation_draws_a_fresh_binary_batch_from_the_global_rng():
    model = tiny_model({"x": 6, "y": 5}, n_hidden=3, std=0.5, seed=6)
    v = _batch(model, n=500)
    obj = ContrastiveDivergence(k=1, binarize_data=True)
    torch.manual_seed(11)
    a = obj.prepare(model, v)
    torch.manual_seed(11)
    b = obj.prepare(model, v)
    c = obj.prepare(model, v)
    for m in model.names:
        assert set(a[m].unique().tolist()) <= {0.0, 1.0}
        torch.testing.assert_close(a[m], b[m])  # same seed, same draw
        assert not torch.equal(b[m], c[m])  # a fresh draw each time the batch is used
        assert abs(float(a[m].mean() - v[m].mean())) < 0.03  # E[x] = v
    assert MultiPrediction().prepare(model, v)["x"] is v["x"]  # MP trains on the intensities


def test_pcd_gibbs_steps_ramp_as_the_reference():
    obj = ContrastiveDivergence(k=10, persistent=True, k_schedule="ramp")
    ks = []
    for epoch in (0, 9, 10, 19, 20, 89, 90, 299):
        obj.set_epoch(epoch)
        ks.append(obj.steps())
    assert ks == [1, 1, 2, 2, 3, 9, 10, 10]
    assert ContrastiveDivergence(k=4).steps() == 4
    with pytest.raises(ValueError, match="k_schedule"):
        ContrastiveDivergence(k_schedule="linear")


def test_running_average_sparsity_moves_only_the_hidden_biases():
    model = tiny_model({"x": 4, "y": 3}, n_hidden=5, std=0.7, seed=7)
    obj = CDPercLoss(k=1, sparsity_weight=0.3, sparsity_target=0.05, sparsity_form="running_average")
    obj.setup(model)
    v = _batch(model, binary=True)
    p_bar = model.hidden_probs(v).mean(0).detach()
    torch.manual_seed(0)
    with_sp, logs = obj(model, v)
    expected_avg = 0.1 * p_bar  # q̄ starts at 0: 0.9·0 + 0.1·p̄
    torch.testing.assert_close(obj.sparsity_running, expected_avg)
    assert float(logs["sparsity"]) == pytest.approx(float(sparsity_penalty(expected_avg.unsqueeze(0), 0.05)))
    obj.sparsity_weight = 0.0
    torch.manual_seed(0)
    without, _ = obj(model, v)
    g_with, g_without = _grads(with_sp, model), _grads(without, model)
    for name in g_with:
        diff = g_with[name] - g_without[name]
        if name == "c":
            torch.testing.assert_close(diff, 0.3 * (expected_avg - 0.05))
        else:
            assert float(diff.abs().max()) < 1e-12, name


def test_exact_sparsity_adds_one_penalty_per_mp_direction():
    model = tiny_model({"x": 4, "y": 3}, n_hidden=5, std=0.7, seed=8)
    obj = MultiPrediction(mask_rate=0.0, mf_steps=2, bptt_steps=2, grow_every=0, sparsity_weight=0.1)
    v = _batch(model)
    _, hidden, _ = obj.terms(model, v)
    assert isinstance(hidden, list) and len(hidden) == 2
    _, logs = obj(model, v)
    expected = sum(sparsity_penalty(h, 0.1) for h in hidden)
    assert float(logs["sparsity"]) == pytest.approx(float(expected))


def test_hybrid_parts_keep_their_own_data_and_sparsity():
    model = tiny_model({"x": 4, "y": 3}, n_hidden=5, std=0.7, seed=9)
    mp = MultiPrediction(mask_rate=0.1, mf_steps=2, bptt_steps=2, grow_every=0, sparsity_weight=0.1)
    pcd = ContrastiveDivergence(
        k=1,
        persistent=True,
        n_chains=6,
        sparsity_weight=0.1,
        sparsity_form="running_average",
        binarize_data=True,
    )
    mix = Mixture(minvi=mp, nll=pcd, alpha=0.5)
    mix.setup(model)
    batches = {}
    for name, part in (("mp", mp), ("pcd", pcd)):
        original = part.terms
        part.terms = lambda model, v, name=name, original=original: (
            batches.setdefault(name, v) and original(model, v)
        )
    v = _batch(model)
    _, logs = mix(model, v)
    assert "minvi/sparsity" in logs and "nll/sparsity" in logs
    assert float(pcd.sparsity_running.sum()) > 0
    assert set(batches["pcd"]["x"].unique().tolist()) == {0.0, 1.0}  # the NLL part: a binary draw
    torch.testing.assert_close(batches["mp"]["x"], v["x"])  # the MP part: the intensities
    with pytest.raises(ValueError, match="set on its parts"):
        Mixture(minvi=mp, nll=pcd, sparsity_weight=0.1)
