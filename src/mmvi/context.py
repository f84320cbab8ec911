"""Where this process runs: its DDP rank and the Hydra job it belongs to."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from mmvi.cluster import slurm_rank


def is_global_zero() -> bool:
    """True in the launching process (Lightning's DDP children carry LOCAL_RANK/NODE_RANK > 0; the
    tasks of ``srun --ntasks=N`` their SLURM rank, :func:`mmvi.cluster.slurm_rank`)."""
    zero = int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0
    return zero and slurm_rank() == 0


def in_multirun() -> bool:
    """True in a job of a Hydra multirun."""
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def in_local_sweep() -> bool:
    """True in a job of a multirun run on this machine by Hydra's basic launcher (in this process)
    or its joblib launcher (in a worker process whose output is the sweep's)."""
    launcher = str(HydraConfig.get().launcher.get("_target_", "")) if in_multirun() else ""
    return launcher.endswith((".BasicLauncher", ".JoblibLauncher"))


@contextlib.contextmanager
def job_command_line(output_dir: str) -> Iterator[None]:
    """Within a job of a multirun, the command line Lightning gives its DDP child processes is
    this job's own (its overrides, run in its folder), not the whole sweep's: a child started
    with ``-m`` would run a sweep of its own and replace the sweep's ``multirun.yaml``. After the
    job, the environment and process group are as before it, so the next job starts its own."""
    if not in_multirun() or "LOCAL_RANK" in os.environ:  # not in a sweep, or a DDP child
        yield
        return
    hc = HydraConfig.get()
    argv, run_dir, environ = list(sys.argv), hc.run.dir, dict(os.environ)
    OmegaConf.set_readonly(hc, False)
    try:
        sys.argv = [argv[0], *hc.overrides.task]
        hc.run.dir = str(output_dir)  # the folder Lightning names for the child (hydra.run.dir)
        yield
    finally:
        sys.argv = argv
        hc.run.dir = run_dir
        OmegaConf.set_readonly(hc, True)
        # the next job of the sweep starts its own DDP processes: Lightning's rank variables and
        # process group of this one go
        os.environ.clear()
        os.environ.update(environ)
        _end_process_group()


def _end_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def new_folder() -> str:
    """The override that names a new folder: ``hydra.sweep.dir=<new folder>`` for a job of a
    multirun, else ``hydra.run.dir=<new folder>``."""
    return f"{'hydra.sweep.dir' if in_multirun() else 'hydra.run.dir'}=<new folder>"


def start_over_hint() -> str:
    """The ways forward from a folder that holds another configuration's run."""
    return f"use a new folder ({new_folder()}) or ckpt_path=none to start over in this one"


def choice(group: str, *, _root_) -> str:
    """``${mmvi_choice:<group>}``: the option chosen for a config group, e.g. ``data`` → ``mnist5k``.

    Unlike ``${hydra:runtime.choices.<group>}`` it also resolves where Hydra has not set its
    config yet, as when a multirun's launcher names the sweep folder: the choices are then read
    from the composed config itself.
    """
    choices = OmegaConf.select(_root_, "hydra.runtime.choices", default=None)
    if choices is None and HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
    if choices is None or choices.get(group) is None:
        return "none"
    return str(choices.get(group))


if not OmegaConf.has_resolver("mmvi_choice"):
    OmegaConf.register_new_resolver("mmvi_choice", choice)
