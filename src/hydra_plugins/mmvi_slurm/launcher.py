"""``hydra/launcher=slurm``: Hydra's submitit SLURM launcher with mmvi's handling of refused jobs.

Hydra instantiates launchers only from its ``hydra_plugins`` package, hence this module.

submitit follows its jobs with ``sacct``; on a cluster without accounting storage (the local one
of ``scripts/slurm_cluster.sh``) :class:`SqueueWatcher` reads the same states from ``squeue``
(finished jobs stay listed for ``MinJobAge`` seconds), so a job that ends without a result (e.g.
cancelled) ends the wait instead of leaving the sweep waiting for ever.
"""

from __future__ import annotations

import subprocess
import sys

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SubmititSlurmLauncher

from mmvi.cluster import register_resolvers

register_resolvers()  # conf/hydra/launcher/slurm.yaml's ${mmvi_gpus:...}, in any process Hydra starts


def _sacct_works() -> bool:
    try:
        return subprocess.run(["sacct", "-n", "-j", "1"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _squeue_watcher():  # noqa: ANN202 - a submitit watcher
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueWatcher(SlurmInfoWatcher):
        """submitit's job watcher reading ``squeue --states=all`` where ``sacct`` has no accounting
        storage; a registered job that squeue no longer lists has ended (state ``GONE``)."""

        def _make_command(self) -> list[str] | None:
            to_check = {x.split("_")[0] for x in self._registered - self._finished}
            if not to_check:
                return None
            return ["squeue", "--states=all", "-h", "-o", "%i|%T|%N", "-j", ",".join(sorted(to_check))]

        def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
            text = string.decode() if isinstance(string, bytes) else string
            info = super().read_info("JobID|State|NodeList\n" + text)
            for job in self._registered - self._finished:
                info.setdefault(job, {"JobID": job, "State": "GONE", "NodeList": ""})
            return info

    return SqueueWatcher(delay_s=600)


class SlurmLauncher(_SubmititSlurmLauncher):
    """One SLURM job per sweep point (submitit); the sweep waits for them all.

    A job that a user error ended (``mmvi.errors.USER_ERRORS``; its folder holds a ``failed`` record
    with the reason) is listed in ``mmvi.cli.REFUSED_JOBS`` with one ``error:`` line, and its return
    becomes ``None`` (NaN in a hyper-parameter search: a failed trial) so the sweep goes on;
    :class:`mmvi.hydra_callbacks.SweepRecords` then ends the sweep with status 2. Any other failure
    is raised as Hydra does.
    """

    def launch(self, job_overrides, initial_job_idx):  # noqa: ANN001, ANN201 - Hydra's signature
        from hydra.core.utils import JobStatus
        from submitit.slurm.slurm import SlurmJob

        from mmvi.cli import REFUSED_JOBS
        from mmvi.errors import USER_ERRORS

        if not _sacct_works() and type(SlurmJob.watcher).__name__ != "SqueueWatcher":
            SlurmJob.watcher = _squeue_watcher()
        returns = super().launch(job_overrides, initial_job_idx)
        for ret in returns:
            exc = ret._return_value
            if ret.status != JobStatus.FAILED or not isinstance(exc, USER_ERRORS):
                continue
            folder = str(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg is not None else "?"
            REFUSED_JOBS.append((folder, str(exc)))
            print(f"error: {folder}: {exc}", file=sys.stderr, flush=True)
            ret.status = JobStatus.COMPLETED
            ret._return_value = None  # a failed trial of a search (Optuna refuses a NaN), like a local one
        return returns
