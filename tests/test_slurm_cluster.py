"""mmvi on a running SLURM cluster: sweeps, DDP across SLURM tasks, preemption and requeueing.

The session starts a one-node cluster on this machine with ``scripts/slurm_cluster.sh up`` (root;
it installs slurm-wlm and munge with apt-get when missing) and stops it at the end unless it was
already running. A daemon that cannot start fails the tests with its own log line. Run with
``make test-cluster`` (``pytest -m cluster``); ``make test`` leaves them out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmvi.cluster import slurm_job

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_cluster.sh"
SLURM_DIR = Path(os.environ.get("MMVI_SLURM_DIR", "/tmp/mmvi-slurm"))
PY = sys.executable
pytestmark = pytest.mark.cluster

#: every job's run: a slice of real MNIST, CSV logger only, a small evaluation
TINY = [
    "data=mnist",
    "model.n_hidden=16",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "evaluation.mf_steps=10",
    "evaluation.n_generation=0",
    "logger=csv",
    "~callbacks.rich_progress_bar",  # last: the Optuna search's config has none
]
METRICS = ["classify/err_multimodal", "cond_ce/right_given_left", "cond_ce/left_given_right"]
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")


def _cluster(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def cluster() -> dict[str, str]:
    """The environment of a client of the running cluster (``SLURM_CONF``, this checkout first on
    ``PYTHONPATH``, one thread)."""
    was_up = _cluster("status").returncode == 0
    started = _cluster("up")
    if started.returncode != 0:
        lines = (started.stderr or started.stdout).strip().splitlines()
        pytest.fail(lines[-1] if lines else f"slurm_cluster.sh up: exit status {started.returncode}")
    env = {
        **os.environ,
        "SLURM_CONF": str(SLURM_DIR / "slurm.conf"),
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        "OMP_NUM_THREADS": "1",
        "WANDB_SILENT": "true",
        "HYDRA_FULL_ERROR": "0",
    }
    yield env
    if not was_up:
        _cluster("down")


def _data(shared_data: Path, train: int) -> list[str]:
    return [f"data.data_dir={shared_data / 'mnist'}", f"data.max_examples={{train:{train},val:100,test:200}}"]


def _scontrol(env: dict, *args: str) -> str:
    return subprocess.run(["scontrol", *args], env=env, capture_output=True, text=True, check=True).stdout


def job_field(env: dict, job: int, field: str) -> str | None:
    """A field of ``scontrol show job`` (e.g. JobState, Restarts); None once the job is forgotten."""
    out = subprocess.run(["scontrol", "-o", "show", "job", str(job)], env=env, capture_output=True, text=True)
    for item in out.stdout.split():
        key, _, value = item.partition("=")
        if key == field:
            return value
    return None


def sbatch(env: dict, cwd: Path, name: str, command: str, *options: str) -> int:
    """Submit ``srun <command>`` as a batch job; its id."""
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-J",
            name,
            "-o",
            f"{cwd}/{name}-%j.out",
            *options,
            "--wrap",
            f"srun {command}",
        ],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip().split(";")[0])


def wait_until(predicate, timeout: float, what: str, poll: float = 0.2):  # noqa: ANN001, ANN201
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_job(env: dict, job: int, timeout: float = 300) -> str:
    """Wait until the job has ended; its final state (COMPLETED, FAILED, CANCELLED, ...)."""
    return wait_until(
        lambda: (s := job_field(env, job, "JobState")) not in ACTIVE and (s or "GONE"), timeout, f"job {job}"
    )


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def max_param_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between the model parameters of two checkpoints."""
    sa = torch.load(a, map_location="cpu", weights_only=False)["state_dict"]
    sb = torch.load(b, map_location="cpu", weights_only=False)["state_dict"]
    keys = [k for k in sa if k.startswith("model.")]
    assert keys and set(keys) <= set(sb)
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in keys)


def train_command(overrides: list[str]) -> str:
    return " ".join([PY, "-m", "mmvi.train", *(f"'{x}'" for x in overrides)])


