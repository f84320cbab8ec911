"""A run folder holds one configuration; a finished result is never lost or relabelled.

The reported case: ``objective=nll_cd`` then ``objective=minvi_mp`` in the same ``hydra.run.dir``
resumed the NLL model and filed it as MinVI. Now the second command stops before any work with
one line naming the differing keys and the two ways forward.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch

import mmvi
from helpers import SMALL_RUN, compose_job
from mmvi.config_check import check_evaluation_data
from mmvi.errors import ConfigError
from mmvi.fingerprint import digest
from mmvi.run_folder import read_results
from test_train_cli import run_cli

SMALL = SMALL_RUN


def files(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (wandb's own folder aside), by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file() and "wandb" not in p.parts
    }


def test_reused_folder_with_another_objective_stops_before_any_work(tmp_path):
    run = tmp_path / "run"
    mmvi.run([*SMALL, "objective=nll_cd"], run_dir=run)
    before = files(run)
    second = run_cli("mmvi.train", [*SMALL, "objective=minvi_mp", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert second.returncode == 2
    lines = [x for x in second.stderr.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in second.stderr
    assert "holds a run of another configuration" in lines[0]
    assert (
        'objective._target_: "mmvi.objectives.ContrastiveDivergence" → "mmvi.objectives.MultiPrediction"'
        in lines[0]
    )
    assert "hydra.run.dir=<new folder>" in lines[0] and "ckpt_path=none" in lines[0]
    after = files(run)
    # nothing of the NLL run was touched (Hydra adds its record of the refused attempt beside it)
    assert {k: after.get(k) for k in before if k != "train.log"} == {
        k: v for k, v in before.items() if k != "train.log"
    }
    assert [k for k in after if k not in before and not k.startswith(".hydra/") and k != "train.log"] == []
    res = read_results(run)
    assert res["status"] == "completed" and res["choices"]["objective"] == "nll_cd"
    # the record names the code it was computed with (the checkout's commit where there is one)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=Path(mmvi.__file__).parent, capture_output=True, text=True
    )
    assert res["code"]["version"] == mmvi.__version__
    assert res["code"]["commit"] == (head.stdout.strip() if head.returncode == 0 else None)


def test_resources_do_not_change_the_identity_and_a_raised_schedule_continues(tmp_path):
    run = tmp_path / "run"
    out = mmvi.run([*SMALL, "objective=minvi_mp"], run_dir=run)
    fp = out["results"]["fingerprint"]
    assert fp["settings"]["objective"]["_target_"] == "mmvi.objectives.MultiPrediction"
    assert "trainer" in fp["settings"] and "devices" not in fp["settings"]["trainer"]
    assert fp["data_digest"]
    # logging, progress bar and device count are resources: the same run, re-evaluated; the earlier
    # completed record is kept beside the new one
    again = mmvi.run([*SMALL, "objective=minvi_mp", "logger=none", "trainer.devices=1"], run_dir=run)
    assert again["results"]["fingerprint"]["digest"] == fp["digest"]
    assert len(list(run.glob("results.*.json"))) == 1
    # a raised trainer.max_epochs continues the run from its checkpoint
    longer = mmvi.run([*SMALL, "objective=minvi_mp", "trainer.max_epochs=2"], run_dir=run)
    assert longer["results"]["status"] == "completed"
    assert sorted(p.name for p in (run / "checkpoints").glob("epoch_*.ckpt"))[-1] == "epoch_001.ckpt"
    assert len(list(run.glob("results.*.json"))) == 2
    # a lowered one is another schedule: refused
    with pytest.raises(ConfigError, match=r"trainer.max_epochs: 2 → 1"):
        mmvi.run([*SMALL, "objective=minvi_mp", "trainer.max_epochs=1"], run_dir=run)
    # ckpt_path=none starts over in the folder, keeping the earlier run's files aside
    fresh = mmvi.run([*SMALL, "objective=nll_cd", "ckpt_path=none"], run_dir=run)
    assert fresh["results"]["choices"]["objective"] == "nll_cd"
    kept = {p.name.split(".")[0] for p in run.iterdir() if p.name.count(".") >= 1 and "20" in p.name}
    assert {"checkpoints", "csv", "results"} <= kept


def test_changed_data_content_is_another_run(shared_data, tmp_path):
    """Same settings, same file names, other numbers in the files: refused by the data digest."""
    view = np.loadtxt(shared_data / "uci_mfeat" / "mfeat-fou.csv", delimiter=",", skiprows=1)
    fou, labels = view[:, :-1], view[:, -1].astype(int)
    np.save(tmp_path / "fou.npy", fou[:, :40])
    np.save(tmp_path / "fou2.npy", fou[:, 40:])
    np.save(tmp_path / "labels.npy", labels)
    args = [
        "data=arrays",
        f"data.files={{a: {tmp_path / 'fou.npy'}, b: {tmp_path / 'fou2.npy'}}}",
        f"data.labels={tmp_path / 'labels.npy'}",
        "data.units={a: gaussian, b: gaussian}",
        "model.n_hidden=8",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "evaluation.n_generation=0",
        "logger=csv",
    ]
    run = tmp_path / "run"
    # modalities read from the files: a direction naming none of them is refused before training
    with pytest.raises(ConfigError, match="objective.directions names modality 'c'"):
        mmvi.run([*args, "objective.directions=[c]"], run_dir=tmp_path / "other")
    mmvi.run(args, run_dir=run)
    np.save(tmp_path / "fou.npy", fou[::-1, :40])  # the user's file changed (rows reordered)
    with pytest.raises(ConfigError, match=r"data \(content\)"):
        mmvi.run(args, run_dir=run)
    assert read_results(run)["status"] == "completed"


def test_an_evaluation_folder_holds_one_evaluation(tmp_path):
    trained = tmp_path / "trained"
    mmvi.run([*SMALL, "objective=minvi_mp"], run_dir=trained)
    ckpt = trained / "checkpoints" / "last.ckpt"
    ev = tmp_path / "eval"
    out = mmvi.run([f"ckpt_path={ckpt}", "evaluation.n_generation=0"], task="eval", run_dir=ev)
    train_metrics = read_results(trained)["metrics"]
    assert out["metrics"]["cond_ce/left_given_right"] == pytest.approx(
        train_metrics["cond_ce/left_given_right"]
    )
    with pytest.raises(ConfigError, match=r"evaluation.inference: \"native\" → \"converged\""):
        mmvi.run(
            [f"ckpt_path={ckpt}", "evaluation.n_generation=0", "evaluation.inference=converged"],
            task="eval",
            run_dir=ev,
        )
    assert read_results(ev)["status"] == "completed"
    # another checkpoint with the same evaluation settings: refused in this folder; in its own
    # folder its record's digest differs (the digest covers the checkpoint and the data read)
    other = tmp_path / "other"
    mmvi.run([*SMALL, "objective=nll_cd"], run_dir=other)
    ckpt2 = other / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=r"holds a run of another configuration .*checkpoint: "):
        mmvi.run([f"ckpt_path={ckpt2}", "evaluation.n_generation=0"], task="eval", run_dir=ev)
    mmvi.run([f"ckpt_path={ckpt2}", "evaluation.n_generation=0"], task="eval", run_dir=tmp_path / "eval2")
    a, b = read_results(ev)["fingerprint"], read_results(tmp_path / "eval2")["fingerprint"]
    assert a["digest"] != b["digest"] and a["data_digest"] == b["data_digest"] is not None
    assert a["digest"] == digest([a["settings"], a["data_digest"]])


def test_eval_user_errors_are_one_line_with_exit_status_2(tmp_path):
    proc = run_cli(
        "mmvi.eval",
        [f"ckpt_path={tmp_path / 'missing.ckpt'}", f"hydra.run.dir={tmp_path / 'e'}"],
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"error: ckpt_path={tmp_path / 'missing.ckpt'}: no such checkpoint file"
    )
    assert "Traceback" not in proc.stderr


def test_a_bad_evaluation_setting_stops_before_training(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("mmvi.train", [*SMALL, "evaluation.retrieval.k=0", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "error: evaluation.retrieval.k=0 is out of range; allowed: an integer >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr and not (run / "checkpoints").exists()
    assert not (run / "results.json").exists()  # a single run reports by its line; nothing written


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("evaluation.classifier.Cs=[]", "evaluation.classifier.Cs=[] is not allowed"),
        ("evaluation.classifier.Cs=[0,1]", "a non-empty list of numbers > 0"),
        ("evaluation.classifier.refit=test", "evaluation.classifier.refit='test' is not allowed"),
        ("evaluation.classifier.max_train=0", "evaluation.classifier.max_train=0 is out of range"),
        ("evaluation.likelihood.n_betas=2", "evaluation.likelihood.n_betas=2 is out of range"),
        ("evaluation.likelihood.n_ais_runs=0", "evaluation.likelihood.n_ais_runs=0 is out of range"),
        ("evaluation.likelihood.ais_base=uniform", "evaluation.likelihood.ais_base='uniform' is not allowed"),
        ("evaluation.likelihood.exact_limit=64", "an integer in [0, 30]"),
        ("evaluation.inference=exact", "evaluation.inference='exact' is not allowed"),
        ("evaluation.retrieval.enabled=yes", "evaluation.retrieval.enabled='yes' has the wrong type"),
        ("+evaluation.mf_iterations=5", "evaluation.mf_iterations is not a setting of"),
        ("objective=nll_pcd objective.k_schedule=linear", "objective.k_schedule='linear' is not allowed"),
        ("objective.sparsity_form=median", "objective.sparsity_form='median' is not allowed"),
        ("data.max_examples=train:200", "data.max_examples='train:200' is not allowed"),
        ("trainer.accelerator=tpux", "invalid accelerator name"),
        ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch=0 is out of range"),
        ("seed=-1", "seed=-1 is out of range"),
        ("evaluation.likelihood=5", "evaluation.likelihood=5 has the wrong type"),
        ("+evaluation.classifier.foo=1", "evaluation.classifier.foo is not a setting"),
        ("+evaluation.likelihood.foo=1", "evaluation.likelihood.foo is not a setting"),
        ("+optim.foo=1", "optim.foo is not a setting"),
        ("objective.directions=[]", "objective.directions=[] is not allowed"),
        ("evaluation.inference=converged evaluation.mf_steps=0", "evaluation.mf_steps=0 is out of range"),
        ("ckpt_path=5", "ckpt_path=5 has the wrong type"),
        ("objective.hidden_clamp=0.7", "objective.hidden_clamp=0.7 is out of range"),
        ("data.max_examples={train:0}", "data.max_examples.train=0 is out of range"),
    ],
)
def test_every_group_is_validated_before_any_data_is_read(override, message, tmp_path):
    with pytest.raises(ConfigError, match=None) as err:
        mmvi.run([*SMALL, *override.split()], run_dir=tmp_path / "run")
    assert message in str(err.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


DEEP_TINY = [
    "experiment=wikipedia_deep",
    "stages.pathway.epochs=1",
    "stages.top.epochs=1",
    "stages.finetune.recurrent.epochs=1",
    "logger=csv",
]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stages.pathway.optim.lr=-1", "stages.pathway.optim.lr=-1 is out of range"),
        ("stages.pathway.optim.momentum=2", "stages.pathway.optim.momentum=2 is out of range"),
        ("model=mdbm stages.joint.optim.lr=-1", "stages.joint.optim.lr=-1 is out of range"),
        ("stages.pathway.objective.k=0", "stages.pathway.objective.k=0 is out of range"),
        (
            "+stages.pathway.layers={bogus_9:{epochs:1}}",
            "stages.pathway.layers.bogus_9 names no pathway layer",
        ),
        ("+stages.pathway.min_active={image:-3}", "stages.pathway.min_active.image=-3 is out of range"),
        ("+stages.pathway.objective.foo=1", "stages.pathway.objective"),
        ("+stages.foo=1", "stages.foo is not a setting; allowed: progress_bar, chunk"),
        ("+stages.top.foo=1", "stages.top.foo is not a setting; allowed: epochs, batch_size, validate"),
        (
            "+stages.finetune.foo=1",
            "stages.finetune.foo=1 has the wrong type; allowed: a mapping of settings",
        ),
        ("+stages.finetune.recurrent.objective.foo=1", "stages.finetune.recurrent.objective: "),
        (
            "+stages.finetune.recurrent.optimizer.beta=1",
            "stages.finetune.recurrent.optimizer.beta is not a setting",
        ),
        ("evaluation=theorem21", "evaluation=theorem21 needs the data table of data=theorem21"),
    ],
)
def test_deep_stage_settings_are_validated_before_any_stage(shared_data, override, message, tmp_path):
    with pytest.raises(ConfigError) as err:
        mmvi.run(
            [*DEEP_TINY, f"paths.data_dir={shared_data}", *override.split()],
            task="deep",
            run_dir=tmp_path / "d",
        )
    assert message in str(err.value)
    assert not (tmp_path / "d" / "stages").exists()


def test_an_evaluation_that_needs_other_data_stops_before_training(tmp_path):
    # the Theorem 2.1 measures need data=theorem21's table and an RBM: refused before any training
    with pytest.raises(
        ConfigError, match=r"^evaluation=theorem21 needs the data table of data=theorem21; MNIST5kHalves"
    ):
        small = [x for x in SMALL if not x.startswith("evaluation.")]
        mmvi.run([*small, "evaluation=theorem21"], run_dir=tmp_path / "run")
    assert (
        not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "results.json").exists()
    )
    # with its data, but a model whose joint cannot be enumerated, or names the data do not have
    cfg = compose_job("train", ["experiment=theorem21"], tmp_path / "t21")
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup()
    check_evaluation_data(cfg.evaluation, dm, hydra.utils.instantiate(cfg.model))  # the experiment itself
    with pytest.raises(ConfigError, match=r"enumerates a MultimodalRBM's joint; the model is Linear"):
        check_evaluation_data(cfg.evaluation, dm, torch.nn.Linear(2, 2))
    cfg.evaluation.names = ["x", "z"]
    with pytest.raises(ConfigError, match=r"evaluation.names names 'z', which the data do not have"):
        check_evaluation_data(cfg.evaluation, dm)


def test_checkpoints_and_records_in_progress_are_checked(tmp_path):
    run = tmp_path / "run"
    # a file that is not a checkpoint
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="is not a checkpoint"):
        mmvi.run([*SMALL, f"ckpt_path={tmp_path / 'notes.txt'}"], run_dir=run)
    # another run's checkpoint: the message names the checkpoint, not this folder
    other = mmvi.run([*SMALL, "seed=3"], run_dir=tmp_path / "other")
    ckpt = Path(other["run_dir"]) / "checkpoints" / "last.ckpt"
    with pytest.raises(
        ConfigError, match=r"ckpt_path=.* is a checkpoint of another configuration: seed: 3 → 0"
    ):
        mmvi.run([*SMALL, f"ckpt_path={ckpt}"], run_dir=run)
    # a run in progress (or crashed before its first checkpoint) holds its folder
    mmvi.run([*SMALL, "objective=nll_cd"], run_dir=run)
    res = read_results(run)
    (run / "results.json").write_text(json.dumps({**res, "status": "running"}))
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(ConfigError, match=r"holds a run of another configuration \(results.json\)"):
        mmvi.run([*SMALL, "objective=minvi_mp"], run_dir=run)


def test_eval_takes_partial_data_overrides_and_refuses_other_modalities(shared_data, tmp_path):
    trained = mmvi.run([*SMALL, "objective=minvi_mp"], run_dir=tmp_path / "t")
    ckpt = Path(trained["run_dir"]) / "checkpoints" / "last.ckpt"
    out = mmvi.run(
        [f"ckpt_path={ckpt}", "+data.max_examples.test=50", "evaluation.n_generation=0"],
        task="eval",
        run_dir=tmp_path / "e",
    )
    assert out["results"]["data_config"]["max_examples"]["test"] == 50
    assert out["results"]["data_config"]["_target_"].endswith("MNIST5kHalves")
    with pytest.raises(ConfigError, match="do not match the data's modalities"):
        mmvi.run(
            [
                f"ckpt_path={ckpt}",
                "+data=uci_mfeat",
                f"data.data_dir={shared_data / 'uci_mfeat'}",
                "evaluation.n_generation=0",
            ],
            task="eval",
            run_dir=tmp_path / "e2",
        )


def test_python_api_runs_and_loads_a_training_run(tmp_path):
    out = mmvi.run([*SMALL, "objective=minvi_mp"], run_dir=tmp_path / "run")
    assert out["run_dir"] == str((tmp_path / "run").resolve())
    assert out["metrics"]["classify/err_multimodal"] == out["results"]["metrics"]["classify/err_multimodal"]
    loaded = mmvi.load(out["run_dir"])
    assert loaded.model.sizes == {"left": 392, "right": 392} and loaded.model.n_hidden == 16
    assert len(loaded.datamodule.splits["test"]) == 100
    assert loaded.results["status"] == "completed"
    with pytest.raises(FileNotFoundError, match="no results.json"):
        mmvi.load(tmp_path)


def test_a_deep_run_is_identified_by_what_its_model_uses(tmp_path):
    """The DBM has no fine-tuning and the MDRNN no joint stage; no deep run uses trainer.max_epochs."""
    from omegaconf import OmegaConf

    from helpers import compose_job
    from mmvi.deep.pipeline import identity_config
    from mmvi.fingerprint import fingerprint

    def digest(overrides):
        cfg = compose_job("deep", ["experiment=wikipedia_deep", *overrides], tmp_path)
        return fingerprint(identity_config(OmegaConf.to_container(cfg, resolve=True)))["digest"]

    mdbm = digest(["model=mdbm"])
    assert digest(["model=mdbm", "stages.finetune.recurrent.epochs=7", "trainer.max_epochs=3"]) == mdbm
    assert digest(["model=mdbm", "stages.joint.epochs=7"]) != mdbm
    mdrnn = digest(["model=mdrnn"])
    assert digest(["model=mdrnn", "stages.joint.epochs=7"]) == mdrnn
    assert digest(["model=mdrnn", "stages.finetune.recurrent.epochs=7"]) != mdrnn
