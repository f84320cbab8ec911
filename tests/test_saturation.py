"""Every measure stays finite and right where probabilities saturate, in float32.

The reported case: one visible unit per modality, every parameter 0 but the left visible bias 20.
In float32 σ(20) and 1 − 1e-10 are both 1.0, so a clipped-probability cross-entropy gave NaN (true
bit 1) and +inf (true bit 0); the definition evaluated exactly gives −log σ(20) = 2.1e-9 nats and
−log(1 − σ(20)) = 20.0 nats.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmvi.evaluation.condce import CLIP, bernoulli_cross_entropy, conditional_cross_entropy
from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives import MultiPrediction
from mmvi.run_folder import RunRecord
from mmvi.utils import Measures
from test_train_cli import run_cli


def _one_unit_model(left_bias: float) -> MultimodalRBM:
    model = MultimodalRBM({"left": {"size": 1}, "right": {"size": 1}}, n_hidden=1)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.b["left"].fill_(left_bias)
    return model


@pytest.mark.parametrize(
    ("bit", "expected"), [(1.0, math.log1p(math.exp(-20.0))), (0.0, math.log1p(math.exp(20.0)))]
)
def test_reported_case_gives_the_exact_cross_entropy(bit, expected):
    model = _one_unit_model(20.0)
    v = {"left": torch.tensor([[bit]]), "right": torch.tensor([[1.0]])}
    for steps in (0, 1, 10):
        ce = conditional_cross_entropy(model, v, "left", steps=steps, tol=None)
        assert ce.dtype == torch.float32
        assert float(ce) == pytest.approx(expected, rel=1e-5), steps  # 2.06e-9 and 20.0 nats


def _reference_ce(x: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """The documented definition in float64: probabilities σ(a) clipped to [1e-10, 1 − 1e-10]."""
    p = torch.sigmoid(act.double()).clamp(CLIP, 1 - CLIP)
    x = x.double()
    return -(x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(-1)


def test_cross_entropy_matches_float64_for_activations_to_plus_minus_80():
    g = torch.Generator().manual_seed(0)
    act = torch.empty(64, 50).uniform_(-80, 80, generator=g)
    act[:, :4] = torch.tensor([50.0, -50.0, 23.0, -23.5])
    x = (torch.rand(64, 50, generator=g) < 0.5).float()
    ours = bernoulli_cross_entropy(x, act)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours.double(), _reference_ce(x, act), rtol=1e-5, atol=0.0)


def test_saturated_model_gives_finite_float32_measures_equal_to_float64():
    """Weights large but finite (as after a diverging learning rate): activations beyond ±50."""
    torch.manual_seed(1)
    model = MultimodalRBM({"left": {"size": 12}, "right": {"size": 10}}, n_hidden=8, init_std=15.0)
    with torch.no_grad():
        model.c.normal_(0, 20)
        for m in model.names:
            model.b[m].normal_(0, 30)
    v = {m: (torch.rand(32, n) < 0.5).float() for m, n in model.sizes.items()}
    big = model.double()
    v64 = {m: x.double() for m, x in v.items()}
    model32 = MultimodalRBM({"left": {"size": 12}, "right": {"size": 10}}, n_hidden=8)
    model32.load_state_dict({k: t.float() for k, t in big.state_dict().items()})
    acts = model32.hidden_input(v).abs().max()
    assert float(acts.detach()) > 50
    for target in model32.names:
        ce32 = conditional_cross_entropy(model32, v, target, steps=5, tol=None)
        ce64 = conditional_cross_entropy(big, v64, target, steps=5, tol=None)
        assert torch.isfinite(ce32).all()
        torch.testing.assert_close(ce32.double(), ce64, rtol=1e-5, atol=1e-6)
    f32, f64 = model32.free_energy(v), big.free_energy(v64)
    assert torch.isfinite(f32).all()
    torch.testing.assert_close(f32.double(), f64, rtol=1e-5, atol=1e-4)
    obj = MultiPrediction(mask_rate=0.0, mf_steps=3, bptt_steps=3, grow_every=0, hidden_clamp=1e-6)
    torch.manual_seed(2)
    loss32, _ = obj(model32, v)
    torch.manual_seed(2)
    loss64, _ = obj(big, v64)
    assert math.isfinite(float(loss32))
    assert float(loss32) == pytest.approx(float(loss64), rel=1e-5)


def test_a_measure_that_cannot_be_computed_is_recorded_missing(tmp_path, capsys):
    metrics = Measures({"cond_ce/left_given_right": 71.0, "nll": float("nan")})
    metrics.attempt("classify/*", lambda: 1 / 0)
    with RunRecord(tmp_path, {"config": {}}) as record:
        good = record.complete(metrics)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "completed"
    assert res["metrics"] == good == {"cond_ce/left_given_right": 71.0}
    assert res["missing_metrics"] == {
        "classify/*": "ZeroDivisionError: division by zero",
        "nll": "non-finite value (nan)",
    }
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "warning: classify/* could not be computed: ZeroDivisionError: division by zero",
        "warning: nll could not be computed: non-finite value (nan)",
    ]


def test_a_confident_model_trains_and_records_finite_metrics(shared_data, tmp_path):
    """End to end: model.init_std=3.0 saturates every unit; the run completes with finite metrics."""
    args = [
        "data=mnist5k",
        "data.max_examples={train:300,val:100,test:100}",
        "model.n_hidden=64",
        "model.init_std=3.0",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "evaluation.n_generation=0",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
    ]
    proc = run_cli("mmvi.train", args, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "completed" and "missing_metrics" not in res
    for key in ("classify/err_multimodal", "cond_ce/left_given_right", "cond_ce/right_given_left"):
        assert math.isfinite(res["metrics"][key]) and res["metrics"][key] >= 0, key
    import pandas as pd

    curve = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    val = curve["val/cond_ce/sum"].dropna()
    assert len(val) == 1 and math.isfinite(float(val.iloc[0]))
