"""Evaluation of the Theorem 2.1 experiment (``experiment=theorem21``): exact measures of a trained RBM.

    python -m mmvi.train -m experiment=theorem21 objective=nll_pcd,minvi_mp,minvi_cdpl \
        data.n_samples=100,1000,10000,100000

Each run trains a small two-modality Bernoulli RBM on n draws from the fixed table P_D of
:class:`mmvi.data.table.TableSamples`; this evaluation enumerates the model's joint P_θ(x, y)
(:func:`rbm_joint_table`) and reports :func:`theorem21_measures`: the distances between the
stationary distribution of the Gibbs chain x → y → x … built from P_θ(x|y), P_θ(y|x) and P_D
(supplement §S2, eq. S9–S11), and the terms of eq. S3. For an RBM the two conditionals come from
one joint, so the chain's joint is P_θ itself and ``tv_joint`` = ½ Σ |P_θ − P_D|.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmvi.constraints import NameList
from mmvi.theory.identities import c2, check_table, entropy
from mmvi.theory.measures import empirical_table, theorem21_measures
from mmvi.theory.rbm_tables import rbm_joint_table


def check_theorem21_data(
    dm: Any, model: torch.nn.Module | None = None, names: Any = ("x", "y"), **_: Any
) -> None:
    """Before training: the measures need the data module's table ``p_data`` (``data=theorem21``),
    a MultimodalRBM (its joint is enumerated) and ``names`` among the data's modalities.

    Raises:
        ConfigError: naming what is missing and the setting that provides it.
    """
    from mmvi.errors import ConfigError
    from mmvi.models.mrbm import MultimodalRBM

    if not hasattr(dm, "p_data"):
        raise ConfigError(
            f"evaluation=theorem21 needs the data table of data=theorem21; {type(dm).__name__} has none "
            "(use the default evaluation for this data)"
        )
    if model is not None and not isinstance(model, MultimodalRBM):
        raise ConfigError(
            f"evaluation=theorem21 enumerates a MultimodalRBM's joint; the model is {type(model).__name__}"
        )
    have = list(getattr(dm, "modality_sizes", {}) or {})
    missing = [m for m in (names or []) if have and m not in have]
    if missing:
        raise ConfigError(
            f"evaluation.names names {missing[0]!r}, which the data do not have; allowed: {have}"
        )


def evaluate_theorem21(
    model: torch.nn.Module,
    dm: Any,
    out_dir: str | Path | None = None,
    names: tuple[str, str] | None = ("x", "y"),
    **_: Any,
) -> tuple[dict[str, float], dict[str, str]]:
    """Exact Theorem 2.1 measures of ``model`` against the data table ``dm.p_data``.

    Returns the keys of :data:`mmvi.theory.MEASURE_KEYS` and

    * ``theory/n_samples``: n, the number of training draws;
    * ``theory/tv_empirical``: ½ Σ |P̂_n − P_D| of the training draws' empirical table P̂_n
      (the sampling error alone, for scale);
    * ``theory/l_vi_min`` = C₂ (eq. S5, S8) and ``theory/l_nll_min`` = H_D(X, Y): the values of
      L_VI and L_NLL at P_θ = P_D (their minima).

    ``names`` = (x modality, y modality) of the table's rows and columns. No artefacts.
    """
    p_data = check_table(dm.p_data, "dm.p_data")
    p_model = rbm_joint_table(model, names)
    metrics = theorem21_measures(p_data, p_model)
    dm.setup()
    train = dm.splits["train"].modalities
    mx, my = names if names is not None else tuple(model.names)
    p_emp = empirical_table(train[mx].cpu().numpy(), train[my].cpu().numpy())
    metrics["theory/n_samples"] = float(len(train[mx]))
    metrics["theory/tv_empirical"] = float(0.5 * np.abs(p_emp - p_data).sum())
    metrics["theory/l_vi_min"] = c2(p_data)
    metrics["theory/l_nll_min"] = entropy(p_data)
    return metrics, {}


#: run before training by :func:`mmvi.config_check.check_evaluation_data`
evaluate_theorem21.check_data = check_theorem21_data
evaluate_theorem21.constraints = {"names": NameList(allow_none=True, what="the two modality names (x, y)")}
