"""Per-epoch inference-gap curves (``evaluation.inference_gap.per_epoch``): a Lightning callback."""

from __future__ import annotations

from collections.abc import Mapping

import lightning.pytorch as pl

from mmvi.evaluation.inference_gap import per_epoch_gap


class InferenceGapMonitor(pl.Callback):
    """Logs :func:`mmvi.evaluation.inference_gap.per_epoch_gap` after each validation epoch
    (not in the sanity check); the model's native steps are the module's ``val_mf_steps``."""

    def __init__(self, evaluation: Mapping) -> None:
        self.settings = dict(evaluation.get("inference_gap") or {})
        self.mf_steps = int(evaluation.get("mf_steps", 100))
        self.mf_tol = evaluation.get("mf_tol", 1e-5)
        self.likelihood = dict(evaluation.get("likelihood") or {})

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        val = trainer.datamodule.splits["val"].modalities
        values = per_epoch_gap(
            pl_module.model,
            val,
            pl_module.val_mf_steps,
            self.mf_steps,
            self.mf_tol,
            self.likelihood,
            **self.settings,
        )
        for name, value in values.items():
            pl_module.log(name, value, on_epoch=True)


def gap_callbacks(evaluation: Mapping | None) -> list[pl.Callback]:
    """``[InferenceGapMonitor]`` when ``evaluation.inference_gap.per_epoch``, else []."""
    if evaluation is None or not (evaluation.get("inference_gap") or {}).get("per_epoch", False):
        return []
    return [InferenceGapMonitor(evaluation)]
