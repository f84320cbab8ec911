"""MultimodalRBM against brute-force enumeration on tiny state spaces."""

from __future__ import annotations

import pytest
import torch

from helpers import all_binary, brute_free_energy, split_state, tiny_model
from mmvi.models.units import make_units


@pytest.mark.parametrize("units", ["bernoulli", "gaussian"])
def test_free_energy_equals_sum_over_hidden(units):
    model = tiny_model({"x": 3, "y": 2}, n_hidden=4, units=units)
    if units == "bernoulli":
        v = split_state(model, all_binary(5))
    else:
        v = split_state(model, torch.randn(16, 5, dtype=torch.float64))
    torch.testing.assert_close(model.free_energy(v), brute_free_energy(model, v), rtol=0, atol=1e-10)


def test_hidden_probs_equal_enumeration():
    model = tiny_model({"x": 3, "y": 2}, n_hidden=3)
    v = split_state(model, all_binary(5))
    hs = all_binary(3)
    n = 32
    logp = torch.stack([-model.energy(v, h.expand(n, -1)) for h in hs], dim=1)
    post = torch.softmax(logp, dim=1)  # P(h | v) over the 8 hidden states
    expected = post @ hs
    torch.testing.assert_close(model.hidden_probs(v), expected, rtol=0, atol=1e-12)


def test_conditional_of_one_modality_equals_joint_enumeration():
    """P(v_m | v_rest) from free energies equals marginalising the enumerated joint P(v, h)."""
    model = tiny_model({"x": 3, "y": 3}, n_hidden=3, seed=1)
    states = all_binary(6)
    v = split_state(model, states)
    hs = all_binary(3)
    # joint over (v, h), brute force
    log_joint = torch.stack([-model.energy(v, h.expand(64, -1)) for h in hs], dim=1)
    log_pv = torch.logsumexp(log_joint, dim=1)
    table = torch.softmax(log_pv, dim=0).reshape(8, 8)  # rows x, columns y (x bits are the high bits)
    p_y_given_x = table / table.sum(1, keepdim=True)
    # the same from free energies: P(y | x) ∝ exp(−F(x, y))
    f = model.free_energy(v).reshape(8, 8)
    torch.testing.assert_close(torch.softmax(-f, dim=1), p_y_given_x, rtol=0, atol=1e-12)


def test_visible_mean_equals_enumeration_of_p_v_given_h():
    model = tiny_model({"x": 3, "y": 2}, n_hidden=4, seed=2)
    h = all_binary(4)
    for m in model.names:
        xs = all_binary(model.sizes[m])
        # P(x | h) ∝ exp(bᵀx + xᵀW h)
        logits = (xs @ model.b[m]).unsqueeze(0) + h @ model.W[m].T @ xs.T
        probs = torch.softmax(logits, dim=1)
        torch.testing.assert_close(model.visible_mean(m, h), probs @ xs, rtol=0, atol=1e-12)


def test_units_log_prob_is_normalised():
    act = torch.randn(4, 3, dtype=torch.float64)
    xs = all_binary(3)
    bern = make_units("bernoulli")
    total = torch.logsumexp(torch.stack([bern.log_prob(x.expand(4, -1), act) for x in xs], 1), 1)
    torch.testing.assert_close(total, torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="allowed"):
        make_units("poisson")


def test_gibbs_keeps_clamped_modalities_and_mean_field_reaches_a_fixed_point():
    model = tiny_model({"x": 4, "y": 4}, n_hidden=5, std=0.3, seed=3)
    x = torch.bernoulli(torch.full((6, 4), 0.5, dtype=torch.float64))
    y = torch.bernoulli(torch.full((6, 4), 0.5, dtype=torch.float64))
    out = model.gibbs_chain({"x": x, "y": y}, steps=3, clamp=["x"])
    assert torch.equal(out["x"], x)
    assert set(out["y"].unique().tolist()) <= {0.0, 1.0}
    v, h = model.infer_missing({"x": x}, steps=500, tol=1e-12)
    torch.testing.assert_close(v["y"], model.visible_mean("y", h), rtol=0, atol=1e-9)
    torch.testing.assert_close(h, model.hidden_probs(v), rtol=0, atol=1e-12)


def test_missing_scale_and_shape_errors():
    model = tiny_model({"left": 392, "right": 392}, n_hidden=2, std=0.01)
    assert model.missing_scale(["left"]) == {"left": 2.0}
    assert model.missing_scale(["left"], {"right": 0.75 * 392}) == {"left": 1.75}
    with pytest.raises(ValueError, match="expected shape"):
        model.infer_missing({"left": torch.zeros(2, 10, dtype=torch.float64)})
    with pytest.raises(ValueError, match="unknown modality"):
        model.infer_missing({"middle": torch.zeros(2, 392, dtype=torch.float64)})


def test_visible_bias_init_is_logit_of_data_mean():
    model = tiny_model({"x": 3}, n_hidden=2)
    mean = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    model.init_visible_bias_from_data({"x": mean})
    torch.testing.assert_close(torch.sigmoid(model.b["x"]), mean)
