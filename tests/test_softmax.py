"""Replicated softmax: every draw keeps the document's length; exact conditionals and likelihoods.

A replicated-softmax modality models word counts given the document length D (Salakhutdinov &
Hinton 2009). Checked here against brute force on tiny models:

* every sample (Gibbs steps, clamped chains, CD and PCD negatives, CD-PercLoss, AIS chains) has
  exactly the data's D_n words in row n (an empty document stays empty), on the reported model
  (a Gaussian image of 3 units, a 5-word text, documents of length 0, 1 and 7);
* for a 3-word vocabulary and D ≤ 4, the sampler and a clamped Gibbs chain follow the exact
  distributions over count vectors (chi-square against enumeration);
* free energy and conditionals equal enumeration of the hidden states;
* exact conditional and joint likelihoods equal enumeration of word sequences of length D (and of
  count vectors weighted by their multinomial coefficients), and AIS agrees with them.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from scipy import stats

from helpers import all_binary, assert_ais_agrees
from mmvi.evaluation import partition as P
from mmvi.evaluation.likelihood import (
    conditional_log_likelihood,
    joint_log_likelihood,
    likelihood_metrics,
)
from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives import CDPercLoss, ConditionalCD, ContrastiveDivergence

P_REJECT = 1e-3  # chi-square tests reject at p < 1e-3 (fixed seeds: not flaky)


# --------------------------------------------------------------------------- helpers
def mixed_model(
    image: str = "gaussian", n_image: int = 3, n_words: int = 5, n_hidden: int = 6, seed: int = 0
):
    """A float64 RBM over an image modality and a replicated-softmax text, strong random parameters."""
    torch.manual_seed(seed)
    model = MultimodalRBM(
        {"img": {"size": n_image, "units": image}, "txt": {"size": n_words, "units": "softmax"}},
        n_hidden,
        init_std=0.5,
    ).double()
    with torch.no_grad():
        model.b["img"].normal_(0, 0.5)
        model.b["txt"].normal_(0, 0.8)
        model.c.normal_(0, 0.3)
    return model


def reported_batch() -> dict[str, torch.Tensor]:
    """Three documents of length 0, 1 and 7 over 5 words, with 3-unit Gaussian images."""
    g = torch.Generator().manual_seed(0)
    txt = torch.tensor([[0, 0, 0, 0, 0], [0, 1, 0, 0, 0], [2, 0, 3, 1, 1]], dtype=torch.float64)
    return {"img": torch.randn(3, 3, generator=g, dtype=torch.float64), "txt": txt}


def count_vectors(n_words: int, length: int) -> torch.Tensor:
    """All count vectors (K, n_words) with Σ = length, in lexicographic order."""
    rows = [c for c in itertools.product(range(length + 1), repeat=n_words) if sum(c) == length]
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, n_words)


def log_multinomial_coefficient(v: torch.Tensor) -> torch.Tensor:
    """log D! / Π_i v_i! per row."""
    return torch.lgamma(v.sum(-1) + 1) - torch.lgamma(v + 1).sum(-1)


def energy(
    model: MultimodalRBM, v: dict[str, torch.Tensor], h: torch.Tensor, hidden_bias_scale: float | None = None
) -> torch.Tensor:
    """E(v, h) written out: Σ_m E_m(v_m) − Σ_m v_mᵀ W_m h − D·cᵀh (D: the text's length, or
    ``hidden_bias_scale`` if given)."""
    img, txt = v["img"], v["txt"]
    if model.units["img"].name == "gaussian":
        e_img = 0.5 * ((img - model.b["img"]) ** 2).sum(-1)
    else:
        e_img = -(img @ model.b["img"])
    d = txt.sum(-1) if hidden_bias_scale is None else hidden_bias_scale
    e = e_img - txt @ model.b["txt"] - ((img @ model.W["img"] + txt @ model.W["txt"]) * h).sum(-1)
    return e - d * (h @ model.c)


def brute_neg_free_energy(
    model: MultimodalRBM, v: dict[str, torch.Tensor], hidden_bias_scale: float | None = None
) -> torch.Tensor:
    """log Σ_h exp(−E(v, h)) per row, over all 2^H hidden states."""
    hs = all_binary(model.n_hidden)
    n = v["txt"].shape[0]
    neg_e = [-energy(model, v, h.expand(n, -1), hidden_bias_scale) for h in hs]
    return torch.logsumexp(torch.stack(neg_e, 1), 1)


def count_index(samples: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """Index of each sample row among ``states`` (every sample must be one of them)."""
    match = (samples.unsqueeze(1) == states.unsqueeze(0)).all(-1)
    assert bool((match.sum(1) == 1).all()), "a sample is not a count vector of the expected length"
    return match.float().argmax(1)


def chi_square_p(samples: torch.Tensor, states: torch.Tensor, log_p: torch.Tensor) -> float:
    """p-value of Pearson's chi-square test of ``samples`` against probabilities exp(log_p) on ``states``."""
    observed = torch.bincount(count_index(samples, states), minlength=states.shape[0]).double()
    expected = torch.softmax(log_p, 0) * samples.shape[0]
    return float(stats.chisquare(observed.numpy(), expected.numpy()).pvalue)


