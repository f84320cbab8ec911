"""Samples from a fixed finite joint table P_D(x, y): the Theorem 2.1 experiment's data.

The table (:func:`mmvi.theory.make_data_table`) has 2^n_x × 2^n_y states of two Bernoulli
modalities ``x`` and ``y``; train holds ``n_samples`` i.i.d. draws, validation and test their own
draws (fixed whatever n is); labels are the one-hot x state. Epochs have a fixed size
``epoch_size`` whatever n is, so per-epoch schedules mean the same number of updates for every n
(docs/data.md §8).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from mmvi.data.base import MultimodalDataModule, Split, SplitDataset, identity_collate, one_hot
from mmvi.errors import DataError
from mmvi.theory.measures import make_data_table, sample_from_table
from mmvi.theory.rbm_tables import state_index


class CyclingEpochSampler(Sampler[int]):
    """``epoch_size`` indices per epoch: concatenated random permutations of range(n).

    Depends only on (seed, epoch), like :class:`mmvi.data.base.EpochShuffleSampler`; every example
    is drawn ⌊epoch_size / n⌋ or ⌈epoch_size / n⌉ times per epoch when n ≤ epoch_size, and a
    different random subset of epoch_size examples each epoch when n > epoch_size.
    """

    def __init__(self, n: int, epoch_size: int, seed: int = 0) -> None:
        if n < 1 or epoch_size < 1:
            raise ValueError(f"need n >= 1 and epoch_size >= 1, got n={n}, epoch_size={epoch_size}")
        self.n = int(n)
        self.epoch_size = int(epoch_size)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.epoch_size

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        passes = -(-self.epoch_size // self.n)
        order = torch.cat([torch.randperm(self.n, generator=g) for _ in range(passes)])
        return iter(order[: self.epoch_size].tolist())


class TableSamples(MultimodalDataModule):
    """Draws from the data table P_D of :func:`mmvi.theory.make_data_table`, modalities ``x``, ``y``.

    Args:
        n_samples: n, the number of training draws.
        table_seed: seed of the data table P_D (fixed across a sweep).
        sample_seed: seed of the training draws; ``val_seed`` / ``test_seed`` for the other splits.
        n_val, n_test: sizes of the validation and test splits (independent of n).
        n_x_bits, n_y_bits, strength, noise: passed to :func:`make_data_table`.
        epoch_size: training examples per epoch (None: one pass over the n examples).
        **kwargs: :class:`MultimodalDataModule` arguments (batch_size, modalities, ...).
    """

    def __init__(
        self,
        n_samples: int = 1000,
        table_seed: int = 0,
        sample_seed: int = 1,
        n_val: int = 2000,
        n_test: int = 2000,
        val_seed: int = 1_000_001,
        test_seed: int = 2_000_002,
        n_x_bits: int = 4,
        n_y_bits: int = 4,
        strength: float = 2.0,
        noise: float = 0.5,
        epoch_size: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if n_samples < 1 or n_val < 1 or n_test < 1:
            raise DataError(f"data.n_samples, n_val, n_test must be >= 1, got {n_samples}, {n_val}, {n_test}")
        if len({sample_seed, val_seed, test_seed}) < 3:
            raise DataError(
                f"data.sample_seed, val_seed, test_seed must differ, got {sample_seed}, {val_seed}, {test_seed}"
            )
        if epoch_size is not None and epoch_size < 1:
            raise DataError(f"data.epoch_size must be >= 1 or null, got {epoch_size}")
        self.n_samples = int(n_samples)
        self.table_seed = int(table_seed)
        self.seeds = {"train": int(sample_seed), "val": int(val_seed), "test": int(test_seed)}
        self.sizes = {"train": self.n_samples, "val": int(n_val), "test": int(n_test)}
        self.n_x_bits, self.n_y_bits = int(n_x_bits), int(n_y_bits)
        self.epoch_size = None if epoch_size is None else int(epoch_size)
        #: P_D[x, y], float64, shape (2^n_x, 2^n_y)
        self.p_data: np.ndarray = make_data_table(
            self.n_x_bits, self.n_y_bits, seed=self.table_seed, strength=float(strength), noise=float(noise)
        )
        self.label_names = [format(i, f"0{self.n_x_bits}b") for i in range(2**self.n_x_bits)]

    def load_splits(self) -> dict[str, Split]:
        out = {}
        for name in ("train", "val", "test"):
            x, y = sample_from_table(self.p_data, self.sizes[name], seed=self.seeds[name])
            labels = one_hot(torch.from_numpy(state_index(x)), 2**self.n_x_bits)
            out[name] = Split({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, labels)
        return out

    def train_dataloader(self) -> DataLoader:
        if self.epoch_size is None:
            return super().train_dataloader()
        self.setup()
        ds = SplitDataset(self.splits["train"])
        sampler = CyclingEpochSampler(len(ds), self.epoch_size, self.shuffle_seed)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=identity_collate,
            num_workers=self.num_workers,
        )
