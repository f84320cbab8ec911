"""The evaluation's shared test pass equals the separate representations and cross-entropies."""

from __future__ import annotations

import torch

from mmvi.data.base import Split
from mmvi.data.mnist import MNIST5kHalves
from mmvi.evaluation.protocol import conditional_ce_metrics
from mmvi.evaluation.records import Records
from mmvi.evaluation.representations import query_types, split_representations
from mmvi.evaluation.shared import PartTimer, shared_test_pass
from mmvi.models.mrbm import MultimodalRBM


def _check_same(model: MultimodalRBM, split: Split, steps: int, tol: float | None) -> PartTimer:
    queries = query_types(model)
    timer = PartTimer()
    reps, ces = shared_test_pass(model, split, 70, steps, tol, queries, timer=timer)
    old = split_representations(model, split, 70, steps, tol, queries=queries)
    assert set(reps) == set(queries)
    for q in queries:
        assert torch.equal(reps[q], old[q]), q
    records = Records()
    means = conditional_ce_metrics(model, split, 70, steps, tol, records)
    assert len(ces) == len(model.names)
    for m in model.names:
        (name,) = [k for k in means if k.startswith(f"cond_ce/{m}_given_")]
        assert torch.equal(ces[m], torch.as_tensor(records._parts[name]["value"]).double()), m
        assert float(ces[m].mean()) == means[name], m
    assert {f"representations/{q}" for q in queries} | {"cond_ce"} == set(timer.seconds)
    return timer


def test_shared_pass_equals_separate_measures_on_mnist5k(shared_data):
    dm = MNIST5kHalves(batch_size=100)
    dm.setup()
    test = dm.splits["test"].subset(slice(0, 300))
    torch.manual_seed(0)
    model = MultimodalRBM({"left": {"size": 392}, "right": {"size": 392}}, 32, init_std=0.1)
    model.init_visible_bias_from_data({m: x.mean(0) for m, x in test.modalities.items()})
    _check_same(model, test, steps=10, tol=None)
    _check_same(model, test, steps=100, tol=1e-3)  # stopped early: same batches, same stop


def test_shared_pass_with_three_modalities_and_word_counts():
    torch.manual_seed(0)
    mods = {"a": {"size": 6}, "b": {"size": 5}, "w": {"size": 4, "units": "softmax"}}
    model = MultimodalRBM(mods, 7, init_std=0.5)
    g = torch.Generator().manual_seed(1)
    n = 150
    v = {
        "a": (torch.rand(n, 6, generator=g) < 0.4).float(),
        "b": (torch.rand(n, 5, generator=g) < 0.6).float(),
        "w": torch.randint(0, 4, (n, 4), generator=g).float(),
    }
    split = Split(v, torch.zeros(n, 1))
    assert "no_w" in query_types(model)
    _check_same(model, split, steps=5, tol=None)
