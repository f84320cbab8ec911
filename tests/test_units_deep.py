"""Unit types of deep pathways: stepped sigmoid against its N-binary-copies definition, Gaussian RBM
gradients against finite differences, replicated-softmax bias scaling."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import all_binary
from mmvi.models import MultimodalRBM
from mmvi.models.units import SteppedSigmoidUnits, make_hidden_units, make_units

N = 5


def copies_log_weights(x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every copy state s ∈ {0,1}^n of one unit with input x: (log-weights Σ_i s_i (x − i + ½), counts)."""
    states = all_binary(n)  # (2^n, n)
    offsets = torch.arange(1, n + 1, dtype=torch.float64) - 0.5
    logw = x.unsqueeze(-1) * states.sum(-1) - states @ offsets  # (..., 2^n)
    return logw, states.sum(-1)


def test_stepped_sigmoid_mean_and_log_partition_equal_the_n_copies_definition():
    units = SteppedSigmoidUnits(n_steps=N)
    x = torch.linspace(-6, 11, 41, dtype=torch.float64)
    logw, counts = copies_log_weights(x, N)
    torch.testing.assert_close(units.log_partition(x), torch.logsumexp(logw, -1), rtol=0, atol=1e-12)
    torch.testing.assert_close(units.mean(x), torch.softmax(logw, -1) @ counts, rtol=0, atol=1e-12)


def test_rbm_with_stepped_sigmoid_hiddens_free_energy_equals_sum_over_copy_states():
    torch.manual_seed(0)
    n_steps, n_hidden = 3, 2
    model = MultimodalRBM(
        {"x": {"size": 3, "units": "bernoulli"}},
        n_hidden,
        init_std=1.0,
        hidden_units={"type": "stepped_sigmoid", "n_steps": n_steps},
    ).double()
    with torch.no_grad():
        model.b["x"].normal_()
        model.c.normal_()
    v = all_binary(3)
    act = model.hidden_input({"x": v})  # (8, H)
    # F(v) = −bᵀv − Σ_k log Σ_{copies of unit k} exp(Σ_i s_i (act_k − i + ½))
    logw, _ = copies_log_weights(act, n_steps)  # (8, H, 2^n)
    brute = -(v @ model.b["x"]) - torch.logsumexp(logw, -1).sum(-1)
    torch.testing.assert_close(model.free_energy({"x": v}), brute, rtol=0, atol=1e-12)
    # conditional mean of a hidden unit = expected number of copies on
    torch.testing.assert_close(model.hidden_probs({"x": v}), model.hidden.mean(act), rtol=0, atol=0)


def test_stepped_sigmoid_samples():
    torch.manual_seed(1)
    x = torch.tensor([-2.0, 0.5, 2.0, 4.5, 8.0], dtype=torch.float64).repeat(20000, 1)
    exact = SteppedSigmoidUnits(N).sample(x)
    assert set(exact.unique().tolist()) <= set(range(N + 1))
    mean = SteppedSigmoidUnits(N).mean(x[0])
    # sum of N Bernoullis: variance ≤ N/4, so the standard error of the mean is ≤ 0.008
    torch.testing.assert_close(exact.mean(0), mean, rtol=0, atol=0.04)
    relu = SteppedSigmoidUnits(N, sample_mode="noisy_relu").sample(x)
    assert relu.min() >= 0 and relu.max() <= N
    with pytest.raises(ValueError, match="allowed"):
        make_hidden_units("gamma")


def test_stepped_sigmoid_visible_role_at_integer_values_is_the_canonical_copy_state():
    units = make_units("stepped_sigmoid", n_steps=N)
    v = torch.tensor([[0.0, 1.0, 2.0, 3.0, 5.0]], dtype=torch.float64)
    b = torch.tensor([0.3, -1.0, 0.5, 2.0, -0.2], dtype=torch.float64)
    torch.testing.assert_close(units.energy(v, b), -(v @ b) + (v**2).sum(-1) / 2)
    act = torch.randn(1, 5, dtype=torch.float64)
    a = act.unsqueeze(-1) - (torch.arange(1, N + 1, dtype=torch.float64) - 0.5)
    on = (torch.arange(1, N + 1, dtype=torch.float64) <= v.unsqueeze(-1)).double()
    expected = (on * torch.nn.functional.logsigmoid(a) + (1 - on) * torch.nn.functional.logsigmoid(-a)).sum(
        -1
    )
    torch.testing.assert_close(units.log_prob_units(v, act), expected)
    mu = torch.tensor([0.05, 0.7, 2.5, 4.9], dtype=torch.float64)
    torch.testing.assert_close(units.mean(units.bias_from_mean(mu)), mu, rtol=0, atol=1e-9)


def gaussian_rbm(
    n_visible: int = 3, n_hidden: int = 3, hidden: str = "bernoulli", seed: int = 0
) -> MultimodalRBM:
    torch.manual_seed(seed)
    model = MultimodalRBM(
        {"x": {"size": n_visible, "units": "gaussian"}}, n_hidden, init_std=0.5, hidden_units=hidden
    )
    model = model.double()
    with torch.no_grad():
        model.b["x"].normal_(0, 0.5)
        model.c.normal_(0, 0.5)
    return model