class DrawRecorder:
    """Keeps (length, sample) of every draw of a softmax modality's units."""

    def __init__(self, units) -> None:
        self.draws: list[tuple[torch.Tensor, torch.Tensor]] = []
        original = units.sample

        def sample(act, length=None, generator=None):
            out = original(act, length, generator)
            self.draws.append((length, out))
            return out

        units.sample = sample

    def take(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out, self.draws = self.draws, []
        return out


def assert_lengths(draws, expected: torch.Tensor) -> None:
    assert draws, "no draw was made"
    for _, x in draws:
        torch.testing.assert_close(x.sum(-1), expected.to(x), rtol=0, atol=0)


# --------------------------------------------------------------------------- lengths
def test_reported_case_every_draw_keeps_the_document_lengths():
    """Gaussian image (3 units) + 5-word text, documents of length 0, 1, 7: every sample of the
    text has the data's lengths (used to be 1-word documents everywhere)."""
    model = mixed_model()
    v = reported_batch()
    d = torch.tensor([0.0, 1.0, 7.0], dtype=torch.float64)
    rec = DrawRecorder(model.units["txt"])

    out, _ = model.gibbs_step(v)
    assert_lengths(rec.take(), d)
    assert torch.equal(out["txt"][0], torch.zeros(5, dtype=torch.float64))  # empty stays empty
    model.gibbs_chain(v, steps=4)
    assert_lengths(rec.take(), d)

    states = [x for x, _, _ in model.clamped_chain({"img": v["img"]}, "txt", v["txt"], steps=5)]
    assert len(states) == 6 and rec.take()
    assert_lengths([(None, x) for x in states], d)

    for objective in (ContrastiveDivergence(k=3), ConditionalCD(k=3), CDPercLoss(k=4)):
        objective.setup(model)
        objective.terms(model, v)
        assert_lengths(rec.take(), d)
    cd = ContrastiveDivergence(k=3)
    cd.setup(model)
    neg, _ = cd.negative_sample(model, v, model.hidden_input(v))
    assert_lengths(rec.take() + [(None, neg["txt"])], d)
    best, _ = CDPercLoss(k=4).lowest_energy_prediction(model, v, "txt")
    draws = rec.take()
    assert len(draws) == 5  # the start state and 4 chain steps
    assert_lengths(draws + [(None, best)], d)

    P.ais_conditional_logz(model, {"img": v["img"]}, "txt", n_runs=4, n_betas=10, generator=0, length=d)
    assert_lengths(rec.take(), d.repeat_interleave(4))
    P.ais_logz(model, n_runs=5, n_betas=10, generator=0, lengths={"txt": d})
    assert_lengths(rec.take(), d.repeat_interleave(5))


def test_pcd_chains_keep_lengths_drawn_from_the_data():
    model = mixed_model()
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([0] * 50 + [1] * 30 + [7] * 20)
    txt = torch.zeros(100, 5, dtype=torch.float64)
    txt[:, 2] = lengths.double()
    v = {"img": torch.randn(100, 3, generator=g, dtype=torch.float64), "txt": txt}
    pcd = ContrastiveDivergence(k=2, persistent=True, n_chains=2000)
    pcd.setup(model)
    torch.manual_seed(0)
    neg, _ = pcd.negative_sample(model, v, model.hidden_input(v))
    chain = pcd.chain_lengths()["txt"].clone()
    torch.testing.assert_close(neg["txt"].sum(-1), chain, rtol=0, atol=0)
    share = torch.stack([(chain == k).double().mean() for k in (0, 1, 7)])
    assert int(sum((chain == k).sum() for k in (0, 1, 7))) == 2000  # only the data's lengths
    torch.testing.assert_close(share, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), rtol=0, atol=0.05)
    # later batches (other lengths) leave the chains' lengths alone; the state dict keeps them
    neg, _ = pcd.negative_sample(model, {"img": v["img"][:3], "txt": reported_batch()["txt"]}, None)
    torch.testing.assert_close(neg["txt"].sum(-1), chain, rtol=0, atol=0)
    assert torch.equal(pcd.state_dict()["chain_lengths_txt"], chain)


