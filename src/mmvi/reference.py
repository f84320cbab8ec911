"""The authors' MATLAB code (Sohn, Shang & Lee, NIPS 2014; ``mnist/`` of their public repository)
scored with mmvi's own measures.

Their data and weights layout (``mnist/load_mnist.m``, ``mnist/demo_mnist.m``,
``mrnn/mrbm_train_bin_bin.m``):

* ``data/mnist_train.mat`` and ``data/mnist_test.mat`` in the working folder hold ``digits``
  (784 × N, pixels / 255 in [0, 1], each column an image flattened column-major, MATLAB's order)
  and ``labels`` (N × 1, classes 1…10). ``load_mnist`` takes training columns 1…50,000 as the
  training set and the rest as the validation set; the test file is the test set.
* ``demo_mnist`` cuts each 28 × 28 image into ``x`` = columns 1–14 and ``z`` = columns 15–28,
  each flattened column-major to 392 values.
* The trained ``weights`` struct: ``vxhid`` (392 × H), ``vzhid`` (392 × H), ``vxbias`` (392 × 1),
  ``vzbias`` (392 × 1), ``hidbias`` (H × 1); with ``upfactor = downfactor = 1`` (the MNIST scripts)
  these are the MRBM's W, b, c.

mmvi flattens each half row-major (:class:`mmvi.data.idx.ImageCut`, modalities ``left`` and
``right``), so a weight row of the reference is a permuted row of mmvi's: :func:`column_major_order`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from mmvi.models.mrbm import MultimodalRBM

# Reference name of each weight -> (mmvi parameter, modality or None for the hidden bias).
WEIGHT_FIELDS = {
    "vxhid": ("W", "left"),
    "vzhid": ("W", "right"),
    "vxbias": ("b", "left"),
    "vzbias": ("b", "right"),
    "hidbias": ("c", None),
}


def column_major_order(n_rows: int, n_cols: int) -> np.ndarray:
    """Index map between an (n_rows, n_cols) image flattened row-major (mmvi) and column-major
    (MATLAB): ``matlab_vector = mmvi_vector[order]``, ``mmvi_vector[order] = matlab_vector``.

    Returns: (n_rows · n_cols,) int64.
    """
    return np.arange(n_rows * n_cols).reshape(n_rows, n_cols).T.ravel()


def images_to_reference(images: np.ndarray) -> np.ndarray:
    """(N, H, W) images → (H·W, N) float64 ``digits`` as ``load_mnist.m`` returns them (column-major)."""
    n, h, w = images.shape
    flat = np.asarray(images, dtype=np.float64).reshape(n, h * w)
    return np.ascontiguousarray(flat[:, column_major_order(h, w)].T)


def load_reference_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The ``weights`` struct of a MATLAB v5/v7 file saved by the reference code (``save(...,
    'weights', ...)``): ``{field: float64 array}`` with the vectors flattened.

    Raises:
        ValueError: the file holds no ``weights`` struct with the five MRBM fields.
    """
    from scipy.io import loadmat

    mat = loadmat(str(path), squeeze_me=False, struct_as_record=True)
    if "weights" not in mat:
        raise ValueError(f"{path}: no 'weights' variable (found {sorted(k for k in mat if k[0] != '_')})")
    rec = mat["weights"][0, 0]
    missing = [f for f in WEIGHT_FIELDS if f not in rec.dtype.names]
    if missing:
        raise ValueError(f"{path}: the weights struct lacks {missing}; has {list(rec.dtype.names)}")
    out = {f: np.asarray(rec[f], dtype=np.float64) for f in WEIGHT_FIELDS}
    for f in ("vxbias", "vzbias", "hidbias"):
        out[f] = out[f].reshape(-1)
    return out


@torch.no_grad()
def set_reference_weights(model: MultimodalRBM, weights: Mapping[str, np.ndarray], height: int = 28) -> None:
    """Copy the reference's weights (:func:`load_reference_weights`) into an MRBM over the two
    column halves ``left`` / ``right`` of ``height``-row images, reordering each half's pixels
    from column-major to row-major.

    Raises:
        ValueError: the model is not a two-halves MRBM of the weights' sizes.
    """
    if sorted(model.names) != ["left", "right"]:
        raise ValueError(f"the reference's MRBM has modalities left/right; the model has {model.names}")
    n_hid = weights["hidbias"].shape[0]
    if n_hid != model.n_hidden:
        raise ValueError(f"the weights have {n_hid} hidden units, the model {model.n_hidden}")
    for field, (param, m) in WEIGHT_FIELDS.items():
        value = np.asarray(weights[field], dtype=np.float64)
        if param != "W":
            value = value.reshape(-1)
        if m is None:
            model.c.copy_(torch.from_numpy(value).to(model.c))
            continue
        size = model.sizes[m]
        if value.shape[0] != size or size % height:
            raise ValueError(f"{field}: {value.shape[0]} rows; modality {m!r} has {size} ({height} rows)")
        order = column_major_order(height, size // height)
        mmvi_value = np.empty_like(value)
        mmvi_value[order] = value
        target = model.W[m] if param == "W" else model.b[m]
        target.copy_(torch.from_numpy(mmvi_value).to(target))


def score_reference(weights: Mapping[str, np.ndarray], overrides: list[str], out_dir: str | Path) -> dict:
    """mmvi's evaluation of the reference's weights: the train config composed from ``overrides``
    (as ``python -m mmvi.train`` would), its data, model (with the weights copied in) and
    objective (for the native mean-field steps), then :func:`mmvi.evaluation.protocol.evaluate`
    exactly as training ends. Returns the metrics (errors in %, cross-entropies in nats/example).

    Raises: ConfigError / DataError as the training CLI; ValueError for weights of another shape.
    """
    from hydra.utils import instantiate

    from mmvi.api import compose_config
    from mmvi.lifecycle import run_metadata
    from mmvi.train import Training

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = compose_config("train", list(overrides), run_dir=out)
    training = Training(cfg, run_metadata(cfg), out, zero=True)  # the training run's own data and model
    dm = training.load_data()
    training.build(dm)
    lit = training.lit
    set_reference_weights(lit.model, weights, height=int(dm.image_cut.height) if dm.image_cut else 28)
    evaluate = instantiate(cfg.evaluation, _convert_="all")
    metrics, _ = evaluate(
        model=lit.model, dm=dm, out_dir=out, native_steps=lit.objective.native_inference_steps
    )
    return dict(metrics)
