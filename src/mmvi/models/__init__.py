"""Models: visible unit types and the multimodal RBM."""

from mmvi.models.mrbm import MultimodalRBM
from mmvi.models.units import BernoulliUnits, GaussianUnits, SoftmaxUnits, Units, make_units

__all__ = ["MultimodalRBM", "Units", "BernoulliUnits", "GaussianUnits", "SoftmaxUnits", "make_units"]
