"""LightningDataModules of multimodal data; one batch = {"modalities", "labels", "index"}."""

from mmvi.data.base import MultimodalDataModule, Split
from mmvi.errors import DataError

__all__ = ["DataError", "MultimodalDataModule", "Split"]
