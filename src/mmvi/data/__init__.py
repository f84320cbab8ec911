"""LightningDataModules of multimodal data; one batch = {"modalities", "labels", "index"}."""

from mmvi.data.base import DataError, MultimodalDataModule, Split

__all__ = ["DataError", "MultimodalDataModule", "Split"]
