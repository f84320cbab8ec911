"""``evaluation.checkpoint=last | best``: which weights of a training run ``mmvi.train`` evaluates.

``best`` keeps ``checkpoints/best.ckpt``, the end-of-epoch state with the lowest
``evaluation.checkpoint_monitor`` (default ``val/cond_ce/sum``; Lightning's ``ModelCheckpoint``
with ``monitor``, ``mode="min"``), and loads it into the module before the evaluation; ``last``
evaluates the weights as training left them. ``results.json`` records the choice under
``evaluated_checkpoint``: ``{"which", "epoch", "monitor", "value", "path"}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mmvi.run_folder import BEST_CHECKPOINT

log = logging.getLogger(__name__)


def _choice(evaluation: Mapping) -> tuple[str, str]:
    """(which, monitor); their values are checked before training (the evaluation's constraints)."""
    return str(evaluation.get("checkpoint", "last")), str(
        evaluation.get("checkpoint_monitor", "val/cond_ce/sum")
    )


def checkpoint_callbacks(evaluation: Mapping, dirpath: str | Path) -> list[ModelCheckpoint]:
    """The callback that keeps ``<dirpath>/best.ckpt`` when ``evaluation.checkpoint=best``, else none."""
    which, monitor = _choice(evaluation)
    if which != "best":
        return []
    return [
        ModelCheckpoint(
            dirpath=str(dirpath),
            filename=Path(BEST_CHECKPOINT).stem,
            monitor=monitor,
            mode="min",
            save_top_k=1,
            save_last=False,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
    ]


def use_chosen_checkpoint(evaluation: Mapping, trainer, lit) -> dict:
    """Load the chosen weights into ``lit`` (after fit); return ``{"evaluated_checkpoint": {...}}``.

    ``last``: nothing is loaded (epoch = the last trained epoch). ``best``: the best checkpoint's
    state (model and objective) is loaded; its epoch and monitored value are recorded.

    Raises:
        FileNotFoundError: ``best`` but no best checkpoint was written (the monitor never logged).
    """
    which, monitor = _choice(evaluation)
    if which == "last":
        return {"evaluated_checkpoint": {"which": "last", "epoch": int(trainer.current_epoch) - 1}}
    cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor == monitor), None)
    path = getattr(cb, "best_model_path", "") if cb is not None else ""
    if not path or not Path(path).is_file():
        raise FileNotFoundError(
            f"evaluation.checkpoint=best: no best checkpoint by {monitor} was written "
            "(is the measure logged every epoch?)"
        )
    from mmvi.lit.module import select_rank_state

    ckpt = torch.load(path, map_location=lit.device, weights_only=False)
    select_rank_state(ckpt, 0)
    lit.load_state_dict(ckpt["state_dict"])
    score = cb.best_model_score
    log.info("evaluating the best checkpoint by %s: epoch %d (%s)", monitor, ckpt["epoch"], path)
    return {
        "evaluated_checkpoint": {
            "which": "best",
            "epoch": int(ckpt["epoch"]),
            "monitor": monitor,
            "value": None if score is None else float(score),
            "path": str(Path(path).relative_to(Path(path).parent.parent)),
        }
    }
