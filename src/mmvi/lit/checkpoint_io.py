"""Checkpoints written atomically in their own folder; a pre-timeout checkpoint is never resumed from.

Lightning's default writer stages a checkpoint in the system's temporary folder and moves it
into place, which is a copy, not an atomic rename, when the two are on different file systems:
a full disk then leaves a truncated ``.ckpt`` that the next resume cannot load. This writer
serialises the checkpoint in memory, writes it to a temporary file beside its target and renames
it onto the target (:func:`mmvi.utils.atomic_path`); any error removes the temporary file.

On SLURM's pre-timeout signal Lightning saves ``<run>/hpc_ckpt_<n>.ckpt`` mid-epoch, requeues the
job, and on the restart resumes from it whenever no ``ckpt_path`` is given: in a run's first
epoch (no ``last.ckpt`` yet) and with ``ckpt_path=none``. A mid-epoch resume replays the epoch's
batches from its start with the weights of its middle (a non-resumable loader), so the run would
not end as an uninterrupted one. This writer saves that state as ``checkpoints/mid_epoch.ckpt``
(:data:`mmvi.run_folder.MID_EPOCH_CHECKPOINT`, kept for inspection, replaced at each signal), where
Lightning does not look: the requeued job resumes from its last completed epoch, or starts again
from the beginning, and ends with the uninterrupted run's parameters and metrics.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mmvi.run_folder import CHECKPOINT_DIR, MID_EPOCH_CHECKPOINT
from mmvi.utils import atomic_path

log = logging.getLogger(__name__)

#: the file name Lightning gives a pre-timeout checkpoint (``_CheckpointConnector.hpc_save_path``)
HPC_NAME = re.compile(r"hpc_ckpt_\d+\.ckpt")


def checkpoint_target(path: str | Path) -> Path:
    """Where a checkpoint Lightning saves to ``path`` is written: ``path`` itself, except a
    pre-timeout checkpoint ``<run>/hpc_ckpt_<n>.ckpt`` → ``<run>/checkpoints/mid_epoch.ckpt``."""
    path = Path(path)
    if HPC_NAME.fullmatch(path.name):
        return path.parent / CHECKPOINT_DIR / MID_EPOCH_CHECKPOINT
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`~lightning.pytorch.plugins.io.TorchCheckpointIO` with an atomic, same-folder save."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        target = checkpoint_target(path)
        if target != Path(path):
            log.warning(
                "pre-timeout signal at epoch %s, step %s: state saved to %s; the requeued job resumes "
                "from the last completed epoch (a mid-epoch resume would not repeat the uninterrupted run)",
                checkpoint.get("epoch"),
                checkpoint.get("global_step"),
                target,
            )
            target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # in memory: a full disk shows up as an OSError of the write below
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
