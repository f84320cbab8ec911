"""Stage runner of the deep pipeline: one Lightning fit per stage, checkpointed and resumable.

Each stage lives in ``<run dir>/stages/<name>/`` (``spec.json``, ``checkpoints/last.ckpt``,
``model.pt``, ``done.json`` written atomically last, ``csv/version_<n>/metrics.csv``). A finished
stage is skipped and its weights loaded only under the requested spec; a different spec is an
error naming the differing keys; specs chain through the digests of the stages before. The run's
loggers see every stage through a :class:`StageLogger` (names prefixed by :func:`stage_prefix`,
epochs and steps continued). Details: docs/workflow.md §1.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from mmvi.context import start_over_hint
from mmvi.data.base import MultimodalDataModule, Split
from mmvi.errors import ConfigError
from mmvi.fingerprint import describe, differences, digest
from mmvi.lit.checkpoint_io import AtomicCheckpointIO
from mmvi.run_folder import CHECKPOINT_DIR, CSV_DIR, DONE_FILE, SPEC_FILE, WEIGHTS_FILE, last_checkpoint
from mmvi.utils import atomic_path, write_json_atomic

log = logging.getLogger(__name__)


def check_stage_spec(name: str, folder: Path, old: Mapping, new: Mapping, state: str) -> None:
    """Refuse (one line) a stage folder that was trained with another spec.

    Raises:
        ConfigError: naming the differing keys with their old and new values and the ways forward.
    """
    new = json.loads(json.dumps(new, default=str))
    diffs = differences(old, new, allow_continue=False)
    if diffs:
        raise ConfigError(
            f"stage {name!r} in {folder} was {state} with another configuration: {describe(diffs)}; "
            f"{start_over_hint()}"
        )


# ---------------------------------------------------------------------------- data
class SplitsDataModule(MultimodalDataModule):
    """A data module over splits already in memory (e.g. a lower stage's mean activations)."""

    # exempt from the unit-type check: its modalities are mean activations of trained layers (in
    # [0, 1] for Bernoulli hiddens, [0, N] for stepped-sigmoid ones), functions of data the original
    # data module already checked; the stage's RBM models them with the layer's own unit type
    unit_check = False

    def __init__(self, splits: Mapping[str, Split], single_label: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self._given = dict(splits)
        self.single_label = single_label

    def load_splits(self) -> dict[str, Split]:
        return dict(self._given)


@torch.no_grad()
def map_split(split: Split, fn: Callable[[dict[str, Tensor]], dict[str, Tensor]], chunk: int = 2000) -> Split:
    """Apply ``fn`` (modalities → modalities) to a split in chunks of ``chunk`` examples."""
    parts: list[dict[str, Tensor]] = []
    for start in range(0, len(split), chunk):
        parts.append(fn({m: x[start : start + chunk] for m, x in split.modalities.items()}))
    names = parts[0].keys() if parts else []
    return Split({m: torch.cat([p[m] for p in parts]) for m in names}, split.labels)


def keep_rows(split: Split, keep: Tensor) -> Split:
    return split.subset(keep.nonzero().squeeze(-1))


class UnlabelledStream(IterableDataset):
    """One epoch = the unlabelled pairs of ``source(seed)``, then the labelled training split shuffled.

    ``source(seed)`` yields raw ``{modality: (B, n)}`` batches (e.g. ``MIRFlickr.iter_unlabelled``);
    each is filtered by ``keep`` (rows → bool) and mapped through ``fn`` (a lower stage's layers).
    ``labelled`` is already mapped. The seed of epoch e is (seed, e), e counted from this process's
    start (a resumed stage restarts the count).
    """

    def __init__(
        self,
        source: Callable[[int], Iterable[dict[str, Tensor]]],
        fn: Callable[[dict[str, Tensor]], dict[str, Tensor]],
        labelled: Split,
        batch_size: int,
        seed: int = 0,
        keep: Callable[[dict[str, Tensor]], Tensor] | None = None,
    ) -> None:
        self.source, self.fn, self.labelled = source, fn, labelled
        self.batch_size, self.seed, self.keep = int(batch_size), int(seed), keep
        self.epoch = 0

    def __iter__(self) -> Iterator[dict]:
        seed = self.seed * 1_000_003 + self.epoch
        self.epoch += 1
        for raw in self.source(seed):
            if self.keep is not None:
                rows = self.keep(raw).nonzero().squeeze(-1)
                raw = {m: x[rows] for m, x in raw.items()}
            if next(iter(raw.values())).shape[0] == 0:
                continue
            with torch.no_grad():
                yield {"modalities": self.fn(raw)}
        perm = torch.randperm(len(self.labelled), generator=torch.Generator().manual_seed(seed))
        for start in range(0, len(perm), self.batch_size):
            idx = perm[start : start + self.batch_size]
            yield {"modalities": {m: x[idx] for m, x in self.labelled.modalities.items()}, "index": idx}


class StreamDataModule(SplitsDataModule):
    """:class:`SplitsDataModule` whose training batches come from an :class:`UnlabelledStream`."""

    def __init__(self, splits: Mapping[str, Split], stream: UnlabelledStream, **kwargs) -> None:
        super().__init__(splits, **kwargs)
        self.stream = stream
        self.on_device = False  # the stream is on the host; Lightning moves each batch

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.stream, batch_size=None)


# --------------------------------------------------------------------------- run loggers
def stage_prefix(name: str) -> str:
    """Metric prefix of a stage: ``pathway_image_1`` → ``pathway/image_1``, ``finetune_recurrent`` →
    ``finetune/recurrent``; any other stage (``top``, ``joint``) by its name."""
    for kind in ("pathway", "finetune"):
        if name.startswith(kind + "_"):
            return f"{kind}/{name[len(kind) + 1 :]}"
    return name


@dataclass
class LogOffsets:
    """Where the current stage starts in the run's log: pipeline epochs and steps before it."""

    epoch: int = 0
    step: int = 0
    last_step: int = -1  # the last step logged so far (pipeline count)


class StageLogger(Logger):
    """One of the run's loggers as one stage's Trainer sees it.

    Metric names get the stage's prefix (``top/train/loss``); ``epoch`` and the step are shifted
    by ``offsets`` (the stages before), so the run's log holds the stages one after the other.
    The pipeline logs the run's config once, so the stage's hyperparameters are not logged, and
    a stage never finalises the logger (the later stages and the evaluation log to it).
    """

    def __init__(self, logger: Logger, prefix: str, offsets: LogOffsets) -> None:
        super().__init__()
        self.logger, self.prefix, self.offsets = logger, prefix, offsets

    @property
    def name(self) -> str | None:
        return self.logger.name

    @property
    def version(self) -> int | str | None:
        return self.logger.version

    @property
    def save_dir(self) -> str | None:
        return self.logger.save_dir

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        out = {f"{self.prefix}/{k}": v for k, v in metrics.items() if k != "epoch"}
        if "epoch" in metrics:
            out["epoch"] = int(metrics["epoch"]) + self.offsets.epoch
        if step is not None:
            step = int(step) + self.offsets.step
            self.offsets.last_step = max(self.offsets.last_step, step)
        self.logger.log_metrics(out, step=step)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The stage's module hyperparameters are not the run's config: not logged."""

    @rank_zero_only
    def save(self) -> None:
        self.logger.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.logger.save()


# --------------------------------------------------------------------------- runner
@dataclass
class StageRunner:
    """Runs stages under ``root`` with one trainer config; tracks the chain of stage specs.

    Args:
        root: ``<run dir>/stages``.
        trainer: resolved ``_target_`` config of the Lightning Trainer (``max_epochs`` is per stage).
        progress_bar: show Lightning's progress bar.
        loggers: the run's loggers (``logger`` group); each stage logs to them through a
            :class:`StageLogger`.
    """

    root: Path
    trainer: Mapping
    progress_bar: bool = False
    chain: list[str] = field(default_factory=list)
    records: dict[str, dict] = field(default_factory=dict)
    loggers: list[Logger] = field(default_factory=list)
    offsets: LogOffsets = field(default_factory=LogOffsets)

    def stage_dir(self, name: str) -> Path:
        return self.root / name

    def upstream(self) -> str:
        return digest(self.chain)

    def run(
        self,
        name: str,
        spec: Mapping,
        module: nn.Module,
        make_lit: Callable[[], pl.LightningModule],
        trained: Callable[[pl.LightningModule], nn.Module],
        dm: Callable[[], MultimodalDataModule],
        epochs: int,
        validate: bool,
        on_fresh_start: Callable[[pl.LightningModule, MultimodalDataModule], None] | None = None,
    ) -> dict:
        """Train ``module`` as stage ``name`` (or load it if the stage is done); return its record.

        ``make_lit()`` builds the LightningModule; ``trained(lit)`` returns the trained nn.Module
        whose weights are copied into ``module``; ``dm()`` builds the stage's data (only called
        when the stage trains); ``on_fresh_start(lit, dm)`` runs when no checkpoint exists.
        ``epochs = 0`` keeps the module as built (no fit).
        """
        full_spec = {"stage": name, "upstream": self.upstream(), **dict(spec)}
        folder = self.stage_dir(name)
        done = folder / DONE_FILE
        if done.is_file():
            record = json.loads(done.read_text())
            check_stage_spec(name, folder, record.get("spec") or {}, full_spec, "finished")
            module.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu"))
            log.info("stage %s: done (%s), weights loaded", name, done)
        else:
            record = self._fit(
                name, full_spec, folder, make_lit, trained, dm, epochs, validate, on_fresh_start
            )
            module.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu"))
        self.chain.append(record["digest"])
        self.records[name] = record
        self.offsets.epoch += int(record.get("epochs", 0))
        self.offsets.step = self.offsets.last_step + 1
        return record

    def _fit(
        self,
        name: str,
        spec: dict,
        folder: Path,
        make_lit: Callable[[], pl.LightningModule],
        trained: Callable[[pl.LightningModule], nn.Module],
        dm_fn: Callable[[], MultimodalDataModule],
        epochs: int,
        validate: bool,
        on_fresh_start: Callable[[pl.LightningModule, MultimodalDataModule], None] | None,
    ) -> dict:
        started = time.time()
        last = last_checkpoint(folder)
        ckpt = str(last) if last.is_file() else None
        started_spec = folder / SPEC_FILE
        if ckpt is not None and started_spec.is_file():  # an interrupted stage resumes only as itself
            check_stage_spec(name, folder, json.loads(started_spec.read_text()), spec, "interrupted")
        write_json_atomic(started_spec, json.loads(json.dumps(spec, default=str)))
        dm = dm_fn()
        lit = make_lit()
        if ckpt is None and on_fresh_start is not None:
            on_fresh_start(lit, dm)
        metrics = self._trainer_fit(name, folder, lit, dm, ckpt, epochs, validate) if epochs > 0 else {}
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            torch.save({k: v.detach().cpu() for k, v in trained(lit).state_dict().items()}, tmp)
        record = {
            "stage": name,
            "spec": json.loads(json.dumps(spec, default=str)),
            "digest": digest(spec),
            "epochs": int(epochs),
            "metrics": metrics,
            "seconds": time.time() - started,
            "finished": time.time(),
        }
        write_json_atomic(folder / DONE_FILE, record)
        log.info("stage %s: finished in %.1f s, %s", name, record["seconds"], metrics)
        return record

    def _trainer_fit(
        self,
        name: str,
        folder: Path,
        lit: pl.LightningModule,
        dm: MultimodalDataModule,
        ckpt: str | None,
        epochs: int,
        validate: bool,
    ) -> dict[str, float]:
        """One Lightning fit with a last.ckpt every epoch and a CSV log; return the final metrics."""
        log.info("stage %s: %s (%d epochs)", name, "resuming from " + ckpt if ckpt else "training", epochs)
        checkpoint = ModelCheckpoint(
            dirpath=folder / CHECKPOINT_DIR,
            filename="epoch_{epoch:03d}",
            auto_insert_metric_name=False,
            save_last=True,
            save_top_k=1,
            every_n_epochs=1,
        )
        trainer: pl.Trainer = instantiate(
            dict(self.trainer),
            max_epochs=int(epochs),
            default_root_dir=str(folder),
            logger=[
                CSVLogger(str(folder), name=CSV_DIR),  # csv/version_<n>: one per (re)start
                *(StageLogger(lg, stage_prefix(name), self.offsets) for lg in self.loggers),
            ],
            callbacks=[checkpoint],
            plugins=[*instantiate(self.trainer.get("plugins") or [], _convert_="all"), AtomicCheckpointIO()],
            enable_progress_bar=self.progress_bar,
            enable_model_summary=False,
            limit_val_batches=1.0 if validate else 0,
            num_sanity_val_steps=0,
        )
        trainer.fit(lit, datamodule=dm, ckpt_path=ckpt)
        if trainer.interrupted:
            raise KeyboardInterrupt(f"stage {name} was interrupted; re-run the same command to resume it")
        return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
