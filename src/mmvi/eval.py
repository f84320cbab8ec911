"""Evaluate a trained checkpoint: ``python -m mmvi.eval ckpt_path=<run>/checkpoints/last.ckpt``.

The model is rebuilt from the checkpoint's own hyper-parameters and the data from the training
run's ``config_resolved.json`` (so an experiment's model is never replaced by a default one).
Writes ``results.json`` (status completed/failed) into the eval run folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mmvi.lit.module import MultimodalLitModule
from mmvi.train import print_summary, run_metadata
from mmvi.utils import RunRecord

log = logging.getLogger(__name__)


def training_config(ckpt_path: Path) -> dict:
    """The resolved config saved by the run that wrote ``ckpt_path`` (``<run>/checkpoints/x.ckpt``)."""
    saved = ckpt_path.resolve().parent.parent / "config_resolved.json"
    if not saved.is_file():
        raise FileNotFoundError(
            f"{saved} not found: cannot tell which data the checkpoint was trained on; pass data=... explicitly"
        )
    return json.loads(saved.read_text())["config"]


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, float]:
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt}: no such checkpoint file")
    out_dir = Path(cfg.paths.output_dir)
    with RunRecord(out_dir, run_metadata(cfg), checkpoint=str(ckpt)) as record:
        pl.seed_everything(int(cfg.seed))
        lit = MultimodalLitModule.load_from_checkpoint(str(ckpt), map_location="cpu")
        data_cfg = (
            OmegaConf.to_container(cfg.data, resolve=True)
            if cfg.get("data")
            else training_config(ckpt)["data"]
        )
        dm = instantiate(data_cfg, _convert_="all")
        dm.setup()
        evaluate = instantiate(cfg.evaluation, _convert_="all")
        metrics, artefacts = evaluate(
            model=lit.model, dm=dm, out_dir=out_dir, native_steps=lit.objective.native_inference_steps
        )
        good = record.complete(metrics, artefacts=artefacts)
    print_summary(out_dir, good, None)
    return good


@hydra.main(version_base="1.3", config_path="../../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate_checkpoint(cfg)


if __name__ == "__main__":
    main()
