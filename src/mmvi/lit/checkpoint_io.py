"""Checkpoints written atomically in their own folder: a failed write leaves no unloadable file.

Lightning's default writer stages a checkpoint in the system's temporary folder and moves it
into place, which is a copy, not an atomic rename, when the two are on different file systems:
a full disk then leaves a truncated ``.ckpt`` that the next resume cannot load. This writer
serialises the checkpoint in memory, writes it to a temporary file beside its target and renames
it onto the target (:func:`mmvi.utils.atomic_path`); any error removes the temporary file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mmvi.utils import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`~lightning.pytorch.plugins.io.TorchCheckpointIO` with an atomic, same-folder save."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # in memory: a full disk shows up as an OSError of the write below
        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
