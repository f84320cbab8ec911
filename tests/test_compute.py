"""Training cost: the FLOP count per objective (hand count, torch's flop counter) and the cumulative
per-epoch measures of a real run (train/seconds, train/examples, train/flops; results.json compute)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mmvi
from helpers import SMALL_RUN
from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives import CDPercLoss, ConditionalCD, ContrastiveDivergence, Mixture, MultiPrediction
from mmvi.objectives.cost import flops_per_example, step_flops

B = 6


def model(sizes: dict[str, int], hidden: int = 7) -> MultimodalRBM:
    torch.manual_seed(0)
    return MultimodalRBM({m: {"size": n, "units": "bernoulli"} for m, n in sizes.items()}, hidden)


def test_flop_count_against_a_hand_count():
    """a: 5 and b: 3 units, H = 7, B = 6: one product of both modalities P = 2·6·8·7 = 672."""
    rbm = model({"a": 5, "b": 3})
    P = 2 * B * 8 * 7
    assert P == 672
    # CD-2: positive phase + weight gradient 2P, two Gibbs steps 4P, negative statistics P
    assert step_flops(ContrastiveDivergence(k=2), rbm, B) == 7 * P == 4704
    # PCD-2 with 9 chains: 2P + 5 products of 9 rows (2·9·8·7 = 1008 each)
    assert step_flops(ContrastiveDivergence(k=2, persistent=True, n_chains=9), rbm, B) == 2 * P + 5 * 1008
    # CD-PercLoss k=3: 2P + per direction (2 P_rest + 8 P_m + P) = 2P + 2P + 8P + 2P
    assert step_flops(CDPercLoss(k=3), rbm, B) == 14 * P
    # MP T=3, K=1: per direction 2 P_observed + (2T + 2 + 4K + 3) P_predicted → 2P + 15P
    assert step_flops(MultiPrediction(mf_steps=3, bptt_steps=1, grow_every=0), rbm, B) == 17 * P
    assert flops_per_example(ContrastiveDivergence(k=2), rbm, B) == 7 * P / B


def test_mp_count_follows_the_truncation_schedule():
    rbm = model({"a": 5, "b": 3})
    mp = MultiPrediction(mf_steps=5, bptt_steps=5, grow_every=2)
    counts = []
    for epoch in (0, 2, 4, 8, 20):
        mp.set_epoch(epoch)
        counts.append(step_flops(mp, rbm, B))
    P = 2 * B * 8 * 7  # K = 1, 2, 3, 5, 5: + 4 P per extra step
    assert counts == [(2 + 10 + 2 + 4 * k + 3) * P for k in (1, 2, 3, 5, 5)]


OBJECTIVES = {
    "cd": lambda: ContrastiveDivergence(k=3),
    "pcd": lambda: ContrastiveDivergence(k=2, persistent=True, n_chains=9, sparsity_weight=0.1),
    "ccd": lambda: ConditionalCD(k=4),
    "cdpl": lambda: CDPercLoss(k=3, directions=["a", "c"]),
    "mp_K2": lambda: MultiPrediction(mf_steps=4, bptt_steps=2, grow_every=0, sparsity_weight=0.1),
    "mp_full": lambda: MultiPrediction(mf_steps=4, bptt_steps=4, grow_every=0),
    "mp_K_beyond_T": lambda: MultiPrediction(mf_steps=3, bptt_steps=9, grow_every=0, hidden_clamp=1e-6),
    "hybrid": lambda: Mixture(
        MultiPrediction(mf_steps=2, bptt_steps=1, grow_every=0),
        ContrastiveDivergence(k=1, persistent=True, n_chains=4),
        alpha=0.3,
    ),
}


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_flop_count_equals_torchs_flop_counter(name):
    """One real step (loss + backward) on three modalities, counted by torch.utils.flop_counter."""
    rbm = model({"a": 5, "b": 3, "c": 4})
    obj = OBJECTIVES[name]()
    obj.setup(rbm)
    v = {m: torch.bernoulli(torch.full((B, n), 0.5)) for m, n in rbm.sizes.items()}
    obj(rbm, v)  # persistent chains start
    with FlopCounterMode(display=False) as counter:
        loss, _ = obj(rbm, v)
        loss.backward()
    assert counter.get_total_flops() > 0
    assert step_flops(obj, rbm, B) == counter.get_total_flops()


def test_cumulative_measures_of_a_real_run(tmp_path):
    """3 epochs of 200 examples: examples = 200·(epoch + 1), FLOPs = examples × the count per example,
    seconds increasing; results.json's compute holds the totals."""
    small = [o for o in SMALL_RUN if not o.startswith("trainer.max_epochs")]
    out = mmvi.run(
        ["data=mnist5k", *small, "trainer.max_epochs=3", "objective=minvi_mp"], run_dir=tmp_path / "r"
    )
    folder = Path(out["run_dir"])
    log = pd.read_csv(folder / "csv" / "metrics.csv")
    rows = log.dropna(subset=["train/examples"]).sort_values("epoch")
    assert list(rows["epoch"]) == [0, 1, 2]
    np.testing.assert_array_equal(rows["train/examples"], [200, 400, 600])
    seconds = rows["train/seconds"].to_numpy()
    assert seconds[0] > 0 and (np.diff(seconds) > 0).all()
    lit = mmvi.lit.module.MultimodalLitModule.load_from_checkpoint(folder / "checkpoints" / "last.ckpt")
    batch = json.loads((folder / "results.json").read_text())["config"]["data"]["batch_size"]
    per_step = step_flops(lit.objective, lit.model, batch)  # grow_every = 20: the same K in epochs 0-2
    np.testing.assert_allclose(rows["train/flops"], rows["train/examples"] / batch * per_step, rtol=1e-6)
    compute = json.loads((folder / "results.json").read_text())["compute"]
    assert compute["examples"] == 600 and compute["flops"] == pytest.approx(rows["train/flops"].iloc[-1])
    assert compute["seconds"] == pytest.approx(seconds[-1], rel=1e-5)
    assert compute["flops_per_example"] == pytest.approx(per_step / batch)
