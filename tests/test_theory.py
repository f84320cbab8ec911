"""Exact checks of mmvi.theory: eq. S3/S8 identities, RBM tables, Gibbs chains, Theorem 2.1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmvi.models.mrbm import MultimodalRBM
from mmvi.theory import (
    MEASURE_KEYS,
    binary_states,
    chain_joint,
    check_irreducible,
    check_table,
    conditionals,
    empirical_table,
    gibbs_transitions,
    identity_terms,
    is_irreducible,
    l_nll,
    make_data_table,
    mutual_information,
    plot_theorem21,
    rbm_joint_table,
    sample_from_table,
    state_index,
    stationary_distribution,
    stationary_joint,
    stationary_power_iteration,
    theorem21_measures,
    transition_x,
    transition_y,
)

TOL = 1e-10


def random_table(shape: tuple[int, int], seed: int, zero_frac: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.gamma(0.7, size=shape)
    if zero_frac:
        p[rng.random(shape) < zero_frac] = 0.0
        p[0, 0] += 0.1  # never all zero
    return p / p.sum()


def random_rbm(nx: int, ny: int, n_hidden: int, seed: int) -> MultimodalRBM:
    torch.manual_seed(seed)
    model = MultimodalRBM(
        {"x": {"size": nx, "units": "bernoulli"}, "y": {"size": ny, "units": "bernoulli"}},
        n_hidden=n_hidden,
        init_std=1.0,
    )
    with torch.no_grad():
        for m in ("x", "y"):
            model.b[m].normal_(0.0, 1.0)
        model.c.normal_(0.0, 1.0)
    return model


def brute_force_table(model: MultimodalRBM) -> np.ndarray:
    """P(x, y) = Σ_h exp(−E(x, y, h)) / Z, summing explicitly over hidden states."""
    m64 = MultimodalRBM(
        {m: {"size": model.sizes[m], "units": "bernoulli"} for m in model.names}, model.n_hidden
    ).double()
    m64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    xs = torch.from_numpy(binary_states(model.sizes["x"]))
    ys = torch.from_numpy(binary_states(model.sizes["y"]))
    hs = torch.from_numpy(binary_states(model.n_hidden))
    nx, ny, nh = len(xs), len(ys), len(hs)
    v = {
        "x": xs.repeat_interleave(ny * nh, dim=0),
        "y": ys.repeat_interleave(nh, dim=0).repeat(nx, 1),
    }
    h = hs.repeat(nx * ny, 1)
    with torch.no_grad():
        neg_e = -m64.energy(v, h).reshape(nx, ny, nh)
    unnorm = torch.exp(neg_e).sum(-1).numpy()
    return unnorm / unnorm.sum()


# ---------------------------------------------------------------- bit states
def test_binary_states_order_and_index():
    s = binary_states(3)
    assert s.shape == (8, 3)
    np.testing.assert_array_equal(s[5], [1, 0, 1])  # 5 = 0b101, most significant bit first
    np.testing.assert_array_equal(state_index(s), np.arange(8))
    np.testing.assert_array_equal(state_index(torch.tensor([[0.0, 1.0, 1.0]])), [3])
    with pytest.raises(ValueError, match="binary"):
        state_index(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="limit"):
        binary_states(21)


# ---------------------------------------------------------------- identities
@pytest.mark.parametrize(
    ("shape", "seed", "zero_frac"),
    [((4, 5), 0, 0.0), ((8, 8), 1, 0.0), ((6, 3), 2, 0.3), ((16, 16), 3, 0.5), ((2, 2), 4, 0.0)],
)
def test_s3_s8_random_tables(shape, seed, zero_frac):
    p_data = random_table(shape, seed, zero_frac)
    p_model = random_table(shape, seed + 100)
    assert (p_data == 0).any() == (zero_frac > 0)
    t = identity_terms(p_data, p_model)
    assert abs(t.s3_residual) < TOL
    assert abs(t.s8_residual) < TOL
    # independent check of L_VI and the marginal KLs by explicit formulas
    px, py = p_data.sum(1), p_data.sum(0)
    qx, qy = p_model.sum(1), p_model.sum(0)
    mask = p_data > 0
    log_q_cond = 2 * np.log(p_model) - np.log(qy)[None, :] - np.log(qx)[:, None]
    np.testing.assert_allclose(t.l_vi, -(p_data[mask] * log_q_cond[mask]).sum(), rtol=1e-12)
    np.testing.assert_allclose(t.kl_x, (px[px > 0] * np.log(px[px > 0] / qx[px > 0])).sum(), rtol=1e-12)
    np.testing.assert_allclose(t.kl_y, (py[py > 0] * np.log(py[py > 0] / qy[py > 0])).sum(), rtol=1e-12)
    assert min(t.kl_x, t.kl_y, t.cond_kl_x_given_y, t.cond_kl_y_given_x) >= 0
    assert np.isfinite(list(t.as_dict().values())).all()


def test_identities_model_equals_data_and_torch_input():
    p = random_table((5, 7), 5, zero_frac=0.2)
    t = identity_terms(torch.from_numpy(p), p)
    assert abs(t.kl_x) < TOL and abs(t.kl_y) < TOL
    assert abs(t.cond_kl_x_given_y) < TOL and abs(t.cond_kl_y_given_x) < TOL
    assert abs(t.l_vi - t.c2) < TOL
    np.testing.assert_allclose(2 * t.l_nll, t.l_vi + t.c1, atol=TOL)


def test_conditional_kls_are_attributed_to_the_right_direction():
    p_data = random_table((4, 6), 6)
    _, y_given_x = conditionals(p_data)
    q_x = random_table((4, 1), 7)
    p_model = q_x * y_given_x  # same P(y|x) as the data, different P(x) hence different P(x|y)
    t = identity_terms(p_data, p_model)
    assert abs(t.cond_kl_y_given_x) < TOL
    assert t.cond_kl_x_given_y > 1e-3 and t.kl_x > 1e-3


def test_model_zero_where_data_positive_gives_inf():
    p_data = np.full((2, 2), 0.25)
    p_model = np.array([[0.5, 0.0], [0.25, 0.25]])
    assert l_nll(p_data, p_model) == np.inf


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_s3_s8_rbm_tables(seed):
    p_model = rbm_joint_table(random_rbm(3, 3, 4, seed))
    for p_data in (random_table((8, 8), seed + 10), random_table((8, 8), seed + 20, zero_frac=0.4)):
        t = identity_terms(p_data, p_model)
        assert abs(t.s3_residual) < TOL
        assert abs(t.s8_residual) < TOL


# ---------------------------------------------------------------- RBM tables
@pytest.mark.parametrize(("nx", "ny", "nh", "seed"), [(3, 3, 4, 0), (2, 4, 3, 1), (3, 2, 5, 2)])
def test_rbm_table_matches_hidden_sum(nx, ny, nh, seed):
    model = random_rbm(nx, ny, nh, seed)
    p = rbm_joint_table(model)
    assert p.shape == (2**nx, 2**ny) and p.dtype == np.float64
    assert abs(p.sum() - 1) < 1e-12
    np.testing.assert_allclose(p, brute_force_table(model), rtol=1e-10, atol=1e-14)
    # swapping the modality order transposes the table
    np.testing.assert_allclose(rbm_joint_table(model, names=("y", "x")), p.T, rtol=1e-12)


def test_rbm_table_guards():
    big = MultimodalRBM({"x": {"size": 11}, "y": {"size": 10}}, n_hidden=2)
    with pytest.raises(ValueError, match="enumeration limit"):
        rbm_joint_table(big)
    gauss = MultimodalRBM({"x": {"size": 2, "units": "gaussian"}, "y": {"size": 2}}, n_hidden=2)
    with pytest.raises(ValueError, match="bernoulli"):
        rbm_joint_table(gauss)
    three = MultimodalRBM({"a": {"size": 1}, "b": {"size": 1}, "c": {"size": 1}}, n_hidden=2)
    with pytest.raises(ValueError, match="two modalities"):
        rbm_joint_table(three)


# ---------------------------------------------------------------- chains
def test_stationary_solves_and_matches_power_iteration():
    p = rbm_joint_table(random_rbm(3, 3, 4, 7))
    t_x, t_y = gibbs_transitions(p)
    for t, marginal in ((t_x, p.sum(1)), (t_y, p.sum(0))):
        np.testing.assert_allclose(t.sum(0), 1.0, atol=1e-12)  # column-stochastic
        pi = stationary_distribution(t)
        np.testing.assert_allclose(t @ pi, pi, atol=TOL)
        assert abs(pi.sum() - 1) < TOL
        np.testing.assert_allclose(stationary_distribution(t, method="lstsq"), pi, atol=TOL)
        np.testing.assert_allclose(stationary_power_iteration(t), pi, atol=TOL)
        np.testing.assert_allclose(stationary_power_iteration(t, lazy=False), pi, atol=TOL)
        # compatible conditionals of one joint: the chain's marginal is the joint's marginal
        np.testing.assert_allclose(pi, marginal, atol=TOL)


def test_transitions_by_explicit_sum():
    p = random_table((3, 4), 11)
    a, b = conditionals(p)
    t_y, t_x = transition_y(a, b), transition_x(a, b)
    for y_new in range(4):
        for y in range(4):
            assert abs(t_y[y_new, y] - sum(b[x, y_new] * a[x, y] for x in range(3))) < 1e-14
    for x_new in range(3):
        for x in range(3):
            assert abs(t_x[x_new, x] - sum(a[x_new, y] * b[x, y] for y in range(4))) < 1e-14


@pytest.mark.parametrize("zero_frac", [0.0, 0.3])
def test_theorem21_fixed_point(zero_frac):
    p_data = make_data_table() if zero_frac == 0 else random_table((8, 6), 12, zero_frac)
    a, b = conditionals(p_data)
    assert is_irreducible(transition_y(a, b)) and is_irreducible(transition_x(a, b))
    pi_x, pi_y, joint = stationary_joint(a, b)
    np.testing.assert_allclose(joint, p_data, atol=TOL)
    np.testing.assert_allclose(chain_joint(a, pi_y), p_data, atol=TOL)
    np.testing.assert_allclose(pi_x, p_data.sum(1), atol=TOL)
    m = theorem21_measures(p_data, p_data)
    assert set(m) == set(MEASURE_KEYS)
    assert m["theory/tv_joint"] < TOL and m["theory/pi_x_l2"] < TOL and m["theory/pi_y_l2"] < TOL
    assert abs(m["theory/kl_x"]) < TOL and abs(m["theory/kl_y"]) < TOL


def test_theorem21_different_model_is_not_fixed_point():
    p_data = make_data_table(3, 3, seed=1)
    m = theorem21_measures(p_data, rbm_joint_table(random_rbm(3, 3, 4, 3)))
    assert m["theory/tv_joint"] > 0.05
    assert m["theory/pi_x_l2"] > 1e-3 and m["theory/pi_y_l2"] > 1e-3
    assert m["theory/kl_x"] > 1e-3
    # data's P(x|y) with another table's P(y|x): incompatible conditionals, the chain misses P_D
    a, _ = conditionals(p_data)
    _, b_other = conditionals(random_table((8, 8), 4))
    assert 0.5 * np.abs(stationary_joint(a, b_other)[2] - p_data).sum() > 0.01


def test_reducible_chain_is_rejected():
    p = np.zeros((4, 4))
    p[:2, :2] = 0.1
    p[2:, 2:] = 0.15  # x, y in {0,1} never meet x, y in {2,3}
    with pytest.raises(ValueError, match="reducible"):
        theorem21_measures(p, p)
    a, b = conditionals(p)
    assert not is_irreducible(transition_y(a, b))
    with pytest.raises(ValueError, match="T is reducible.*2 strongly connected"):
        stationary_distribution(transition_y(a, b))
    with pytest.raises(ValueError, match="reducible"):
        check_irreducible(np.eye(3))


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("table", "match"),
    [
        (np.array([0.5, 0.5]), "2-D"),
        (np.array([[0.6, -0.1], [0.25, 0.25]]), "negative"),
        (np.array([[0.3, 0.3], [0.3, 0.3]]), "sum to 1"),
        (np.array([[np.nan, 0.5], [0.25, 0.25]]), "non-finite"),
    ],
)
def test_invalid_tables(table, match):
    with pytest.raises(ValueError, match=match):
        check_table(table)
    with pytest.raises(ValueError, match=match):
        identity_terms(table, np.full((2, 2), 0.25))


def test_invalid_pairs_and_matrices():
    with pytest.raises(ValueError, match="shape"):
        identity_terms(np.full((2, 2), 0.25), np.full((2, 3), 1 / 6))
    zero_col = np.array([[0.5, 0.0], [0.5, 0.0]])
    with pytest.raises(ValueError, match="marginal is zero"):
        conditionals(zero_col, strict=True)
    with pytest.raises(ValueError, match="marginal is zero"):
        theorem21_measures(np.full((2, 2), 0.25), zero_col)
    with pytest.raises(ValueError, match="column-stochastic"):
        stationary_distribution(np.array([[0.5, 0.5], [0.6, 0.5]]))
    with pytest.raises(ValueError, match="square"):
        stationary_distribution(np.ones((2, 3)) / 2)
    with pytest.raises(ValueError, match="not a conditional"):
        transition_y(np.full((2, 2), 0.3), np.full((2, 2), 0.5))


# ---------------------------------------------------------------- data, sampling, plot
def test_make_data_table():
    p = make_data_table(4, 4, seed=0)
    assert p.shape == (16, 16) and (p > 0).all() and abs(p.sum() - 1) < 1e-12
    assert mutual_information(p) > 0.5
    np.testing.assert_array_equal(p, make_data_table(4, 4, seed=0))
    assert not np.allclose(p, make_data_table(4, 4, seed=1))
    assert make_data_table(3, 2).shape == (8, 4)


def test_sampling_and_empirical_table():
    p = make_data_table(3, 3, seed=2)
    x, y = sample_from_table(p, 50_000, seed=0)
    assert x.shape == (50_000, 3) and y.shape == (50_000, 3) and x.dtype == np.float32
    x2, _ = sample_from_table(p, 50_000, seed=0)
    np.testing.assert_array_equal(x, x2)
    q = empirical_table(x, y)
    assert 0.5 * np.abs(q - p).sum() < 0.03
    smoothed = empirical_table(x[:10], y[:10], pseudo_count=0.5)
    assert (smoothed > 0).all() and abs(smoothed.sum() - 1) < 1e-12


def test_plot_theorem21(tmp_path):
    p = make_data_table(3, 3)
    rows = []
    for n in (100, 1000):
        for seed in (0, 1):
            x, y = sample_from_table(p, n, seed)
            rows.append(
                {"objective": "empirical", "n": n, **theorem21_measures(p, empirical_table(x, y, 0.5))}
            )
    out = plot_theorem21(rows, tmp_path / "fig" / "theorem21.png")
    assert out.exists() and out.stat().st_size > 1000
    with pytest.raises(ValueError):
        plot_theorem21([], tmp_path / "empty.png")
