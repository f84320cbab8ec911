"""Train a multimodal model, evaluate it and write ``results.json``.

    python -m mmvi.train                                   # defaults: mnist5k, MRBM, MinVI-MP
    python -m mmvi.train experiment=paper_mnist_mp         # the paper's MNIST MP run
    python -m mmvi.train -m objective=nll_pcd,minvi_cdpl,minvi_mp,hybrid data=mnist trainer.max_epochs=20

The run folder (``paths.output_dir``) receives the resolved config, checkpoints, CSV and wandb
logs, figures and ``results.json`` (status running → completed | failed, written atomically).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from mmvi.config_check import ConfigError, validate_config
from mmvi.data.base import DataError, MultimodalDataModule
from mmvi.lit.module import MultimodalLitModule, NonFiniteError
from mmvi.utils import RunRecord, finite_metrics, write_json_atomic

log = logging.getLogger(__name__)

# errors of the user's config, files or training run: reported as one message, no traceback
USER_ERRORS = (ConfigError, DataError, FileNotFoundError, NonFiniteError)


def is_global_zero() -> bool:
    """True in the launching process (Lightning's DDP children carry LOCAL_RANK/NODE_RANK > 0)."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def run_metadata(cfg: DictConfig) -> dict[str, Any]:
    """Resolved config (without the hydra node), Hydra choices and overrides of this job."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    meta: dict[str, Any] = {"config": resolved, "run_dir": str(cfg.paths.output_dir)}
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        meta["choices"] = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/")}
        meta["overrides"] = list(hc.overrides.task)
        meta["job_num"] = hc.job.get("num")
    return meta


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """Checkpoint to resume from.

    ``ckpt_path=last`` (or no ``ckpt_path`` in a reused run folder) resumes from
    ``<output_dir>/checkpoints/last.ckpt`` when it exists; ``ckpt_path=none`` forces a fresh start.
    """
    ckpt = cfg.get("ckpt_path")
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if ckpt == "none":
        return None
    if ckpt in (None, "", "last"):
        if last.is_file():
            log.info("resuming from %s", last)
            return str(last)
        if ckpt == "last":
            log.warning("ckpt_path=last but %s does not exist; starting from scratch", last)
        return None
    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt}: no such checkpoint file")
    return str(ckpt)


def instantiate_dict(nodes: DictConfig | None) -> list:
    """Instantiate every ``_target_`` node of a callbacks/loggers dict; a node without one is an error."""
    out = []
    for name, node in (nodes or {}).items():
        if node is None:
            continue
        if "_target_" not in node:
            raise ValueError(f"config node {name!r} has no _target_; remove it or give it one")
        out.append(instantiate(node, _convert_="all"))
    return out


def complete_modalities(cfg: DictConfig, dm: MultimodalDataModule) -> None:
    """A model without ``modalities`` (data configs that read sizes from files) takes the data's."""
    if cfg.model.get("modalities") is None:
        with open_dict(cfg):
            cfg.model.modalities = dm.modality_specs()


def build_lit_module(cfg: DictConfig) -> MultimodalLitModule:
    if "MultimodalRBM" not in str(cfg.model.get("_target_", "")):
        raise ConfigError(
            f"model={cfg.model.get('_target_')} is trained in stages: run python -m mmvi.deep.pipeline "
            "with the same overrides (mmvi.train trains model=mrbm)"
        )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return MultimodalLitModule(
        model=resolved["model"],
        objective=resolved["objective"],
        optim=resolved["optim"],
        nonfinite=resolved.get("nonfinite"),
        seed=int(resolved["seed"]),
        compile=bool(resolved.get("compile", False)),
    )


def check_model_matches_data(lit: MultimodalLitModule, dm: MultimodalDataModule) -> None:
    data_sizes = dm.modality_sizes
    if lit.model.sizes != data_sizes:
        raise ConfigError(
            f"model.modalities {lit.model.sizes} do not match the data's modalities {data_sizes}; "
            "set model.modalities to the data's (default: ${data.modalities})"
        )


def log_to_loggers(loggers: list, metrics: dict, artefacts: dict, step: int) -> str | None:
    """Send final metrics (and figures, to wandb) to every logger; return the wandb run path."""
    wandb_dir = None
    for lg in loggers:
        lg.log_metrics(metrics, step=step)
        if isinstance(lg, pl.loggers.WandbLogger):
            for key, path in artefacts.items():
                if str(path).endswith(".png"):
                    lg.log_image(key=f"figures/{key}", images=[str(path)], step=step)
            wandb_dir = str(lg.experiment.dir)
        lg.save()
    return wandb_dir


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, evaluate, write ``results.json``; return the metrics (empty on non-zero ranks)."""
    out_dir = Path(cfg.paths.output_dir)
    zero = is_global_zero()
    meta = run_metadata(cfg)
    if zero:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / "config_resolved.json", meta)
    try:
        with RunRecord(out_dir, meta, write=zero) as record:
            validate_config(cfg)
            pl.seed_everything(int(cfg.seed), workers=True)
            dm: MultimodalDataModule = instantiate(cfg.data, _convert_="all")
            dm.setup()
            dm.shuffle_seed = int(cfg.seed)
            complete_modalities(cfg, dm)
            lit = build_lit_module(cfg)
            check_model_matches_data(lit, dm)
            ckpt = resolve_ckpt_path(cfg)
            if ckpt is None:
                lit.model.init_visible_bias_from_data(dm.modality_means())
            loggers = instantiate_dict(cfg.get("logger"))
            callbacks = instantiate_dict(cfg.get("callbacks"))
            if not cfg.trainer.get("enable_progress_bar", True):
                # the trainer flag alone turns the bar off: drop the callbacks group's progress bar
                callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
            trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
            for lg in loggers:
                lg.log_hyperparams({**meta["config"], "choices": meta.get("choices", {})})
            trainer.fit(lit, datamodule=dm, ckpt_path=ckpt)
            if trainer.interrupted:
                raise KeyboardInterrupt("training was interrupted; resume with ckpt_path=last")
            if not trainer.is_global_zero:
                return {}
            evaluate = instantiate(cfg.evaluation, _convert_="all")
            metrics, artefacts = evaluate(
                model=lit.model, dm=dm, out_dir=out_dir, native_steps=lit.objective.native_inference_steps
            )
            good, _ = finite_metrics(metrics)
            wandb_dir = log_to_loggers(loggers, good, artefacts, trainer.global_step)
            good = record.complete(metrics, artefacts=artefacts, wandb_dir=wandb_dir)
        finish_wandb()  # wandb prints its own run summary; ours comes last
        print_summary(out_dir, good, wandb_dir)
        return good
    finally:
        finish_wandb()


def finish_wandb() -> None:
    """Close the wandb run so the next job of a multirun gets its own."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def print_summary(out_dir: Path, metrics: dict, wandb_dir: str | None) -> None:
    keys = [
        k
        for k in metrics
        if k.startswith(("classify/err_", "classify/map_", "cond_ce/", "cond_nll/", "nll", "retrieval/map_"))
    ]
    width = max((len(k) for k in keys), default=10)
    lines = ["", "Results"] + [f"  {k:<{width}}  {metrics[k]:.4f}" for k in sorted(keys)]
    lines.append(f"  run folder: {out_dir}")
    lines.append(f"  results:    {out_dir / 'results.json'}")
    if wandb_dir:
        lines.append(f"  wandb run:  {Path(wandb_dir).parent} (offline: `wandb sync` it to upload)")
    print("\n".join(lines), flush=True)


def exit_on_user_error(exc: Exception) -> None:
    """A config or data error ends a single run with its one-paragraph message, no traceback.

    In a multirun the exception propagates so Hydra records the job as failed and runs the rest.
    """
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise exc
    print(f"error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def run_task(task: Callable[[DictConfig], dict[str, float]], cfg: DictConfig) -> float | None:
    """Run an entry point's task; user errors end it with one line; return the optimised metric."""
    try:
        metrics = task(cfg)
    except USER_ERRORS as exc:
        exit_on_user_error(exc)
    return metrics.get(cfg.get("optimized_metric")) if metrics else None


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_task(train, cfg)


if __name__ == "__main__":
    main()
