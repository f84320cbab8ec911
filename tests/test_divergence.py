"""Runs vetted while training: finite divergence is caught (warn, back-off, stop); healthy runs pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mmvi
from mmvi.config_check import validate_config
from mmvi.errors import ConfigError
from mmvi.lit.divergence import TRAIN_LOSS, VAL_CE, DivergenceDetector, settings, train_mean_baseline
from mmvi.models.mrbm import MultimodalRBM
from test_train_cli import run_cli


def _run(det: DivergenceDetector, series: list[dict]) -> list[dict | None]:
    return [det.check(epoch, values) for epoch, values in enumerate(series)]


def test_runaway_rule_trips_above_k_times_the_best_also_for_negative_measures():
    det = DivergenceDetector({"factor": 2.0, "warmup": 1})
    events = _run(det, [{TRAIN_LOSS: 100.0}, {TRAIN_LOSS: 50.0}, {TRAIN_LOSS: 99.9}, {TRAIN_LOSS: 100.1}])
    assert events[:3] == [None, None, None]
    assert events[3] == {
        "epoch": 3,
        "measure": TRAIN_LOSS,
        "value": 100.1,
        "best": 50.0,
        "rule": "train/loss > best + (2 - 1)·|best|",
        "action": "warn",
    }
    # a negative loss (free-energy differences): best -84 trips above -84 + 84 = 0, not at -68
    det = DivergenceDetector({"factor": 2.0})
    assert _run(det, [{TRAIN_LOSS: -40.0}, {TRAIN_LOSS: -84.0}, {TRAIN_LOSS: -68.0}]) == [None] * 3
    assert det.check(3, {TRAIN_LOSS: 0.5})["best"] == -84.0
    assert det.record["divergence"]["trips"] == 1


def test_warmup_first_values_tripping_values_and_missing_measures():
    det = DivergenceDetector({"factor": 1.5, "warmup": 2})
    # epoch 1 is inside the warm-up: no trip, and it becomes the best
    assert _run(det, [{VAL_CE: 100.0}, {VAL_CE: 300.0}, {VAL_CE: 10.0}]) == [None, None, None]
    assert det.best[VAL_CE] == (10.0, 2)
    assert det.check(3, {}) is None  # no validation this epoch
    assert det.check(4, {VAL_CE: 16.0})["action"] == "warn"
    assert det.best[VAL_CE] == (10.0, 2)  # a tripping value never becomes the best
    assert det.check(5, {VAL_CE: 14.9}) is None and det.is_best(2) and not det.is_best(5)
    assert det.record["divergence"]["epoch"] == 4 and det.record["divergence"]["trips"] == 1


def test_backoff_turns_into_stop_after_max_backoffs_and_off_watches_nothing():
    det = DivergenceDetector({"policy": "backoff", "max_backoffs": 1, "warmup": 0})
    det.check(0, {VAL_CE: 10.0})
    assert det.check(1, {VAL_CE: 50.0})["action"] == "backoff"
    det.backoffs += 1  # what the module does when it backs off
    assert det.check(2, {VAL_CE: 50.0})["action"] == "stop"
    off = DivergenceDetector({"policy": "off"})
    assert _run(off, [{VAL_CE: 1.0}, {VAL_CE: 1e9}]) == [None, None] and off.record == {}
    # objectives whose loss is a surrogate (CD/PCD free-energy differences) are watched on validation only
    assert DivergenceDetector(None, loss_is_value=False).measures == [VAL_CE]
    assert DivergenceDetector(None, loss_is_value=True).measures == [VAL_CE, TRAIN_LOSS]
    with pytest.raises(ValueError, match=r"measures=\['loss'\] is not allowed; allowed: a list of logged"):
        settings({"measures": ["loss"]})


def test_baseline_rule_is_the_train_mean_predictors_cross_entropy():
    torch.manual_seed(0)
    model = MultimodalRBM({"a": {"size": 3, "units": "bernoulli"}, "b": {"size": 2, "units": "gaussian"}}, 4)
    train = {
        "a": torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]),
        "b": torch.tensor([[1.0, 2.0], [3.0, 2.0]]),
    }
    val = {"a": torch.tensor([[1.0, 1.0, 1.0]]), "b": torch.tensor([[2.0, 3.0]])}
    # Bernoulli means (1, 0.5, 0.5) clamped to 1 - 1e-3; Gaussian means (2, 2) with unit variance
    p = torch.tensor([1 - 1e-3, 0.5, 0.5], dtype=torch.float64)
    ce_a = -torch.log(p).sum()
    ce_b = 2 * 0.5 * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64)) + 0.5 * (0.0 + 1.0)
    assert train_mean_baseline(model, train, val) == pytest.approx(float(ce_a + ce_b), rel=1e-6)
    det = DivergenceDetector({"baseline": True, "warmup": 1})
    det.baseline = 100.0
    assert det.check(0, {VAL_CE: 150.0}) is None  # warm-up
    assert det.check(1, {VAL_CE: 101.0})["rule"] == "val/cond_ce/sum > the train-mean predictor's"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("policy", "ignore", "nonfinite.divergence.policy='ignore' is not allowed"),
        ("factor", 1.0, "nonfinite.divergence.factor=1.0 is out of range; allowed: a number > 1"),
        ("warmup", -1, "nonfinite.divergence.warmup=-1 is out of range"),
        ("backoff", 1.5, "nonfinite.divergence.backoff=1.5 is out of range"),
        ("baseline", "yes", "nonfinite.divergence.baseline='yes' has the wrong type"),
        ("patience", 3, "nonfinite.divergence.patience is not a setting"),
    ],
)
def test_divergence_settings_are_checked(key, value, expected):
    with pytest.raises(
        ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        validate_config({"nonfinite": {"policy": "backoff", "divergence": {key: value}}})
    if key != "baseline":
        with pytest.raises(ValueError):
            settings({key: value})
    with pytest.raises(
        ConfigError, match="evaluation.checkpoint='first' is not allowed; allowed: last, best"
    ):
        validate_config(
            {"evaluation": {"_target_": "mmvi.evaluation.protocol.evaluate", "checkpoint": "first"}}
        )


# ------------------------------------------------------------------ real runs
def _mfeat_pmod(shared_data: Path, epochs: int) -> list[str]:
    """The run of docs/results that diverged: MinVI-MP, generalised mask 0.5, three mfeat views, lr 0.01
    with the paper's optimiser and back-propagation ramp (the defaults when it ran).

    Training loss 1.0e3 → 1.7e4 and val/cond_ce/sum 529 → 6.3e4 at epoch 4, every value finite.
    """
    return [
        "optim=paper_sgd",
        "objective.grow_every=20",
        "data=uci_mfeat",
        f"data.data_dir={shared_data / 'uci_mfeat'}",
        "data.views=[pix,fou,kar]",
        "data.modalities=null",
        "model.n_hidden=256",
        "objective=minvi_mp",
        "objective.p_modality=0.5",
        f"trainer.max_epochs={epochs}",
        "trainer.enable_progress_bar=false",
        "evaluation.n_generation=0",
        "logger=csv",
    ]


def test_a_diverging_run_with_policy_stop_fails_with_the_reason(tmp_path, shared_data):
    args = [*_mfeat_pmod(shared_data, 5), "~callbacks.rich_progress_bar", "nonfinite.divergence.policy=stop"]
    proc = run_cli("mmvi.train", [*args, f"hydra.run.dir={tmp_path}"], cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "failed" and "metrics" not in res
    assert res["reason"].startswith("DivergenceError: divergence at epoch 4: val/cond_ce/sum")
    div = res["divergence"]
    assert (div["epoch"], div["measure"], div["action"], div["trips"]) == (4, VAL_CE, "stop", 1)
    assert div["value"] > 2 * div["best"] and 400 < div["best"] < 600
    assert "error: divergence at epoch 4" in proc.stderr and "Traceback" not in proc.stderr


def test_a_diverging_run_with_backoff_restores_the_best_epoch_and_halves_the_learning_rate(
    tmp_path, shared_data
):
    import pandas as pd

    out = mmvi.run([*_mfeat_pmod(shared_data, 6), "nonfinite.divergence.policy=backoff"], run_dir=tmp_path)
    res = json.loads((Path(out["run_dir"]) / "results.json").read_text())
    assert res["status"] == "completed"
    div = res["divergence"]
    assert (div["epoch"], div["measure"], div["action"]) == (4, VAL_CE, "backoff")
    curve = pd.read_csv(Path(out["run_dir"]) / "csv" / "metrics.csv").groupby("epoch").mean()
    best_epoch = int(curve.loc[:3, VAL_CE].idxmin())
    lr = curve["train/lr"]
    # epoch 5 runs from the best epoch's state at half the schedule's rate (0.01 / (1 + 0.005 t))
    assert lr[5] == pytest.approx(0.5 * 0.01 / (1 + 0.005 * 6), rel=1e-6)
    assert lr[4] == pytest.approx(0.01 / (1 + 0.005 * 5), rel=1e-6)
    assert curve.loc[5, VAL_CE] < 2 * curve.loc[best_epoch, VAL_CE]  # back on track
    assert res["evaluated_checkpoint"] == {"which": "last", "epoch": 5}


SHORT = [
    "data=mnist5k",
    "data.max_examples={train:600,val:200,test:100}",
    "trainer.max_epochs=4",
    "trainer.enable_progress_bar=false",
    "evaluation.n_generation=0",
    "logger=csv",
]


@pytest.mark.parametrize(
    "preset", ["paper_mnist_pcd", "paper_mnist_cdpl", "paper_mnist_mp", "paper_mnist_hybrid"]
)
def test_the_paper_presets_do_not_trip_the_detector(preset, tmp_path):
    """The presets' settings (the paper's SGD and objectives; 250 hidden units) on 600 mnist5k digits."""
    out = mmvi.run([f"experiment={preset}", *SHORT, "model.n_hidden=250"], run_dir=tmp_path)
    res = json.loads((Path(out["run_dir"]) / "results.json").read_text())
    assert res["status"] == "completed"
    assert "divergence" not in res
    lit = mmvi.load(out["run_dir"])
    assert res["config"]["nonfinite"]["divergence"]["policy"] == "warn"
    ckpt = torch.load(Path(out["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=False)
    watched = ckpt["mmvi_divergence"]["best"]
    assert VAL_CE in watched  # the rules did look at every epoch's validation measure
    assert (TRAIN_LOSS in watched) == (preset == "paper_mnist_mp")
    assert lit.results["status"] == "completed"


def test_evaluation_checkpoint_best_evaluates_the_best_epoch(tmp_path):
    out = mmvi.run(
        [*SHORT, "trainer.max_epochs=3", "model.n_hidden=32", "evaluation.checkpoint=best"], run_dir=tmp_path
    )
    run = Path(out["run_dir"])
    res = json.loads((run / "results.json").read_text())
    chosen = res["evaluated_checkpoint"]
    import pandas as pd

    curve = pd.read_csv(run / "csv" / "metrics.csv").groupby("epoch").mean()[VAL_CE]
    assert chosen["which"] == "best" and chosen["monitor"] == VAL_CE
    assert chosen["epoch"] == int(curve.idxmin()) and chosen["path"] == "checkpoints/best.ckpt"
    assert chosen["value"] == pytest.approx(float(curve.min()), rel=1e-6)
    assert (run / "checkpoints" / "best.ckpt").is_file()
    # the evaluated weights are the best checkpoint's: the recorded cond CE is theirs
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert best["epoch"] == chosen["epoch"] and last["epoch"] == 2
    from mmvi.evaluation.protocol import conditional_ce_metrics

    loaded = mmvi.load(run)
    model, test = loaded.model, loaded.datamodule.splits["test"]
    steps = int(res["metrics"]["eval/mf_steps"])
    model.load_state_dict(
        {k[len("model.") :]: v for k, v in best["state_dict"].items() if k.startswith("model.")}
    )
    evaluated = conditional_ce_metrics(model, test, 1000, steps, None)
    for name, value in evaluated.items():
        assert res["metrics"][name] == pytest.approx(value, rel=1e-6), name
    with pytest.raises(ConfigError, match="checkpoint_monitor='loss' is not allowed"):
        mmvi.run(
            [*SHORT, "evaluation.checkpoint=best", "evaluation.checkpoint_monitor=loss"],
            run_dir=tmp_path / "x",
        )
