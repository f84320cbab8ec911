"""In-memory multimodal data: splits of named modality tensors, served as whole batches.

A batch is ``{"modalities": {name: (B, n_m) float}, "labels": (B, C) multi-hot float,
"index": (B,) long}``. The dataset gathers a batch with one fancy-indexing call per tensor
(``__getitems__``), so no Python loop runs over examples and the tensors can live on the
accelerator (``to_device``) with no per-step host→device copy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

SPLITS = ("train", "val", "test")


class DataError(RuntimeError):
    """A data file is missing, corrupt or holds invalid values."""


@dataclass
class Split:
    """One split: modality tensors (N, n_m), multi-hot labels (N, C)."""

    modalities: dict[str, Tensor]
    labels: Tensor

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        for m, x in self.modalities.items():
            if x.dim() != 2 or x.shape[0] != n:
                raise DataError(f"modality {m!r} has shape {tuple(x.shape)}, expected ({n}, features)")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: Tensor | slice) -> Split:
        return Split({m: x[idx] for m, x in self.modalities.items()}, self.labels[idx])

    def to(self, device: torch.device | str) -> Split:
        return Split({m: x.to(device) for m, x in self.modalities.items()}, self.labels.to(device))


class SplitDataset(Dataset):
    """Map-style dataset over a :class:`Split` with batched ``__getitems__``."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def _gather(self, idx: Tensor) -> dict:
        return {
            "modalities": {m: x[idx] for m, x in self.split.modalities.items()},
            "labels": self.split.labels[idx],
            "index": idx,
        }

    def __getitem__(self, i: int) -> dict:
        return self._gather(torch.tensor([i]))

    def __getitems__(self, indices: list[int]) -> dict:
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.split.labels.device)
        return self._gather(idx)


class EpochShuffleSampler(Sampler[int]):
    """Random order that depends only on (seed, epoch): a resumed run sees the same batches.

    Lightning calls :meth:`set_epoch` before every epoch. Under torch.distributed, rank r of w
    takes positions r, r + w, r + 2w, … of the permutation (the tail of n mod w examples is
    dropped), so with a per-rank batch of B/w the union of the ranks' batches is exactly the
    single-process batch of size B (use ``use_distributed_sampler: false``).
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        _, world = self._rank_world()
        return self.n // world

    def __iter__(self):
        rank, world = self._rank_world()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)[: (self.n // world) * world]
        return iter(perm[rank::world].tolist())


def identity_collate(batch: dict) -> dict:
    """The dataset already returns a collated batch."""
    return batch


def check_values(
    name: str, x: Tensor, source: str, low: float | None = None, high: float | None = None
) -> None:
    """Raise :class:`DataError` on NaN/inf or values outside [low, high]."""
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise DataError(f"{source}: modality {name!r} holds {bad} NaN/inf values")
    if low is not None and float(x.min()) < low or high is not None and float(x.max()) > high:
        raise DataError(
            f"{source}: modality {name!r} has values in [{float(x.min()):.4g}, {float(x.max()):.4g}], "
            f"expected within [{low}, {high}]"
        )


def one_hot(labels: Tensor, n_classes: int) -> Tensor:
    return torch.nn.functional.one_hot(labels.long(), n_classes).float()


class MultimodalDataModule(pl.LightningDataModule, ABC):
    """Base class: subclasses implement :meth:`load_splits` returning train/val/test splits.

    Args:
        batch_size: training batch size (global batch in DDP is batch_size × devices).
        eval_batch_size: batch size for validation/test loaders.
        max_examples: optional cap per split, ``{"train": n, ...}`` (first n of each split).
        on_device: keep the tensors on the LightningModule's device (see ``to_device``).
    """

    single_label: bool = True
    label_names: list[str] | None = None

    def __init__(
        self,
        batch_size: int = 100,
        eval_batch_size: int = 1000,
        max_examples: dict | None = None,
        num_workers: int = 0,
        on_device: bool = True,
        modalities: dict | None = None,
    ) -> None:
        super().__init__()
        self.declared_modalities = {m: dict(spec) for m, spec in (modalities or {}).items()}
        if batch_size <= 0:
            raise ValueError(f"data.batch_size must be positive, got {batch_size}")
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.max_examples = dict(max_examples or {})
        unknown = set(self.max_examples) - set(SPLITS)
        if unknown:
            raise ValueError(f"data.max_examples has unknown splits {sorted(unknown)}; allowed: {SPLITS}")
        self.num_workers = int(num_workers)
        self.on_device = bool(on_device)
        self.shuffle_seed = 0  # set to the run's seed by the training entry point
        self.splits: dict[str, Split] = {}

    # ------------------------------------------------------------------ loading
    @abstractmethod
    def load_splits(self) -> dict[str, Split]:
        """The train/val/test splits of the data set."""

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        splits = self.load_splits()
        for name, split in splits.items():
            cap = self.max_examples.get(name)
            if cap is not None and cap < len(split):
                split = split.subset(slice(0, int(cap)))
            splits[name] = split
        self.splits = splits
        self.check_declared_modalities()

    def check_declared_modalities(self) -> None:
        """The config's ``data.modalities`` must name the data's modalities with their sizes."""
        if not self.declared_modalities:
            return
        actual = {m: int(x.shape[1]) for m, x in self.splits["train"].modalities.items()}
        declared = {m: int(spec["size"]) for m, spec in self.declared_modalities.items()}
        if declared != actual:
            raise DataError(
                f"data.modalities declares {declared} but {type(self).__name__} provides {actual}; "
                "fix the modality names/sizes in the data config"
            )

    @property
    def modality_sizes(self) -> dict[str, int]:
        self.setup()
        return {m: int(x.shape[1]) for m, x in self.splits["train"].modalities.items()}

    def modality_specs(self) -> dict[str, dict]:
        """``{name: {"size": n_m, "units": type, ...}}`` of the loaded data: a model's ``modalities``.

        Sizes come from the data; unit types (and unit options) from the data config's
        ``modalities`` (Bernoulli where it names none).
        """
        self.setup()
        out = {}
        for m, x in self.splits["train"].modalities.items():
            spec = dict(self.declared_modalities.get(m, {}))
            spec.setdefault("units", "bernoulli")
            out[m] = {**spec, "size": int(x.shape[1])}
        return out

    def modality_means(self) -> dict[str, Tensor]:
        """Training-set mean of each modality (initialises visible biases)."""
        self.setup()
        return {m: x.float().mean(0) for m, x in self.splits["train"].modalities.items()}

    def to_device(self, device: torch.device | str) -> None:
        """Move all splits to ``device`` once (no per-step copies)."""
        if self.on_device:
            self.splits = {k: s.to(device) for k, s in self.splits.items()}

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        self.setup()
        ds = SplitDataset(self.splits[split])
        sampler = EpochShuffleSampler(len(ds), self.shuffle_seed) if shuffle else None
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=identity_collate,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
