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


def test_paper_experiments_match_the_paper_table(tmp_path):
    expected = {
        "pcd": (
            "ContrastiveDivergence",
            {"k": 10, "n_chains": 500, "sparsity_weight": 0.3, "sparsity_target": 0.05},
        ),
        "cdpl": ("CDPercLoss", {"k": 10, "sparsity_weight": 0.1, "sparsity_target": 0.1}),
        "mp": (
            "MultiPrediction",
            {"mask_rate": 0.25, "mf_steps": 5, "bptt_steps": 5, "sparsity_weight": 0.1},
        ),
        "hybrid": ("Mixture", {"alpha": 0.5, "sparsity_weight": 0.1}),
    }
    for name, (cls, values) in expected.items():
        cfg = compose_train([f"experiment=paper_mnist_{name}"], tmp_path)
        assert cfg.objective._target_.endswith(cls)
        for k, v in values.items():
            assert cfg.objective[k] == v, (name, k)
        assert cfg.model.n_hidden == 1000 and cfg.data.batch_size == 100 and cfg.trainer.max_epochs == 300
        assert cfg.optim.lr == 0.01 and cfg.optim.lr_decay == 0.005 and cfg.optim.weight_decay == 1e-4
        assert (cfg.optim.momentum_initial, cfg.optim.momentum, cfg.optim.momentum_switch_epoch) == (
            0.33,
            0.47,
            5,
        )
        assert cfg.data._target_.endswith("MNISTHalves")
    hybrid = compose_train(["experiment=paper_mnist_hybrid"], tmp_path).objective
    assert hybrid.minvi.mask_rate == 0.1 and hybrid.nll.k == 10 and hybrid.nll.n_chains == 500


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
