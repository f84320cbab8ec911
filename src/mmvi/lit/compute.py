"""What a training run has spent: cumulative training seconds, examples seen and matmul FLOPs.

Logged at every epoch end as ``train/seconds``, ``train/examples`` and ``train/flops``
(cumulative since the run's start, carried over a resume by the checkpoint), and recorded in
``results.json`` as ``compute`` (the totals and FLOPs per example). The seconds of an epoch run
from its first batch's start to its last batch's end (the steps and the data loading between them;
not validation, checkpoints or evaluation); examples and FLOPs count every step the objective ran
(a skipped non-finite step included), summed over DDP ranks. FLOPs: :mod:`mmvi.objectives.cost`
(absent for an objective without a count).
"""

from __future__ import annotations

import time

from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives.base import Objective
from mmvi.objectives.cost import step_flops

#: the per-epoch measures (cumulative), in the order they are logged
MEASURES = {"seconds": "train/seconds", "examples": "train/examples", "flops": "train/flops"}
CHECKPOINT_KEY = "mmvi_compute"


class ComputeMeter:
    """Cumulative training cost of one LightningModule (its state travels in the checkpoint)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.examples = 0
        self.flops: float | None = 0.0
        self._mark: float | None = None  # the epoch's start, then the last step's end
        self._per_batch: dict[int, float | None] = {}

    def batch_start(self, batch_idx: int) -> None:
        if batch_idx == 0 or self._mark is None:
            self._mark = time.perf_counter()
            self._per_batch = {}  # the objective's cost may change with the epoch (k ramp, MP truncation)

    def batch_end(self, objective: Objective, model: MultimodalRBM, batch_size: int, world_size: int) -> None:
        """One step of ``batch_size`` examples per rank ran."""
        now = time.perf_counter()
        if self._mark is not None:  # added step by step, so an end-of-epoch checkpoint holds it
            self.seconds += now - self._mark
        self._mark = now
        self.examples += int(batch_size) * int(world_size)
        if batch_size not in self._per_batch:
            self._per_batch[batch_size] = step_flops(objective, model, batch_size)
        flops = self._per_batch[batch_size]
        self.flops = None if flops is None or self.flops is None else self.flops + flops * int(world_size)

    def epoch_end(self) -> dict[str, float]:
        """Close the epoch; the cumulative measures to log (``train/flops`` only when counted)."""
        self._mark = None
        values = {"seconds": self.seconds, "examples": float(self.examples), "flops": self.flops}
        return {MEASURES[k]: v for k, v in values.items() if v is not None}

    @property
    def record(self) -> dict[str, float | int | None]:
        """``results.json``'s ``compute``: totals and FLOPs per example."""
        per_example = None if self.flops is None or not self.examples else self.flops / self.examples
        return {
            "seconds": self.seconds,
            "examples": self.examples,
            "flops": self.flops,
            "flops_per_example": per_example,
        }

    def state_dict(self) -> dict:
        return {"seconds": self.seconds, "examples": self.examples, "flops": self.flops}

    def load_state_dict(self, state: dict) -> None:
        self.seconds = float(state.get("seconds", 0.0))
        self.examples = int(state.get("examples", 0))
        flops = state.get("flops", 0.0)
        self.flops = None if flops is None else float(flops)