def exact_nll(model: MultimodalRBM, v: torch.Tensor) -> torch.Tensor:
    """Mean −log p(v) of a Gaussian–Bernoulli RBM: F(v) + log Z,
    Z = Σ_h exp(cᵀh) (2π)^{n/2} exp(½‖b + W h‖² − ½‖b‖²) (the Gaussian integral over v)."""
    hs = all_binary(model.n_hidden)
    b, W, c = model.b["x"], model.W["x"], model.c
    log_terms = hs @ c + 0.5 * ((b + hs @ W.T) ** 2).sum(-1) - 0.5 * (b**2).sum()
    log_z = torch.logsumexp(log_terms, 0) + 0.5 * b.numel() * math.log(2 * math.pi)
    return model.free_energy({"x": v}).mean() + log_z


def finite_difference(fn, p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    grad = torch.zeros_like(p)
    flat, out = p.data.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + eps
        up = fn().item()
        flat[i] = old - eps
        down = fn().item()
        flat[i] = old
        out[i] = (up - down) / (2 * eps)
    return grad


def test_gaussian_bernoulli_rbm_nll_gradient_matches_finite_differences_and_the_cd_statistics():
    model = gaussian_rbm()
    v = torch.randn(7, 3, dtype=torch.float64)
    model.zero_grad()
    exact_nll(model, v).backward()
    W = model.W["x"]
    torch.testing.assert_close(
        W.grad, finite_difference(lambda: exact_nll(model, v), W), rtol=1e-6, atol=1e-8
    )
    # the likelihood gradient CD estimates: −E_data[v σ(act)ᵀ] + E_model[v hᵀ], the model term exact
    with torch.no_grad():
        hs = all_binary(model.n_hidden)
        b, c = model.b["x"], model.c
        p_h = torch.softmax(hs @ c + 0.5 * ((b + hs @ W.T) ** 2).sum(-1), 0)  # P(h), v integrated out
        model_term = ((b + hs @ W.T).unsqueeze(-1) * hs.unsqueeze(1) * p_h.view(-1, 1, 1)).sum(0)
        data_term = v.T @ model.hidden_probs({"x": v}) / v.shape[0]
    torch.testing.assert_close(W.grad, model_term - data_term, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("hidden", ["bernoulli", "stepped_sigmoid"])
def test_free_energy_gradient_is_minus_v_times_hidden_mean(hidden):
    model = gaussian_rbm(hidden=hidden, seed=2)
    v = torch.randn(5, 3, dtype=torch.float64)

    def mean_free_energy() -> torch.Tensor:
        return model.free_energy({"x": v}).mean()

    model.zero_grad()
    mean_free_energy().backward()
    W = model.W["x"]
    torch.testing.assert_close(W.grad, finite_difference(mean_free_energy, W), rtol=1e-6, atol=1e-8)
    expected = -v.T @ model.hidden_probs({"x": v}).detach() / v.shape[0]
    torch.testing.assert_close(W.grad, expected, rtol=1e-10, atol=1e-12)


def test_gibbs_and_clamped_chain_with_stepped_sigmoid_hiddens():
    torch.manual_seed(3)
    model = MultimodalRBM(
        {"x": {"size": 4, "units": "gaussian"}, "y": {"size": 3, "units": "bernoulli"}},
        6,
        init_std=0.3,
        hidden_units="stepped_sigmoid",
    ).double()
    v = {"x": torch.randn(8, 4, dtype=torch.float64), "y": torch.bernoulli(torch.full((8, 3), 0.5)).double()}
    out, h = model.gibbs_step(v, clamp=["x"])
    assert torch.equal(out["x"], v["x"]) and set(h.unique().tolist()) <= set(range(N + 1))
    for y, f, _ in model.clamped_chain({"x": v["x"]}, "y", v["y"], steps=2):
        torch.testing.assert_close(f, model.free_energy({"x": v["x"], "y": y}))


def test_replicated_softmax_scales_the_hidden_bias_by_document_length():
    torch.manual_seed(4)
    model = MultimodalRBM({"w": {"size": 5, "units": "softmax"}}, 3, init_std=0.3).double()
    with torch.no_grad():
        model.c.normal_()
    counts = torch.tensor([[1.0, 0, 2, 0, 0], [3.0, 1, 0, 4, 2]], dtype=torch.float64)
    expected = counts.sum(-1, keepdim=True) * model.c + counts @ model.W["w"]
    torch.testing.assert_close(model.hidden_input({"w": counts}), expected, rtol=0, atol=1e-12)
    # the conditional mean of the counts given h is D · softmax(b + W h)
    probs = torch.softmax(model.visible_input("w", torch.ones(2, 3, dtype=torch.float64)), -1)
    torch.testing.assert_close(
        model.units["w"].mean(
            model.visible_input("w", torch.ones(2, 3, dtype=torch.float64)), counts.sum(-1)
        ),
        probs * counts.sum(-1, keepdim=True),
    )
