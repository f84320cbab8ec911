"""Runs on a SLURM cluster: the job a run belongs to, and the sweep launcher.

* :func:`slurm_job` is recorded in every ``results.json`` (key ``slurm``) of a run that SLURM
  started, so a sweep's records name their jobs and a requeued job says how often it restarted.
* ``hydra/launcher=slurm`` is Hydra's submitit launcher with the local sweeps' handling of bad
  input (:class:`hydra_plugins.mmvi_slurm.launcher.SlurmLauncher`: Hydra takes launchers only from
  its ``hydra_plugins`` package).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

# results.json key → SLURM's environment variable (sbatch(1), srun(1): OUTPUT ENVIRONMENT VARIABLES)
_INT_FIELDS = {
    "job_id": "SLURM_JOB_ID",
    "array_job_id": "SLURM_ARRAY_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID",
    "restart_count": "SLURM_RESTART_COUNT",
    "procid": "SLURM_PROCID",
    "ntasks": "SLURM_NTASKS",
    "localid": "SLURM_LOCALID",
    "nnodes": "SLURM_JOB_NUM_NODES",
}
_STR_FIELDS = {
    "job_name": "SLURM_JOB_NAME",
    "partition": "SLURM_JOB_PARTITION",
    "nodelist": "SLURM_JOB_NODELIST",
    "cluster": "SLURM_CLUSTER_NAME",
}


def slurm_job(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """This process's SLURM job, or ``None`` outside SLURM (no ``SLURM_JOB_ID``).

    Args:
        environ: the environment to read (default ``os.environ``).
    Returns:
        ``{"job_id": int, "array_job_id", "array_task_id": int | None, "restart_count": int (0 before
        any requeue), "procid", "ntasks", "localid", "nnodes": int | None, "job_name", "partition",
        "nodelist", "cluster": str | None}``; a variable SLURM did not set (e.g. the array fields of a
        plain job, the task fields in a batch script outside ``srun``) is ``None``.
    """
    env = os.environ if environ is None else environ
    if not env.get("SLURM_JOB_ID"):
        return None
    out: dict[str, Any] = {}
    for key, var in _INT_FIELDS.items():
        value = env.get(var, "")
        out[key] = int(value) if value.strip().lstrip("-").isdigit() else None
    out["restart_count"] = out["restart_count"] or 0
    for key, var in _STR_FIELDS.items():
        out[key] = env.get(var) or None
    return out


def slurm_rank(environ: Mapping[str, str] | None = None) -> int:
    """The global rank SLURM gives this task (``SLURM_PROCID``) in a job step of several tasks
    (``srun --ntasks=N``, ``N > 1``); 0 otherwise (a single task, or outside SLURM)."""
    env = os.environ if environ is None else environ
    try:
        if int(env.get("SLURM_NTASKS", "1")) > 1 and env.get("SLURM_STEP_ID") is not None:
            return int(env.get("SLURM_PROCID", "0"))
    except ValueError:
        return 0
    return 0


def gpus_per_node(accelerator: str, devices: Any) -> int | None:
    """GPUs a SLURM job asks for per node (``hydra/launcher=slurm``, resolver ``mmvi_gpus``):
    ``devices`` when the trainer runs on GPUs (``accelerator`` gpu/cuda), ``None`` (no ``--gpus``
    request, for CPU-only partitions) otherwise."""
    if str(accelerator).lower() in ("gpu", "cuda") and str(devices).isdigit():
        return int(devices)
    return None


def register_resolvers() -> None:
    """Register the config resolvers of the SLURM launcher config (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("mmvi_gpus"):
        OmegaConf.register_new_resolver("mmvi_gpus", gpus_per_node)


register_resolvers()
