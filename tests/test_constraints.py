"""Each setting's constraint is declared once, beside its parameter, and checked before any work."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from omegaconf import OmegaConf

import mmvi
from helpers import compose_job
from mmvi.config_check import validate_config
from mmvi.constraints import Interval, declared
from mmvi.data.mnist import MNIST5kHalves
from mmvi.errors import ConfigError
from mmvi.evaluation.protocol import check_protocol_data
from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives import ContrastiveDivergence, MultiPrediction
from test_reliability import SMALL
from test_train_cli import run_cli

CONF = Path(__file__).resolve().parents[1] / "conf"
# parameters that name things (files, modalities, classes) rather than take values in a range
NAMES = {"modalities", "pathways", "default_pathway", "hidden_units", "minvi", "nll", "files", "labels"}


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in ("objective", "model", "evaluation") for o in group_options(g)]
)
def test_every_numeric_setting_of_a_target_has_a_declared_constraint(group, option):
    """No setting of a shipped config slips past the pre-flight check unchecked."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("deep" if option in ("mdrnn", "mdbm") else "train", overrides=[f"{group}={option}"])
    node = OmegaConf.to_container(cfg[group], resolve=False)
    target = get_object(node["_target_"])
    constraints = declared(target)
    params = set(inspect.signature(target).parameters) - {"self", "model", "dm", "out_dir", "native_steps"}
    for key, value in node.items():
        if key.startswith("_") or key in NAMES or key not in params:
            continue
        assert key in constraints, f"{group}={option}: {key}={value!r} has no declared constraint on {target}"


def test_constructors_and_the_preflight_read_the_same_declaration(tmp_path):
    rule = declared(MultiPrediction)["mask_rate"]
    assert isinstance(rule, Interval) and (rule.low, rule.high) == (0, 1)
    with pytest.raises(
        ConfigError, match=r"MultiPrediction.mask_rate=1.5 is out of range; allowed: a number in \[0, 1\]"
    ):
        MultiPrediction(mask_rate=1.5)
    with pytest.raises(ConfigError, match="k_schedule='linear' is not allowed; allowed: fixed, ramp"):
        ContrastiveDivergence(k_schedule="linear")
    with pytest.raises(ConfigError, match="n_hidden=0 is out of range; allowed: an integer >= 1"):
        MultimodalRBM({"x": {"size": 2}}, n_hidden=0)
    cfg = compose_job("train", ["objective=hybrid", "objective.minvi.mask_rate=1.5"], tmp_path)
    with pytest.raises(ConfigError, match=r"^objective.minvi.mask_rate=1.5 is out of range"):
        validate_config(cfg)


def test_data_dependent_evaluation_settings_are_checked_before_training():
    dm = MNIST5kHalves(max_examples={"train": 50, "val": 20, "test": 30})
    dm.setup()
    first = int(dm.splits["train"].labels.argmax(1)[0])
    second = int((dm.splits["train"].labels.argmax(1) != first).nonzero()[0]) + 1
    with pytest.raises(
        ConfigError, match=f"max_train=1 keeps 1 training example.*allowed: an integer >= {second}"
    ):
        check_protocol_data(dm, None, classifier={"max_train": 1})
    check_protocol_data(dm, None, classifier={"max_train": second})  # two classes: accepted
    with pytest.raises(ConfigError, match=r"retrieval.k=30 is larger than the retrieval database \(29 test"):
        check_protocol_data(dm, None, retrieval={"enabled": True, "k": 30})
    check_protocol_data(dm, None, retrieval={"enabled": True, "k": 29})
    check_protocol_data(dm, None, retrieval={"enabled": False, "k": 30})  # retrieval off: k unused


def test_a_probe_subset_of_one_class_stops_the_run_before_training(tmp_path):
    proc = run_cli(
        "mmvi.train", [*SMALL, "evaluation.classifier.max_train=1", f"hydra.run.dir={tmp_path}"], cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and "the linear probe needs two classes at least" in errors[0], proc.stderr[
        -2000:
    ]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "results.json").exists()
    assert not (tmp_path / "csv").exists()


def test_a_pathway_filter_that_keeps_no_document_stops_before_the_first_stage(tmp_path, shared_data):
    with pytest.raises(ConfigError, match=r"stages.pathway.min_active.image=1000 keeps no training example"):
        mmvi.run(
            [
                "experiment=wikipedia_deep",
                f"data.data_dir={shared_data / 'wikipedia_xmodal'}",
                "+stages.pathway.min_active={image: 1000}",
                "logger=csv",
            ],
            task="deep",
            run_dir=tmp_path / "run",
        )
    assert not (tmp_path / "run" / "stages").exists()