def start_uninterrupted(env: dict, cwd: Path, overrides: list[str]) -> subprocess.Popen:
    """The same training outside SLURM (no job variables), in the background: the reference run."""
    return subprocess.Popen(
        [PY, "-m", "mmvi.train", *overrides],
        env={k: v for k, v in env.items() if not k.startswith("SLURM_JOB")},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_ends_as_uninterrupted(ref: Path, run: Path, what: str) -> None:
    """The interrupted ``run`` ends with the parameters (to 1e-6) and metrics of ``ref``; prints both."""
    a, b = results(ref), results(run)
    diff = max_param_difference(ref / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
    print(f"\n{what}: max |parameter difference| {diff:.3g}")
    for key in METRICS:
        print(f"  {key}: uninterrupted {a['metrics'][key]:.6f}, interrupted {b['metrics'][key]:.6f}")
    assert diff < 1e-6
    for key in METRICS:
        assert b["metrics"][key] == pytest.approx(a["metrics"][key], rel=1e-6, abs=1e-9), key


# ----------------------------------------------------------------------------- the job record
def test_slurm_job_reads_the_environment():
    assert slurm_job({"PATH": "/bin"}) is None
    job = slurm_job(
        {
            "SLURM_JOB_ID": "42",
            "SLURM_ARRAY_JOB_ID": "41",
            "SLURM_ARRAY_TASK_ID": "1",
            "SLURM_RESTART_COUNT": "2",
            "SLURM_PROCID": "1",
            "SLURM_NTASKS": "2",
            "SLURM_JOB_NODELIST": "node[1-2]",
        }
    )
    assert (job["job_id"], job["array_job_id"], job["array_task_id"], job["restart_count"]) == (42, 41, 1, 2)
    assert (job["procid"], job["ntasks"], job["nodelist"], job["localid"]) == (1, 2, "node[1-2]", None)
    assert slurm_job({"SLURM_JOB_ID": "7"})["restart_count"] == 0  # never requeued


def test_cluster_up_is_idempotent_and_names_a_daemon_that_cannot_start(cluster, tmp_path):
    again = _cluster("up")
    assert again.returncode == 0 and "idle" in again.stdout, again.stderr
    # a second cluster on the same ports: its controller cannot bind, and says so in one line
    env = {**os.environ, "MMVI_SLURM_DIR": str(tmp_path / "second")}
    clash = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=120)
    subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=120)
    assert clash.returncode == 1
    lines = clash.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slurm_cluster: slurmctld did not start:"), clash.stderr
    assert "Address already in use" in lines[0]


