"""Training objectives: NLL (CD/PCD), MinVI (conditional CD, CD-PercLoss, multi-prediction), mixtures."""

from mmvi.objectives.base import Objective, sparsity_penalty
from mmvi.objectives.minvi import CDPercLoss, ConditionalCD, MultiPrediction
from mmvi.objectives.mixture import Mixture
from mmvi.objectives.nll import ContrastiveDivergence

__all__ = [
    "Objective",
    "sparsity_penalty",
    "ContrastiveDivergence",
    "ConditionalCD",
    "CDPercLoss",
    "MultiPrediction",
    "Mixture",
]
