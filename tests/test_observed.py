"""Robustness to the observed fraction: masks, partial inference, and the paper's two points on MNIST."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import mmvi
from helpers import SMALL_RUN, compose_job, tiny_model
from mmvi.config_check import validate_config
from mmvi.errors import ConfigError
from mmvi.evaluation.condce import conditional_cross_entropy
from mmvi.evaluation.observed import block_masks, hidden_part_ce, infer_partial, random_masks
from mmvi.evaluation.records import read_records
from mmvi.fingerprint import result_settings


def test_masks_reveal_the_asked_fraction_nested_and_seeded():
    masks = random_masks(50, 20, [0, 0.1, 0.25, 0.5, 1], seed=3)
    assert [int(masks[f].sum(1).unique()) for f in (0, 0.1, 0.25, 0.5, 1)] == [0, 2, 5, 10, 20]
    assert bool((masks[0.25] <= masks[0.5]).all()) and bool((masks[0.1] <= masks[0.25]).all())
    assert not torch.equal(masks[0.5][0], masks[0.5][1])  # per item
    assert torch.equal(random_masks(50, 20, [0.5], seed=3)[0.5], masks[0.5])
    block = block_masks((4, 3), [0.25, 0.5])
    assert block[0.5].reshape(4, 3)[:2].all() and not block[0.5].reshape(4, 3)[2:].any()
    assert int(block[0.25].sum()) == 3


def test_partial_inference_is_the_missing_modality_inference_at_f0_and_the_joint_at_f1():
    model = tiny_model({"a": 5, "b": 4}, 6, std=0.7, seed=4)
    torch.manual_seed(0)
    v = {m: torch.rand(7, model.sizes[m], dtype=torch.float64) for m in model.names}
    with torch.no_grad():
        h0, act0 = infer_partial(model, v, "a", torch.zeros(1, 5), steps=10, tol=None)
        assert torch.equal(h0, model.infer_missing({"b": v["b"]}, steps=10, tol=None)[1])
        ce = hidden_part_ce(model, "a", v["a"], act0, torch.zeros(1, 5))
        expected = conditional_cross_entropy(model, v, "a", steps=10, tol=None) / 5
        assert torch.allclose(ce, expected.double(), rtol=1e-12)
        h1, _ = infer_partial(model, v, "a", torch.ones(1, 5), steps=10, tol=None)
        assert torch.equal(h1, model.hidden_probs(v))
        # half revealed: the revealed units stay clamped at their values (fixed point of the update)
        mask = random_masks(7, 5, [0.4], seed=0)[0.4].double()
        h, _ = infer_partial(model, v, "a", mask, steps=200, tol=None)
        state = mask * v["a"] + (1 - mask) * model.visible_mean("a", h)
        assert torch.allclose(model.hidden_probs({"a": state, "b": v["b"]}), h, atol=1e-8)


def test_observed_family_holds_the_paper_points_and_the_gap_on_a_real_run(tmp_path):
    out = mmvi.run(
        [
            *SMALL_RUN,
            "evaluation.likelihood.enabled=true",  # 16 hidden units: exact
            "evaluation.likelihood.n_examples=50",
            "evaluation.observed.enabled=true",
            "evaluation.observed.fractions=[0,0.5,1]",
            "evaluation.inference_gap.enabled=true",
            "evaluation.inference_gap.n_chains=4",
            "evaluation.inference_gap.n_samples=8",
        ],
        run_dir=tmp_path / "run",
    )
    res = json.loads((Path(out["run_dir"]) / "results.json").read_text())
    met = res["metrics"]
    assert not res.get("missing"), res.get("missing")
    for m, other in (("left", "right"), ("right", "left")):
        for p in ("random", "block"):
            assert met[f"observed/err/{m}/{p}/f0"] == met[f"classify/err_{other}"]
            assert met[f"observed/err/{m}/{p}/f1"] == met["classify/err_multimodal"]
            assert met[f"observed/ce/{m}/{p}/f0"] == pytest.approx(met[f"cond_ce/{m}_given_{other}"] / 392)
            assert f"observed/ce/{m}/{p}/f1" not in met
        d = f"{m}_given_{other}"
        assert met[f"cond_ce_native/{d}"] == pytest.approx(met[f"cond_ce/{d}"], rel=1e-12)
        assert met[f"gap/{d}"] + met[f"cond_nll/{m}_given_rest"] > 0
    for part in ("likelihood", "inference_gap", "observed"):  # each analysis's cost, in the record
        assert met[f"eval/seconds/{part}"] > 0, part
    df = read_records(Path(out["run_dir"]) / "records.parquet")
    means = df.groupby("metric")["value"].mean()
    for name in [k for k in met if k.startswith(("observed/", "gap/", "gibbs_ce/"))]:
        assert math.isclose(means[name], met[name], rel_tol=1e-12), name
    # off by default: the settings a run is fingerprinted by do not change
    base = compose_job("train", [], tmp_path / "a")
    on = compose_job("train", ["evaluation.observed.fractions=[0,1]"], tmp_path / "b")
    from omegaconf import OmegaConf

    def settings(cfg):
        return result_settings(OmegaConf.to_container(cfg, resolve=True))

    assert settings(base) == settings(on)
    assert "observed" not in settings(base)["evaluation"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("evaluation.observed.fractions=[0,1.5]", "evaluation.observed.fractions=.* is not allowed"),
        ("evaluation.observed.patterns=[random,rows]", "evaluation.observed.patterns=.* is not allowed"),
        ("evaluation.inference_gap.n_chains=0", "evaluation.inference_gap.n_chains=0 is out of range"),
    ],
)
def test_bad_settings_are_refused_before_any_work(tmp_path, override, message):
    cfg = compose_job("train", [override], tmp_path)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)