# ----------------------------------------------------------------------------- sweeps
def test_sweep_runs_each_point_as_a_slurm_job_and_the_report_reads_it(cluster, shared_data, tmp_path):
    sweep = tmp_path / "sweep"
    bad = tmp_path / "bad"
    common = [*TINY, *_data(shared_data, 200), f"paths.log_dir={tmp_path / 'logs'}"]
    args = ["-m", "hydra/launcher=slurm"]
    one_bad = [x if x != "model.n_hidden=16" else "model.n_hidden=-4,16" for x in common]
    # the refused point's sweep runs beside the main one: the cluster runs two jobs at a time
    refused = subprocess.Popen(
        [PY, "-m", "mmvi.train", *args, "objective=nll_cd", *one_bad, f"hydra.sweep.dir={bad}"],
        env=cluster,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    main = subprocess.run(
        [PY, "-m", "mmvi.train", *args, "objective=nll_cd,minvi_mp", "seed=0,1", *common]
        + [f"hydra.sweep.dir={sweep}"],
        env=cluster,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert main.returncode == 0, main.stderr[-3000:]
    records = [results(sweep / str(i)) for i in range(4)]
    assert all(r["status"] == "completed" for r in records), [r.get("reason") for r in records]
    jobs = [r["slurm"]["job_id"] for r in records]
    print(f"\nsweep {sweep}: SLURM jobs {jobs}, array {records[0]['slurm']['array_job_id']}")
    assert len(set(jobs)) == 4 and {r["slurm"]["array_task_id"] for r in records} == {0, 1, 2, 3}
    # the record is written before the job step ends: each job then ends COMPLETED (or is forgotten)
    assert all(wait_job(cluster, j, 120) in ("COMPLETED", "GONE") for j in jobs)
    assert sorted((r["choices"]["objective"], r["config"]["seed"]) for r in records) == [
        ("minvi_mp", 0),
        ("minvi_mp", 1),
        ("nll_cd", 0),
        ("nll_cd", 1),
    ]
    out, err = refused.communicate(timeout=600)
    assert refused.returncode == 2, err[-3000:]
    failed, done = results(bad / "0"), results(bad / "1")
    assert failed["status"] == "failed" and "model.n_hidden=-4" in failed["reason"], failed
    assert failed["slurm"]["job_id"] > 0 and done["status"] == "completed"
    assert f"error: {bad / '0'}: model.n_hidden=-4 is out of range" in err
    assert "Traceback" not in err
    report = subprocess.run(
        [PY, "-m", "mmvi.compare", str(sweep)], env=cluster, capture_output=True, text=True, timeout=300
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert (sweep / "report" / "index.html").is_file()
    print(f"report: {sweep / 'report' / 'index.html'}")


# ----------------------------------------------------------------------------- DDP across tasks
DDP = [
    "objective=minvi_mp",
    "objective.mask_rate=0.0",  # no random mask: the gradient is a deterministic function of the batch
    "objective.sparsity_weight=0.0",  # a penalty on the batch mean is not additive over ranks
    "trainer.max_epochs=2",
    "model.n_hidden=32",
    "evaluation.classifier.max_extensions=0",
]
TWO_TASKS = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def test_two_slurm_tasks_match_one_process_with_the_doubled_batch(cluster, shared_data, tmp_path):
    one, two, pcd = tmp_path / "one", tmp_path / "two", tmp_path / "pcd"
    base = [*TINY, *_data(shared_data, 800), *DDP]
    job = sbatch(
        cluster,
        tmp_path,
        "mmvi-ddp",
        train_command([*base, *TWO_TASKS, "data.batch_size=20", f"hydra.run.dir={two}"]),
        "--nodes=1",
        "--ntasks-per-node=2",
    )
    # the single-process run, meanwhile, outside SLURM
    single = subprocess.run(
        [PY, "-m", "mmvi.train", *base, "data.batch_size=40", f"hydra.run.dir={one}"],
        env={k: v for k, v in cluster.items() if not k.startswith("SLURM_JOB")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert wait_job(cluster, job) == "COMPLETED", (tmp_path / f"mmvi-ddp-{job}.out").read_text()[-3000:]
    a, b = results(one), results(two)
    assert b["slurm"]["job_id"] == job and b["slurm"]["ntasks"] == 2 and b["slurm"]["procid"] == 0
    assert a.get("slurm") is None
    diff = max_param_difference(one / "checkpoints" / "last.ckpt", two / "checkpoints" / "last.ckpt")
    print(f"\nSLURM job {job}, 2 tasks vs 1 process: max |parameter difference| = {diff:.3g}")
    for key in METRICS:
        print(f"  {key}: 1 process {a['metrics'][key]:.6f}, 2 tasks {b['metrics'][key]:.6f}")
    assert diff < 1e-5  # the same batches and gradients; float32 reductions in another order
    for key in METRICS:
        tol = 2.0 if key.startswith("classify/err") else 1e-3 * abs(a["metrics"][key])
        assert abs(a["metrics"][key] - b["metrics"][key]) <= tol, key
    assert len(list(two.glob("**/results.json"))) == 1  # rank 1 wrote no record of its own

    # persistent chains: each task keeps and saves its own
    job = sbatch(
        cluster,
        tmp_path,
        "mmvi-pcd",
        train_command(
            [*TINY, *_data(shared_data, 200), "objective=nll_pcd", *TWO_TASKS, "data.batch_size=20"]
            + [f"hydra.run.dir={pcd}"]
        ),
        "--nodes=1",
        "--ntasks-per-node=2",
    )
    assert wait_job(cluster, job) == "COMPLETED", (tmp_path / f"mmvi-pcd-{job}.out").read_text()[-3000:]
    ckpt = torch.load(pcd / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    chains = ckpt["per_rank_buffers"]
    assert chains, "no per-rank buffers in the checkpoint"
    assert all(stacked.shape[0] == 2 for stacked in chains.values()), {k: v.shape for k, v in chains.items()}
    states = {k: v for k, v in chains.items() if v.is_floating_point()}  # the chains' states, not flags
    assert states, list(chains)
    for name, stacked in states.items():  # each rank ran its own chains from its own seed
        assert not torch.equal(stacked[0], stacked[1]), f"{name}: both ranks hold the same chains"


# ----------------------------------------------------------------------------- preemption
PREEMPT = [
    "objective=nll_pcd",
    "model.n_hidden=64",
    "data.batch_size=10",
    "trainer.max_epochs=5",
    "callbacks.model_checkpoint.save_top_k=-1",  # one file per finished epoch: the test sees them
]


def _epochs_done(run: Path, since: float = 0.0) -> int:
    """Epoch checkpoints in ``run`` written after ``since`` (a time.time())."""
    return sum(1 for f in (run / "checkpoints").glob("epoch_*.ckpt") if f.stat().st_mtime > since)


def _release(env: dict, job: int) -> float:
    """A requeued job waits for its begin time (SLURM delays requeued jobs): start it now; wait
    until it runs again; the time it did."""
    wait_until(lambda: job_field(env, job, "JobState") == "PENDING", 60, f"job {job} requeued")
    _scontrol(env, "update", f"JobId={job}", "StartTime=now")
    wait_until(lambda: job_field(env, job, "JobState") == "RUNNING", 60, f"job {job} running again")
    return time.time()


def test_preempted_requeued_and_killed_job_ends_with_the_uninterrupted_metrics(
    cluster, shared_data, tmp_path
):
    ref, run = tmp_path / "ref", tmp_path / "run"
    overrides = [*TINY, *_data(shared_data, 1000), *PREEMPT]
    command = train_command([*overrides, f"hydra.run.dir={run}"])
    # 1. killed hard after its first epoch: the job is gone, its folder keeps the checkpoint
    first = sbatch(cluster, tmp_path, "mmvi-preempt", command, "--requeue")
    uninterrupted = start_uninterrupted(cluster, tmp_path, [*overrides, f"hydra.run.dir={ref}"])
    wait_until(lambda: _epochs_done(run) >= 1, 300, "the first epoch's checkpoint")
    subprocess.run(["scancel", "--signal=KILL", str(first)], env=cluster, check=True)
    assert wait_job(cluster, first) in ("CANCELLED", "FAILED", "GONE")
    assert results(run)["status"] in ("running", "failed")  # killed: never read as complete
    # 2. resubmitted: it resumes; SLURM's pre-timeout signal (USR1) mid-epoch: Lightning's
    #    SLURMEnvironment checkpoints and requeues the job
    job = sbatch(cluster, tmp_path, "mmvi-preempt", command, "--requeue")
    t0 = time.time()
    wait_until(lambda: _epochs_done(run, t0) >= 1, 300, "an epoch of the resubmitted job")
    subprocess.run(["scancel", "--signal=USR1", str(job)], env=cluster, check=True)
    t1 = _release(cluster, job)
    assert (run / "checkpoints" / "mid_epoch.ckpt").is_file(), (
        "no checkpoint written on the pre-timeout signal"
    )
    assert not list(run.glob("hpc_ckpt_*.ckpt")), "a pre-timeout checkpoint where Lightning resumes from it"
    # 3. `scontrol requeue` mid-epoch (a preemption): requeued again, resumes again
    wait_until(lambda: _epochs_done(run, t1) >= 1, 300, "an epoch after the first requeue")
    _scontrol(cluster, "requeue", str(job))
    _release(cluster, job)
    assert wait_job(cluster, job) == "COMPLETED", (tmp_path / f"mmvi-preempt-{job}.out").read_text()[-3000:]
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.stderr.read()[-3000:]
    b = results(run)
    assert b["status"] == "completed" and b["slurm"]["job_id"] == job
    assert b["slurm"]["restart_count"] == 2, b["slurm"]  # SLURM_RESTART_COUNT: two requeues
    assert_ends_as_uninterrupted(ref, run, f"killed job {first}, resubmitted as {job}, requeued twice")


def _training_catches_usr1(run: Path) -> bool:
    """True once the training process of ``run`` (not srun) has Lightning's SIGUSR1 handler: fit began."""
    found = subprocess.run(["pgrep", "-f", f"hydra.run.dir={run}"], capture_output=True, text=True).stdout
    for pid in found.split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:  # ended meanwhile
            continue
        if b"mmvi.train" not in argv[:3]:
            continue
        caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
        if int(caught, 16) & (1 << (signal.SIGUSR1 - 1)):
            return True
    return False


def test_pre_timeout_signal_in_the_first_epoch_restarts_it_and_ends_as_uninterrupted(
    cluster, shared_data, tmp_path
):
    """No epoch has ended when SLURM's pre-timeout signal comes: Lightning's mid-epoch state goes to
    checkpoints/mid_epoch.ckpt (not where Lightning resumes from), the requeued job starts again from
    the beginning and ends with the parameters and metrics of an uninterrupted run."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    n_train, batch = 2000, 2
    overrides = [
        *TINY,
        *_data(shared_data, n_train),
        "objective=nll_pcd",
        "model.n_hidden=64",
        f"data.batch_size={batch}",
        "trainer.max_epochs=2",
    ]
    job = sbatch(
        cluster, tmp_path, "mmvi-first", train_command([*overrides, f"hydra.run.dir={run}"]), "--requeue"
    )
    wait_until(lambda: _training_catches_usr1(run), 300, "the job's training to begin", poll=0.05)
    time.sleep(1.0)  # some steps into the first epoch (of n_train / batch)
    subprocess.run(["scancel", "--signal=USR1", str(job)], env=cluster, check=True)
    uninterrupted = start_uninterrupted(cluster, tmp_path, [*overrides, f"hydra.run.dir={ref}"])
    _release(cluster, job)
    assert wait_job(cluster, job) == "COMPLETED", (tmp_path / f"mmvi-first-{job}.out").read_text()[-3000:]
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.stderr.read()[-3000:]
    mid = torch.load(run / "checkpoints" / "mid_epoch.ckpt", map_location="cpu", weights_only=False)
    assert mid["epoch"] == 0 and 0 < mid["global_step"] < n_train // batch, (mid["epoch"], mid["global_step"])
    assert not list(run.glob("hpc_ckpt_*.ckpt"))
    b = results(run)
    assert b["status"] == "completed" and b["slurm"]["restart_count"] == 1, b.get("slurm")
    assert_ends_as_uninterrupted(ref, run, f"job {job}: signalled at step {mid['global_step']} of epoch 0")


# ----------------------------------------------------------------------------- deep pipeline, Optuna
DEEP = [
    "experiment=wikipedia_deep",
    "data.max_examples={train:300,val:100,test:100}",
    "model.n_joint=12",
    "model.pathways.image.layers=[{size:12,hidden:stepped_sigmoid},{size:8}]",
    "model.pathways.text.layers=[{size:8}]",
    "stages.pathway.epochs=1",
    "stages.top.epochs=1",
    "stages.finetune.recurrent.epochs=2",
    "evaluation.mf_steps=5",
    "evaluation.classifier.Cs=[1.0]",
    "logger=csv",
]


def test_deep_pipeline_sweep_and_optuna_search_on_slurm(cluster, shared_data, tmp_path):
    deep, search = tmp_path / "deep", tmp_path / "optuna"
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    pipeline = subprocess.Popen(
        [PY, "-m", "mmvi.deep.pipeline", "-m", "hydra/launcher=slurm", "objective=minvi_mp", *DEEP]
        + [f"data.data_dir={shared_data / 'wikipedia_xmodal'}", logs, f"hydra.sweep.dir={deep}"],
        env=cluster,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    optuna = subprocess.run(
        [PY, "-m", "mmvi.train", "hparams_search=mnist_optuna", "hydra/launcher=slurm"]
        + ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.n_startup_trials=2"]
        + [*TINY[:-1], *_data(shared_data, 200), logs, f"hydra.sweep.dir={search}"],
        env=cluster,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert optuna.returncode == 0, optuna.stderr[-3000:]
    trials = [results(search / str(i)) for i in range(2)]
    assert all(t["status"] == "completed" and t["slurm"]["job_id"] > 0 for t in trials)
    best = (search / "optimization_results.yaml").read_text()
    assert f"best_value: {min(t['metrics']['classify/err_left'] for t in trials)}" in best
    _, err = pipeline.communicate(timeout=600)
    assert pipeline.returncode == 0, err[-3000:]
    runs = [results(deep / "0")]
    assert all(r["status"] == "completed" and r["slurm"]["job_id"] > 0 for r in runs)
    assert {r["config"]["task_name"] for r in runs} == {"deep"}
    report = subprocess.run(
        [PY, "-m", "mmvi.compare", str(deep)], env=cluster, capture_output=True, text=True, timeout=300
    )
    assert report.returncode == 0, report.stderr[-3000:]
    print(
        f"\ndeep sweep jobs {[r['slurm']['job_id'] for r in runs]}, optuna trials {[t['slurm']['job_id'] for t in trials]}"
    )