def test_sampling_and_views_need_the_lengths():
    model = mixed_model()
    v = reported_batch()
    with pytest.raises(ValueError, match="document lengths"):
        model.units["txt"].sample(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="need their document lengths"):
        P.free_view(model, ["txt"], {"img": v["img"]})
    with pytest.raises(ValueError, match="non-negative whole"):
        P.free_view(model, ["txt"], {"img": v["img"]}, {"txt": torch.tensor([0.0, -1.0, 2.5])})
    with pytest.raises(ValueError, match="expected shape"):
        P.free_view(model, ["txt"], {"img": v["img"]}, {"txt": torch.tensor([1.0, 2.0])})
    with pytest.raises(ValueError, match="only free softmax"):
        P.free_view(model, ["img"], {"txt": v["txt"]}, {"img": torch.tensor([1.0, 2.0, 3.0])})


# --------------------------------------------------------------------------- exact distributions
def test_softmax_sample_follows_the_multinomial():
    """Counts of 20,000 draws per length D = 1..4 over 3 words against Multinomial(D, softmax(a))."""
    units = mixed_model(n_words=3).units["txt"]
    act = torch.tensor([0.4, -0.7, 0.9], dtype=torch.float64)
    n = 20000
    lengths = torch.arange(1, 5, dtype=torch.float64).repeat_interleave(n)
    g = torch.Generator().manual_seed(0)
    draws = units.sample(act.expand(lengths.shape[0], -1), lengths, generator=g)
    again = units.sample(
        act.expand(lengths.shape[0], -1), lengths, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(draws, again)
    log_pi = torch.log_softmax(act, 0)
    for i, D in enumerate(range(1, 5)):
        states = count_vectors(3, D)
        rows = draws[i * n : (i + 1) * n]
        p = chi_square_p(rows, states, log_multinomial_coefficient(states) + states @ log_pi)
        assert p > P_REJECT, (D, p)
        # the same draws reject a distribution 0.2 nats off in one logit: the test has power
        wrong = torch.log_softmax(act + torch.tensor([0.2, 0.0, 0.0], dtype=torch.float64), 0)
        assert chi_square_p(rows, states, log_multinomial_coefficient(states) + states @ wrong) < P_REJECT


def test_clamped_gibbs_chain_follows_the_exact_conditional_of_the_text():
    """Chains over (v_text, h), image clamped, D = 1..4 words of 3: after burn-in the states follow
    P(v_text | v_image, D) ∝ (D; v) Σ_h exp(−E(v, h)) (count vectors, enumerated with the hidden)."""
    model = mixed_model(n_words=3, n_hidden=4, seed=2)
    img = torch.tensor([[0.5, -1.0, 0.8]], dtype=torch.float64)
    n = 20000
    lengths = torch.arange(1, 5, dtype=torch.float64).repeat_interleave(n)
    start = torch.zeros(lengths.shape[0], 3, dtype=torch.float64)
    start[:, 0] = lengths  # every word on the first word type
    torch.manual_seed(0)
    with torch.no_grad():
        *_, (last, _, _) = model.clamped_chain({"img": img.expand(lengths.shape[0], -1)}, "txt", start, 30)
    torch.testing.assert_close(last.sum(-1), lengths, rtol=0, atol=0)
    for i, D in enumerate(range(1, 5)):
        states = count_vectors(3, D)
        v = {"img": img.expand(states.shape[0], -1), "txt": states}
        coef = log_multinomial_coefficient(states)
        with torch.no_grad():
            log_p = coef + brute_neg_free_energy(model, v)
            unscaled = coef + brute_neg_free_energy(model, v, hidden_bias_scale=1.0)
        rows = last[i * n : (i + 1) * n]
        p = chi_square_p(rows, states, log_p)
        assert p > P_REJECT, (D, p)
        # the test has power: the same states reject the law without the multinomial coefficients,
        # and (for D ≥ 3) the law whose hidden bias is c instead of c·D
        assert D == 1 or chi_square_p(rows, states, log_p - coef) < P_REJECT, D
        assert D < 3 or chi_square_p(rows, states, unscaled) < P_REJECT, D


@torch.no_grad()
def test_free_energy_and_conditionals_equal_enumeration():
    model = mixed_model(n_words=3, n_hidden=4, seed=3)
    g = torch.Generator().manual_seed(3)
    txt = torch.cat([count_vectors(3, D) for D in range(5)])  # 35 documents of lengths 0..4
    v = {"img": torch.randn(txt.shape[0], 3, generator=g, dtype=torch.float64), "txt": txt}
    torch.testing.assert_close(model.free_energy(v), -brute_neg_free_energy(model, v), rtol=0, atol=1e-10)
    # P(h | v) by enumeration of the hidden states
    hs = all_binary(4)
    log_post = torch.stack([-energy(model, v, h.expand(txt.shape[0], -1)) for h in hs], 1)
    torch.testing.assert_close(model.hidden_probs(v), torch.softmax(log_post, 1) @ hs, rtol=0, atol=1e-12)
    # E[v_text | h, D] by enumeration of the count vectors with their multinomial coefficients
    for D in range(5):
        states = count_vectors(3, D)
        logits = log_multinomial_coefficient(states) + model.visible_input("txt", hs) @ states.T
        expected = torch.softmax(logits, 1) @ states
        got = model.visible_mean("txt", hs, torch.full((16,), float(D), dtype=torch.float64))
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    # the conditional views scale c by the text's length
    torch.testing.assert_close(
        P.conditional_free_energy(model, v, "txt"),
        model.free_energy(v) - 0.5 * ((v["img"] - model.b["img"]) ** 2).sum(-1),
        rtol=0,
        atol=1e-12,
    )
    view = P.free_view(model, ["img"], {"txt": txt})
    torch.testing.assert_close(view.hbias, txt.sum(-1, keepdim=True) * model.c + txt @ model.W["txt"])


# --------------------------------------------------------------------------- likelihoods
def _text_batch(model, n_words=3, max_len=4, n=12, seed=0):
    """``n`` documents of random lengths 0..max_len (uniform words) and random images."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randint(0, max_len + 1, (n,), generator=g)
    words = torch.multinomial(torch.ones(n, n_words), max_len, replacement=True, generator=g)
    txt = torch.zeros(n, n_words, dtype=torch.float64)
    txt.scatter_add_(1, words, (torch.arange(max_len) < d.unsqueeze(1)).double())
    img = torch.randn(n, model.sizes["img"], generator=g, dtype=torch.float64)
    if model.units["img"].name == "bernoulli":
        img = (img > 0).double()
    return {"img": img, "txt": txt}


@torch.no_grad()
def test_exact_conditional_log_likelihood_of_text_equals_enumeration_of_word_sequences():
    model = mixed_model(n_words=3, n_hidden=4, seed=4)
    g = torch.Generator().manual_seed(4)
    txt = torch.tensor(
        [[0, 0, 0], [0, 1, 0], [2, 0, 0], [1, 1, 1], [0, 3, 1], [2, 1, 1]], dtype=torch.float64
    )
    v = {"img": torch.randn(6, 3, generator=g, dtype=torch.float64), "txt": txt}
    logp, se, exact = conditional_log_likelihood(model, v, "txt")
    assert exact and float(se.abs().max()) == 0.0
    assert float(logp[0]) == 0.0  # the empty document is certain given its length
    for i in range(6):
        D = int(txt[i].sum())
        img = v["img"][i : i + 1]
        # word sequences of length D, each with its count vector
        seqs = torch.tensor(list(itertools.product(range(3), repeat=D)), dtype=torch.long).reshape(3**D, D)
        seq_counts = torch.zeros(seqs.shape[0], 3, dtype=torch.float64).scatter_add_(
            1, seqs, torch.ones(seqs.shape, dtype=torch.float64)
        )
        neg_f_seq = brute_neg_free_energy(model, {"img": img.expand(seqs.shape[0], -1), "txt": seq_counts})
        log_z_seq = torch.logsumexp(neg_f_seq, 0)
        # count vectors weighted by their multinomial coefficients: the same normaliser
        states = count_vectors(3, D)
        neg_f = brute_neg_free_energy(model, {"img": img.expand(states.shape[0], -1), "txt": states})
        log_z_counts = torch.logsumexp(log_multinomial_coefficient(states) + neg_f, 0)
        torch.testing.assert_close(log_z_counts, log_z_seq, rtol=0, atol=1e-10)
        own = brute_neg_free_energy(model, {"img": img, "txt": txt[i : i + 1]})[0]
        torch.testing.assert_close(logp[i], own - log_z_seq, rtol=0, atol=1e-10)
        # as a distribution over count vectors, P(v) = (D; v) P(sequence) sums to one
        total = torch.logsumexp(log_multinomial_coefficient(states) + neg_f - log_z_seq, 0)
        torch.testing.assert_close(total, torch.zeros((), dtype=torch.float64), rtol=0, atol=1e-12)
    # the closed form of the sum over sequences on one hidden state
    a = model.b["txt"] + model.W["txt"] @ all_binary(4)[5]
    seqs = torch.tensor(list(itertools.product(range(3), repeat=3)))
    closed = P._log_visible_sum(
        model.units["txt"], model.b["txt"], a.unsqueeze(0) - model.b["txt"], torch.tensor([3.0])
    )
    torch.testing.assert_close(closed[0, 0], torch.logsumexp(a[seqs].sum(1), 0), rtol=0, atol=1e-12)


@torch.no_grad()
def test_joint_log_likelihood_given_lengths_equals_enumeration():
    """Bernoulli image (3 bits) + 3-word text: log P(v | D) with Z(D) summed over images, word
    sequences of length D and hidden states; AIS per distinct length agrees."""
    model = mixed_model(image="bernoulli", n_words=3, n_hidden=4, seed=5)
    v = _text_batch(model, max_len=3, n=10, seed=5)
    lengths = v["txt"].sum(-1)
    assert len(set(lengths.tolist())) >= 3
    xs = all_binary(3)
    brute_logz = {}
    for D in range(4):
        states = count_vectors(3, D)
        img = xs.repeat_interleave(states.shape[0], 0)
        txt = states.repeat(8, 1)
        neg_f = brute_neg_free_energy(model, {"img": img, "txt": txt})
        brute_logz[D] = torch.logsumexp(log_multinomial_coefficient(txt) + neg_f, 0)
    expected = brute_neg_free_energy(model, v) - torch.stack([brute_logz[int(d)] for d in lengths])
    logp, se, exact = joint_log_likelihood(model, v)
    assert exact and se == 0.0
    torch.testing.assert_close(logp, expected, rtol=0, atol=1e-10)
    per_length = P.exact_logz(model, lengths={"txt": torch.arange(4.0)})
    torch.testing.assert_close(per_length, torch.stack([brute_logz[D] for D in range(4)]), rtol=0, atol=1e-10)
    res = P.ais_logz(model, n_runs=200, n_betas=500, generator=0, lengths={"txt": torch.arange(4.0)})
    assert res.logz.shape == res.stderr.shape == (4,) and res.log_weights.shape == (4, 200)
    err = res.logz - per_length
    assert bool((err.abs() <= 3 * res.stderr + 1e-12).all()) and float(err.abs().max()) < 0.1, (
        err,
        res.stderr,
    )
    logp_ais, se_ais, exact_ais = joint_log_likelihood(
        model, v, exact_limit=0, n_ais_runs=200, n_betas=500, generator=0
    )
    assert not exact_ais and se_ais > 0
    assert abs(float(logp_ais.mean() - logp.mean())) < max(3 * se_ais, 1e-3)


@torch.no_grad()
def test_ais_conditional_of_the_text_matches_exact():
    """The reported model (Gaussian image, 5 words), documents of length 0..7: every base model."""
    model = mixed_model(seed=6)
    v = _text_batch(model, n_words=5, max_len=7, n=8, seed=6)
    v["txt"][0] = 0.0  # an empty document
    d = v["txt"].sum(-1)
    exact = P.exact_conditional_logz(model, {"img": v["img"]}, "txt", length=d)
    assert bool((d == 0).any())
    # an empty document: Ẑ = Σ_h exp(ĉᵀh) with ĉ = c·0 + W_imgᵀ v_img
    empty = torch.nn.functional.softplus(v["img"][d == 0] @ model.W["img"]).sum(-1)
    torch.testing.assert_close(exact[d == 0], empty, rtol=0, atol=1e-12)
    data_mean = v["txt"].mean(0)
    mf = P.meanfield_base_mean(model, {"img": v["img"]}, "txt", length=d)
    for base, hidden in [(data_mean, "uniform"), (mf, "uniform"), (mf, "meanfield")]:
        res = P.ais_conditional_logz(
            model,
            {"img": v["img"]},
            "txt",
            base,
            n_runs=100,
            n_betas=400,
            generator=1,
            max_rows=300,
            length=d,
            hidden_base=hidden,
        )
        err = res.logz - exact
        assert bool((err.abs() <= 3 * res.stderr + 1e-12).all()), (err, res.stderr)
        assert float(err.abs().max()) < 0.1


@torch.no_grad()
def test_likelihood_metrics_with_word_counts():
    """cond_nll of a softmax text given a Gaussian image (and back), vi and nll: exact and AIS agree;
    counts are not binarised."""
    model = mixed_model(seed=7)
    data = _text_batch(model, n_words=5, max_len=7, n=24, seed=7)
    assert float(data["txt"].max()) > 1
    exact = likelihood_metrics(model, data, n_examples=20)
    names = {"cond_nll/img_given_rest", "cond_nll/txt_given_rest", "cond_nll/vi", "nll"}
    assert set(exact) == names | {f"{k}_stderr" for k in names}
    logp, _, _ = conditional_log_likelihood(model, {m: x[:20] for m, x in data.items()}, "txt")
    assert exact["cond_nll/txt_given_rest"] == pytest.approx(-float(logp.mean()), abs=1e-12)
    ais = likelihood_metrics(
        model,
        data,
        n_examples=20,
        exact_limit=0,
        n_ais_runs=32,
        n_betas=300,
        joint_ais_runs=100,
        joint_betas=500,
    )
    assert_ais_agrees(ais, exact, names)


@torch.no_grad()
def test_two_softmax_modalities_and_a_bernoulli_one_give_normalised_likelihoods():
    """Three modalities, two of them word counts: P(v_m | rest) and P(v | D₁, D₂) sum to one over
    every state of the given lengths (count vectors weighted by their multinomial coefficients)."""
    torch.manual_seed(8)
    model = MultimodalRBM(
        {
            "a": {"size": 3, "units": "softmax"},
            "b": {"size": 2, "units": "softmax"},
            "x": {"size": 2, "units": "bernoulli"},
        },
        3,
        init_std=0.7,
    ).double()
    with torch.no_grad():
        model.c.normal_(0, 0.5)
    grid = [
        {"a": a, "b": b, "x": x}
        for a in count_vectors(3, 2)
        for b in count_vectors(2, 3)
        for x in all_binary(2)
    ]
    v = {m: torch.stack([s[m] for s in grid]) for m in ("a", "b", "x")}
    coef = log_multinomial_coefficient(v["a"]) + log_multinomial_coefficient(v["b"])
    logp, _, exact = joint_log_likelihood(model, v)
    assert exact
    torch.testing.assert_close(torch.logsumexp(logp + coef, 0), torch.zeros((), dtype=torch.float64))
    for target in ("a", "b", "x"):
        logp, _, _ = conditional_log_likelihood(model, v, target)
        rest = [m for m in ("a", "b", "x") if m != target]
        key = torch.cat([v[m] for m in rest], 1)
        weight = log_multinomial_coefficient(v[target]) if target != "x" else torch.zeros_like(logp)
        for row in key.unique(dim=0):
            group = (key == row).all(1)
            total = torch.logsumexp((logp + weight)[group], 0)
            torch.testing.assert_close(total, torch.zeros((), dtype=torch.float64), msg=target)
