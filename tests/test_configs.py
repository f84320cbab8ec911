"""Every config composes, and every group option instantiates to the right object."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from helpers import compose_job
from mmvi.config_check import validate_config
from mmvi.objectives import Objective

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_train(overrides: list[str], tmp_path: Path):
    return compose_job("train", overrides, tmp_path)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_validates(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    OmegaConf.to_container(cfg, resolve=True)
    validate_config(cfg)


REFERENCE_TABLE = Path(__file__).resolve().parents[1] / "docs" / "reference-settings.md"
PRESETS = ("pcd", "cdpl", "mp", "hybrid")


def reference_table() -> dict[str, dict[str, object]]:
    """``{preset: {setting: value}}`` from the table of docs/reference-settings.md (``—``: absent)."""
    import yaml

    rows = [line for line in REFERENCE_TABLE.read_text().splitlines() if line.startswith("| ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == ["setting", *PRESETS]
    table: dict[str, dict[str, object]] = {p: {} for p in PRESETS}
    for line in rows[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "---":
            continue
        for preset, cell in zip(PRESETS, cells[1:]):
            if cell != "—":
                table[preset][cells[0]] = yaml.safe_load(cell)
    return table


def preset_settings(preset: str, tmp_path: Path) -> dict[str, object]:
    """Every result-defining value of ``experiment=paper_mnist_<preset>`` as dotted keys."""
    from mmvi.fingerprint import flatten, result_settings

    c = OmegaConf.to_container(compose_train([f"experiment=paper_mnist_{preset}"], tmp_path), resolve=True)
    keep = {k: c[k] for k in ("model", "objective", "optim")}
    # the non-finite and divergence policies as a run's identity holds them (the detector only
    # recording, its default, decides nothing)
    keep["nonfinite"] = result_settings({"nonfinite": c["nonfinite"]})["nonfinite"]
    keep["data"] = {k: c["data"][k] for k in ("_target_", "batch_size")}
    keep["trainer"] = {"max_epochs": c["trainer"]["max_epochs"]}
    keep["evaluation"] = {"inference": c["evaluation"]["inference"]}
    return {k: v for k, v in flatten(keep).items() if not k.startswith("model.modalities")}


@pytest.mark.parametrize("preset", PRESETS)
def test_paper_presets_hold_exactly_the_reference_table(preset, tmp_path):
    expected = reference_table()[preset]
    got = preset_settings(preset, tmp_path)
    assert set(got) == set(expected), (sorted(set(got) - set(expected)), sorted(set(expected) - set(got)))
    for key, value in expected.items():
        assert got[key] == value, (preset, key, got[key], value)


@pytest.mark.parametrize("objective", options("objective"))
def test_every_objective_instantiates(objective, tmp_path):
    cfg = compose_train([f"objective={objective}"], tmp_path)
    obj = instantiate(cfg.objective, _convert_="all")
    assert isinstance(obj, Objective)


def test_unknown_key_and_option_are_rejected(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="objective"):
        compose_train(["objective=not_an_objective"], tmp_path)
    with pytest.raises(ConfigCompositionException, match="learning_rate"):
        compose_train(["optim.learning_rate=0.1"], tmp_path)


def test_cluster_and_ddp_configs_compose(tmp_path):
    cfg = compose_train(["trainer=ddp_slurm", "hydra/launcher=slurm", "trainer.devices=8"], tmp_path)
    assert cfg.trainer.strategy.broadcast_buffers is False and cfg.trainer.use_distributed_sampler is False
    assert cfg.trainer.num_nodes == 2
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        full = compose(
            "train",
            overrides=["trainer=ddp_slurm", "hydra/launcher=slurm", "trainer.devices=8"],
            return_hydra_config=True,
        )
    launcher = full.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert trainer_cfg["plugins"][0]["_target_"].endswith("SLURMEnvironment")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        joblib = compose("train", overrides=["hydra/launcher=joblib"], return_hydra_config=True)
    assert "JoblibLauncher" in joblib.hydra.launcher._target_


def test_the_default_run_has_the_default_budget_settings_and_the_presets_the_papers(tmp_path):
    """`make train` (30 epochs): back-propagation through all MP steps from the start and classical
    momentum; the paper presets and sweeps: the reference's ramp and dampened momentum."""
    default = compose_train([], tmp_path)
    assert default.trainer.max_epochs == 30
    assert default.objective.grow_every == 20 and default.optim.momentum_dampening is False
    paper = compose_train(["experiment=paper_mnist_mp"], tmp_path)
    assert paper.objective.grow_every == 20 and paper.optim.momentum_dampening is True
    for experiment in ("sweep_mnist_objectives", "sweep_mp_mask", "sweep_hybrid_alpha", "theorem21"):
        assert compose_train([f"experiment={experiment}"], tmp_path).optim.momentum_dampening is True
    assert compose_train(["objective=hybrid"], tmp_path).objective.minvi.grow_every == 20
