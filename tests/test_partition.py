"""Partition functions and likelihoods against brute-force enumeration of tiny models."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from helpers import all_binary, assert_ais_agrees, split_state, tiny_model
from mmvi.evaluation import partition as P
from mmvi.evaluation.likelihood import (
    binarize,
    conditional_log_likelihood,
    joint_log_likelihood,
    likelihood_metrics,
)
from mmvi.models.mrbm import MultimodalRBM


def brute_log_joint_table(model: MultimodalRBM) -> torch.Tensor:
    """log P(v) for all 2^n visible states (bits in model.names order), by enumerating (v, h)."""
    n = sum(model.sizes.values())
    v = split_state(model, all_binary(n))
    hs = all_binary(model.n_hidden)
    neg_e = torch.stack([-model.energy(v, h.expand(2**n, -1)) for h in hs], dim=1)
    log_pv = torch.logsumexp(neg_e, dim=1)
    return log_pv - torch.logsumexp(log_pv, dim=0)


@pytest.fixture
def model() -> MultimodalRBM:
    return tiny_model({"x": 5, "y": 5}, n_hidden=8, std=1.0, seed=0)


@torch.no_grad()
def test_exact_logz_equals_brute_force_and_both_enumerations(model):
    n = 10
    v = split_state(model, all_binary(n))
    hs = all_binary(8)
    brute = torch.logsumexp(torch.stack([-model.energy(v, h.expand(2**n, -1)) for h in hs]).flatten(), 0)
    by_hidden = P.exact_logz(model, method="hidden")
    by_visible = P.exact_logz(model, method="visible")
    torch.testing.assert_close(by_hidden, brute, rtol=0, atol=1e-10)
    torch.testing.assert_close(by_visible, brute, rtol=0, atol=1e-10)
    tiny_chunks = P.exact_logz(model, method="hidden", chunk_elements=7)
    torch.testing.assert_close(tiny_chunks, by_hidden, rtol=0, atol=1e-10)


@torch.no_grad()
def test_exact_conditional_logz_hidden_equals_visible(model):
    x = all_binary(5)[::3]
    by_hidden = P.exact_conditional_logz(model, {"x": x}, "y", method="hidden", chunk_elements=50)
    by_visible = P.exact_conditional_logz(model, {"x": x}, "y", method="visible", chunk_elements=50)
    assert by_hidden.shape == (x.shape[0],)
    torch.testing.assert_close(by_hidden, by_visible, rtol=0, atol=1e-10)


@torch.no_grad()
def test_exact_conditional_log_likelihood_equals_joint_table(model):
    """log P(y | x) = log P(x, y) − log P(x) from the enumerated joint table, both directions."""
    table = brute_log_joint_table(model).reshape(32, 32)  # rows x (high bits), columns y
    states = split_state(model, all_binary(10))
    idx = torch.arange(0, 1024, 37)
    v = {m: s[idx] for m, s in states.items()}
    xi, yi = idx // 32, idx % 32
    expected_y = table[xi, yi] - torch.logsumexp(table, dim=1)[xi]
    expected_x = table[xi, yi] - torch.logsumexp(table, dim=0)[yi]
    for target, expected in (("y", expected_y), ("x", expected_x)):
        logp, se, exact = conditional_log_likelihood(model, v, target)
        assert exact and float(se.abs().max()) == 0.0
        torch.testing.assert_close(logp, expected, rtol=0, atol=1e-10)
    logp, se, exact = joint_log_likelihood(model, v)
    torch.testing.assert_close(logp, table[xi, yi], rtol=0, atol=1e-10)


@torch.no_grad()
def test_conditional_free_energy_is_free_energy_minus_clamped_energy(model):
    v = split_state(model, all_binary(10)[::11])
    f_hat = P.conditional_free_energy(model, v, "y")
    expected = model.free_energy(v) - model.units["x"].energy(v["x"], model.b["x"])
    torch.testing.assert_close(f_hat, expected, rtol=0, atol=1e-12)


def test_exact_refuses_large_models():
    big = MultimodalRBM({"x": {"size": 30}, "y": {"size": 30}}, 40)
    with pytest.raises(ValueError, match="limit of 20"):
        P.exact_logz(big)
    with pytest.raises(ValueError, match="40 units, above the limit of 25"):
        P.exact_logz(big, limit=25, method="hidden")
    # the conditional of x has 30 free units and 40 hidden: refused; with 12 hidden it is allowed
    with pytest.raises(ValueError):
        P.exact_conditional_logz(big, {"y": torch.zeros(2, 30)}, "x")
    small = MultimodalRBM({"x": {"size": 30}, "y": {"size": 30}}, 12)
    assert P.exact_conditional_logz(small, {"y": torch.zeros(2, 30)}, "x").shape == (2,)


@torch.no_grad()
def test_ais_joint_matches_exact(model):
    exact = float(P.exact_logz(model))
    res = P.ais_logz(model, n_runs=200, n_betas=2000, generator=0)
    err = float(res.logz) - exact
    assert res.log_weights.shape == (200,)
    assert abs(err) < 3 * float(res.stderr), (err, float(res.stderr))
    assert abs(err) < 0.1


@torch.no_grad()
def test_ais_conditional_matches_exact_per_example(model):
    x = all_binary(5)[::4]  # 8 examples
    exact = P.exact_conditional_logz(model, {"x": x}, "y")
    data_mean = torch.full((5,), 0.3, dtype=torch.float64)
    bases = [(data_mean, "uniform"), (P.meanfield_base_mean(model, {"x": x}, "y"), "uniform")]
    bases += [(b, "meanfield") for b, _ in bases]
    for base, hidden in bases:
        res = P.ais_conditional_logz(
            model, {"x": x}, "y", base, n_runs=200, n_betas=500, generator=1, max_rows=300, hidden_base=hidden
        )
        assert res.logz.shape == res.stderr.shape == (8,) and res.log_weights.shape == (8, 200)
        err = res.logz - exact
        assert bool((err.abs() < 3 * res.stderr).all()), (err, res.stderr)
        assert float(err.abs().max()) < 0.1


@torch.no_grad()
def test_ais_is_reproducible_and_block_size_free(model):
    x = all_binary(5)[::8]
    a = P.ais_conditional_logz(model, {"x": x}, "y", n_runs=4, n_betas=20, generator=3)
    b = P.ais_conditional_logz(
        model, {"x": x}, "y", n_runs=4, n_betas=20, generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(a.log_weights, b.log_weights, rtol=0, atol=0)


@torch.no_grad()
def test_ais_and_exact_with_gaussian_units():
    """Mixed Gaussian/Bernoulli model: hidden enumeration integrates the Gaussian; AIS agrees."""
    torch.manual_seed(3)
    model = MultimodalRBM(
        {"g": {"size": 3, "units": "gaussian"}, "b": {"size": 4, "units": "bernoulli"}}, 6, init_std=0.4
    ).double()
    exact = float(P.exact_logz(model))
    # numerical check of the Gaussian integral on one hidden state: 1-D quadrature per unit
    h = all_binary(6)[13]
    act = model.b["g"] + model.W["g"] @ h
    grid = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    quad = sum(
        math.log(
            torch.trapezoid(
                torch.exp(-0.5 * (grid - model.b["g"][i]) ** 2 + grid * (act[i] - model.b["g"][i])), grid
            )
        )
        for i in range(3)
    )
    closed = P._log_visible_sum(model.units["g"], model.b["g"], (model.W["g"] @ h).unsqueeze(0))[0]
    assert abs(quad - float(closed)) < 1e-8
    res = P.ais_logz(model, n_runs=100, n_betas=1000, generator=0)
    err = float(res.logz) - exact
    assert abs(err) < 3 * float(res.stderr) and abs(err) < 0.1, (err, float(res.stderr))


def test_betas_and_log_mean_exp():
    b = P.ais_betas(1000)
    assert b.shape == (1001,) and b[0] == 0 and b[-1] == 1 and bool((b.diff() > 0).all())
    assert int((b <= 0.5).sum()) - 1 == round(1000 * 500 / 14500)
    torch.testing.assert_close(
        P.ais_betas(4, "linear"), torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    )
    with pytest.raises(ValueError):
        P.check_betas(torch.tensor([0.0, 0.7, 0.5, 1.0]))
    lw = torch.tensor([[0.1, -0.3, 0.5, 1.2], [2.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
    logz, se = P.log_mean_exp_and_stderr(lw)
    w = lw.exp()
    torch.testing.assert_close(logz, w.mean(1).log())
    torch.testing.assert_close(se, w.std(1) / (2 * w.mean(1)))
    big_logz, big_se = P.log_mean_exp_and_stderr(lw + 1000.0)
    torch.testing.assert_close(big_logz, logz + 1000.0)
    torch.testing.assert_close(big_se, se)


def test_binarize_is_fixed_seed_and_keeps_binary():
    g = torch.Generator().manual_seed(0)
    v = {"x": torch.rand(50, 7, generator=g), "y": (torch.rand(50, 3, generator=g) > 0.5).float()}
    a, b = binarize(v, seed=4), binarize(v, seed=4)
    assert torch.equal(a["x"], b["x"]) and set(a["x"].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a["y"], v["y"])
    assert not torch.equal(binarize(v, seed=5)["x"], a["x"])
    assert torch.equal(binarize(v, seed=4, names=["y"])["x"], v["x"])


@torch.no_grad()
def test_likelihood_metrics_exact_and_ais(model):
    model = tiny_model({"left": 5, "right": 5}, n_hidden=8, std=1.0, seed=0)
    g = torch.Generator().manual_seed(0)
    data = {m: torch.rand(40, 5, generator=g, dtype=torch.float64) for m in model.names}
    exact = likelihood_metrics(model, data, n_examples=30)
    names = {"cond_nll/left_given_rest", "cond_nll/right_given_rest", "cond_nll/vi", "nll"}
    assert set(exact) == names | {f"{k}_stderr" for k in names}
    assert all(exact[f"{k}_stderr"] == 0.0 for k in names)
    assert exact["cond_nll/vi"] == pytest.approx(
        exact["cond_nll/left_given_rest"] + exact["cond_nll/right_given_rest"]
    )
    # by hand: the same 30 binarised examples and the enumerated joint table
    v = binarize({m: x[:30] for m, x in data.items()}, seed=0)
    logp, _, _ = conditional_log_likelihood(model, v, "right")
    assert exact["cond_nll/right_given_rest"] == pytest.approx(-float(logp.mean()), abs=1e-12)
    ais = likelihood_metrics(
        model,
        data,
        n_examples=30,
        exact_limit=0,
        n_ais_runs=64,
        n_betas=300,
        joint_ais_runs=200,
        joint_betas=1000,
    )
    assert_ais_agrees(ais, exact, names)


def test_replicated_softmax_base_model_sums_over_word_sequences():
    """log Z_A = D·logsumexp(b_A) of the multinomial base model, for any (unnormalised) b_A; the
    base bias from counts is the log of the smoothed word frequencies."""
    from mmvi.models.units import SoftmaxUnits

    units = SoftmaxUnits()
    bias = torch.tensor([[0.3, -1.2, 2.0], [1.0, 1.0, -0.5]], dtype=torch.float64)
    lengths = torch.tensor([3.0, 0.0], dtype=torch.float64)
    seqs = torch.tensor(list(itertools.product(range(3), repeat=3)))
    expected = torch.stack([torch.logsumexp(bias[0][seqs].sum(1), 0), torch.zeros((), dtype=torch.float64)])
    torch.testing.assert_close(P._base_log_partition(units, bias, lengths), expected, rtol=0, atol=1e-12)
    counts = torch.tensor([[2.0, 0.0, 6.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    b = P.base_rate_bias(counts, units, eps=1e-3)
    torch.testing.assert_close(torch.logsumexp(b, 1), torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(
        b[0].exp(), 0.999 * torch.tensor([0.25, 0.0, 0.75]) + 1e-3 / 3, check_dtype=False
    )
    torch.testing.assert_close(b[1].exp(), torch.full((3,), 1 / 3, dtype=torch.float64))


@torch.no_grad()
def test_ais_conditional_with_a_meanfield_hidden_base():
    """The base q(v_target) q(h) at the mean-field solution: log Z_0 is Σ softplus of the base's
    biases, AIS with it agrees with exact enumeration for a Gaussian target too, and with sparse
    hidden units it is far less biased than the uniform hidden base at the same short schedule."""
    torch.manual_seed(5)
    gauss = MultimodalRBM(
        {"g": {"size": 3, "units": "gaussian"}, "b": {"size": 5, "units": "bernoulli"}}, 8, init_std=0.5
    ).double()
    x = all_binary(5)[::4]
    exact = P.exact_conditional_logz(gauss, {"b": x}, "g")
    mf = P.meanfield_base_mean(gauss, {"b": x}, "g")
    res = P.ais_conditional_logz(gauss, {"b": x}, "g", mf, 200, 500, generator=2, hidden_base="meanfield")
    err = res.logz - exact
    assert bool((err.abs() < 3 * res.stderr).all()) and float(err.abs().max()) < 0.1, (err, res.stderr)
    one = P.ais_conditional_logz(gauss, {"b": x}, "g", mf, 1, 3, generator=0, hidden_base="meanfield")
    view = P.free_view(gauss, ["g"], {"b": x})
    ca = view.hbias + mf @ gauss.W["g"]
    expected = 0.5 * 3 * math.log(2 * math.pi) + torch.nn.functional.softplus(ca).sum(-1)
    torch.testing.assert_close(one.base_logz, expected)
    # 200 sparse hidden units (c = -3; exact by enumerating the 2^8 target states): the uniform
    # hidden base starts far from the target, the mean-field one near it
    sparse = tiny_model({"x": 6, "y": 8}, n_hidden=200, std=0.3, seed=0)
    sparse.c.data.fill_(-3.0)
    x = all_binary(6)[::2]
    exact = P.exact_conditional_logz(sparse, {"x": x}, "y")
    mf = P.meanfield_base_mean(sparse, {"x": x}, "y")
    errs = {}
    for h in P.HIDDEN_BASES:
        res = P.ais_conditional_logz(sparse, {"x": x}, "y", mf, 2, 20, generator=3, hidden_base=h)
        errs[h] = float((res.logz - exact).abs().mean())
    assert errs["meanfield"] < 0.5 * errs["uniform"], errs
    with pytest.raises(ValueError, match="hidden_base must be one of uniform, meanfield"):
        P.ais_conditional_logz(sparse, {"x": x}, "y", mf, 2, 5, hidden_base="marginal")


@torch.no_grad()
def test_joint_ais_with_a_data_hidden_base_matches_exact(model):
    """The joint base with the items' mean P(h = 1 | v) as its hidden probabilities: exact agreement;
    log Z_0 is the visible base's plus Σ softplus(logit of those means)."""
    v = split_state(model, all_binary(10)[::7])
    mean_h = model.hidden_probs(v).mean(0)
    res = P.ais_logz(model, n_runs=200, n_betas=2000, generator=0, base_hidden_mean=mean_h)
    exact = float(P.exact_logz(model))
    err = float(res.logz) - exact
    assert abs(err) < 3 * float(res.stderr) and abs(err) < 0.1, (err, float(res.stderr))
    c_a = torch.log(mean_h) - torch.log1p(-mean_h)
    expected = 10 * math.log(2) + float(torch.nn.functional.softplus(c_a).sum())  # visible base: 0.5 each
    assert abs(float(res.base_logz) - expected) < 1e-9
    logp, se, exact_flag = joint_log_likelihood(
        model, v, exact_limit=0, n_ais_runs=200, n_betas=2000, generator=0, hidden_base="data"
    )
    truth, _, flag = joint_log_likelihood(model, v)
    assert flag and not exact_flag and abs(float((logp - truth).mean())) < max(3 * se, 1e-3)
    with pytest.raises(ValueError, match="joint_hidden_base must be one of uniform, data"):
        joint_log_likelihood(model, v, exact_limit=0, hidden_base="meanfield")
