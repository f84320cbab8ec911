"""In-memory multimodal data: splits of named modality tensors, served as whole batches.

A batch is ``{"modalities": {name: (B, n_m) float}, "labels": (B, C) multi-hot float,
"index": (B,) long}``. The dataset gathers a batch with one fancy-indexing call per tensor
(``__getitems__``), so no Python loop runs over examples and the tensors can live on the
accelerator (``to_device``) with no per-step host→device copy.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from mmvi.constraints import INT1, Flag, MappingOf, Options, Settings, check_arguments
from mmvi.errors import DataError
from mmvi.models.units import DATA_UNIT_TYPES

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# a Gaussian training split is "far from standardised" above this mean |mean| or mean |std - 1| per unit
STANDARDISED_TOLERANCE = 0.5


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


def _range(x: Tensor) -> str:
    return f"[{float(x.min()):.4g}, {float(x.max()):.4g}]"


def unit_type_problem(x: Tensor, units: str) -> tuple[str, str] | None:
    """How the values ``x`` (N, n) break what unit type ``units`` models: (what was found, what is
    needed), or None if they fit.

    Bernoulli units model values in [0, 1] (probabilities or bits), replicated-softmax units
    non-negative whole counts, Gaussian units finite values. Other (layer) unit types are not
    checked. Non-finite values break every type.
    """
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        row = int(bad.any(-1).nonzero()[0, 0])
        return f"holds {int(bad.sum())} NaN/inf values (the first in row {row})", "finite values"
    if x.numel() == 0:
        return None
    if units == "bernoulli":
        outside = (x < 0) | (x > 1)
        if bool(outside.any()):
            share = 100.0 * float(outside.double().mean())
            return f"has values in {_range(x)} ({share:.3g} % outside [0, 1])", "values in [0, 1]"
    elif units == "softmax":
        wrong = (x < 0) | (x != torch.round(x))
        if bool(wrong.any()):
            return (
                f"has values in {_range(x)}, {int(wrong.sum())} of them negative or not whole",
                "non-negative whole counts",
            )
    return None


def standardisation_gap(x: Tensor) -> tuple[float, float]:
    """(mean over units of |mean|, mean over units of |std − 1|) of a split (N, n), in float64."""
    x = x.double()
    if x.shape[0] < 2:
        return float(x.mean(0).abs().mean()), 0.0
    return float(x.mean(0).abs().mean()), float((x.std(0, unbiased=False) - 1).abs().mean())


def load_data_state(dm: pl.LightningDataModule, checkpoint: str | Path | Mapping) -> bool:
    """Give ``dm`` the data state a training run saved with its checkpoint; True if there was one.

    Lightning stores ``dm.state_dict()`` in every checkpoint under the data module's class name
    (e.g. the standardisation statistics of :class:`mmvi.data.arrays.ArrayFiles`). Evaluating a
    checkpoint on other files must preprocess them with those statistics: call this on the new
    data module (before or after its ``setup``). ``checkpoint`` is a path or a loaded checkpoint.
    """
    if not isinstance(checkpoint, Mapping):
        checkpoint = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    state = checkpoint.get(type(dm).__qualname__)
    if not state:
        return False
    dm.load_state_dict(state)
    return True


class MultimodalDataModule(pl.LightningDataModule, ABC):
    """Base class: subclasses implement :meth:`load_splits` returning train/val/test splits.

    After loading, :meth:`setup` checks every split against the unit type of each modality
    (:meth:`check_unit_fit`), before anything is trained.

    Args:
        batch_size: training batch size (global batch in DDP is batch_size × devices).
        eval_batch_size: batch size for validation/test loaders.
        max_examples: optional cap per split, ``{"train": n, ...}`` (first n of each split).
        on_device: keep the tensors on the LightningModule's device (see ``to_device``).
    """

    single_label: bool = True
    label_names: list[str] | None = None
    #: check the splits against the modalities' unit types in :meth:`setup` (see :meth:`check_unit_fit`)
    unit_check: bool = True

    constraints = {
        "batch_size": INT1,
        "eval_batch_size": INT1,
        "max_examples": Settings(
            dict.fromkeys(SPLITS, INT1),
            allow_none=True,
            what="a mapping of splits to sizes, e.g. 'data.max_examples={train:1000,val:200,test:200}' "
            "(quoted for the shell)",
            wrong="is not allowed",
        ),
        "on_device": Flag(),
        "modalities": MappingOf(
            Settings({"size": INT1, "units": Options(DATA_UNIT_TYPES)}, open=True),
            allow_none=True,
            example="{left: {size: 392, units: bernoulli}}",
        ),
    }

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
        check_arguments(
            self,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            max_examples=max_examples,
            on_device=on_device,
            modalities=modalities,
        )
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.max_examples = dict(max_examples or {})
        self.num_workers = int(num_workers)
        self.on_device = bool(on_device)
        self.shuffle_seed = 0  # set to the run's seed by the training entry point
        self.splits: dict[str, Split] = {}

    # ------------------------------------------------------------------ loading
    @abstractmethod
    def load_splits(self) -> dict[str, Split]:
        """The train/val/test splits of the data set."""

    def setup(self, stage: str | None = None) -> None:
        """Load the splits, cap them (``max_examples``), check them; keep them only if all is well."""
        if self.splits:
            return
        splits = self.load_splits()
        for name, split in splits.items():
            cap = self.max_examples.get(name)
            if cap is not None and cap < len(split):
                split = split.subset(slice(0, int(cap)))
            splits[name] = split
        self.check_declared_modalities(splits)
        if self.unit_check:
            self.check_unit_fit(splits)
        self.splits = splits

    def check_declared_modalities(self, splits: Mapping[str, Split] | None = None) -> None:
        """The config's ``data.modalities`` must name the data's modalities with their sizes."""
        if not self.declared_modalities:
            return
        splits = self.splits if splits is None else splits
        actual = {m: int(x.shape[1]) for m, x in splits["train"].modalities.items()}
        declared = {m: int(spec["size"]) for m, spec in self.declared_modalities.items() if "size" in spec}
        if declared and declared != actual:
            raise DataError(
                f"data.modalities declares {declared} but {type(self).__name__} provides {actual}; "
                "fix the modality names/sizes in the data config, or set data.modalities=null to take "
                "them from the data"
            )

    # ------------------------------------------------------------ unit types
    def default_units(self, m: str) -> str:
        """Unit type of modality ``m`` when ``data.modalities`` names none (subclasses: the data's own)."""
        return "bernoulli"

    def unit_types(self, names: list[str] | None = None) -> dict[str, str]:
        """``{modality: unit type}``: the data config's ``modalities.<m>.units``, else :meth:`default_units`."""
        names = list(self.splits["train"].modalities) if names is None else names
        return {
            m: str(self.declared_modalities.get(m, {}).get("units") or self.default_units(m)) for m in names
        }

    def describe_modality(self, m: str) -> str:
        """How errors name modality ``m`` (subclasses add its file)."""
        return f"modality {m!r}"

    def unit_fix(self, m: str, units: str) -> str:
        """What to change when modality ``m``'s values do not fit ``units`` (subclasses: their options)."""
        if units == "bernoulli":
            return (
                f"rescale {m} to [0, 1] (or binarise it), or model it with data.modalities.{m}.units=gaussian"
            )
        if units == "softmax":
            return f"give {m} as word counts, or model it with data.modalities.{m}.units=gaussian"
        return f"remove or impute the non-finite values of {m}"

    def check_unit_fit(
        self, splits: Mapping[str, Split] | None = None, units: Mapping[str, str] | None = None
    ) -> None:
        """Every split's values must fit the unit type of their modality (docs/design.md §2).

        Per split and modality: Bernoulli values in [0, 1], replicated-softmax values non-negative
        whole counts, Gaussian values finite (:func:`unit_type_problem`); other (layer) unit types
        are not checked. Gaussian units assume standardised data (unit variance): a training split
        whose per-unit mean |mean| or |std − 1| exceeds 0.5 gets a warning.

        Args:
            splits: ``{split: Split}`` (default: the loaded splits).
            units: ``{modality: unit type}`` (default: :meth:`unit_types`); an entry point may pass
                the unit types of the model it built, when they differ from the data config's.

        Raises:
            DataError: one line naming the data module, split, modality, the values found and the fix.
        """
        splits = self.splits if splits is None else splits
        if not splits:
            return
        names = list(next(iter(splits.values())).modalities)
        types = dict(self.unit_types(names) if units is None else units)
        order = [s for s in SPLITS if s in splits] + [s for s in splits if s not in SPLITS]
        for name in order:
            for m, x in splits[name].modalities.items():
                problem = unit_type_problem(x, types.get(m, ""))
                if problem is not None:
                    found, needed = problem
                    raise DataError(
                        f"{type(self).__name__}: {self.describe_modality(m)} in the {name} split {found}, "
                        f"but its {types.get(m)} units model {needed}; fix: {self.unit_fix(m, types.get(m, ''))}"
                    )
        train = splits.get("train")
        for m, x in train.modalities.items() if train is not None else ():
            if types.get(m) != "gaussian" or x.shape[0] == 0:
                continue
            mean_gap, std_gap = standardisation_gap(x)
            if mean_gap > STANDARDISED_TOLERANCE or std_gap > STANDARDISED_TOLERANCE:
                constant = int((x.double().std(dim=0, unbiased=False) < 1e-6).sum()) if x.shape[0] > 1 else 0
                log.warning(
                    "%s: %s (Gaussian units, unit variance assumed) is far from standardised in the "
                    "train split: mean |mean| %.3g, mean |std - 1| %.3g per unit; %s",
                    type(self).__name__,
                    self.describe_modality(m),
                    mean_gap,
                    std_gap,
                    f"{constant} of its {x.shape[1]} units are constant (no variance to standardise): "
                    "remove them"
                    if constant
                    else "standardise it (z-score with training statistics)",
                )

    # ------------------------------------------------------------- drawing
    def example_images(self, modalities: Mapping[str, Tensor]) -> Tensor | None:
        """Examples drawn as images, or None when the data are not images.

        ``modalities`` maps some or all of the data's modalities to (N, n_m) values (data or
        predictions, e.g. a missing piece inferred by a model); the result is (N, H, W) grey or
        (N, H, W, 3) RGB in [0, 1], pieces not given left blank (NaN).
        """
        return None

    @property
    def modality_sizes(self) -> dict[str, int]:
        self.setup()
        return {m: int(x.shape[1]) for m, x in self.splits["train"].modalities.items()}

    def modality_specs(self) -> dict[str, dict]:
        """``{name: {"size": n_m, "units": type, ...}}`` of the loaded data: a model's ``modalities``.

        Sizes come from the data; unit types (and unit options) from the data config's
        ``modalities``, else the data module's own (:meth:`default_units`).
        """
        self.setup()
        out = {}
        for m, x in self.splits["train"].modalities.items():
            spec = dict(self.declared_modalities.get(m, {}))
            spec["units"] = spec.get("units") or self.default_units(m)
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
