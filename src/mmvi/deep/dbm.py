"""Training the multimodal DBM (``model=mdbm``) by approximate maximum likelihood: the deep NLL arm.

Stages of ``python -m mmvi.deep.pipeline model=mdbm``: (a) ``pathway_<m>_<l>``, the pathway RBMs
pre-trained greedily with doubled inputs (``stages.pathway``); (b) ``top``, the joint RBM over the
pathway outputs, pre-trained like a pathway layer (``stages.pathway``'s objective and optimiser,
``stages.top``'s epochs and batch size; the ``objective`` and ``optim`` groups configure the
MDRNN's top layer only); (c) ``joint``, the composed DBM trained by :class:`DBMLikelihood`
(``stages.joint``). The estimator — mean-field data term, persistent block-Gibbs model term —
and its surrogate loss: docs/design.md §3.7 (Salakhutdinov & Hinton, AISTATS 2009, Algorithm 1).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import Tensor

from mmvi.constraints import INT1, check_arguments
from mmvi.errors import ConfigError
from mmvi.lit.module import MultimodalLitModule
from mmvi.models.dbm import JOINT, MultimodalDBM
from mmvi.objectives.base import Objective
from mmvi.utils import deep_merge

JOINT_STAGE = "joint"
JOINT_ESTIMATOR = "mmvi.deep.dbm.DBMLikelihood"


class DBMLikelihood(Objective):
    """Mean-field positive phase, persistent-chain negative phase (docs/design.md §3.7).

    Args:
        n_chains: persistent Gibbs chains (fantasy particles; the reference code uses 100).
        gibbs_steps: block-Gibbs sweeps of the chains per update (the reference uses 5).
        sparsity_weight, sparsity_target: the :class:`Objective` penalty on the joint layer's
            mean-field means (0 disables it).

    The positive phase runs the model's ``mf_steps`` (and ``mf_tol``). The chains start, at the
    first update, from the first batch's mean-field state (rows repeated up to ``n_chains``) after
    one Gibbs sweep.

    Raises:
        ValueError: ``n_chains`` or ``gibbs_steps`` below 1; :meth:`setup` with a model that is
            not a :class:`MultimodalDBM`.
    """

    constraints = {"n_chains": INT1, "gibbs_steps": INT1}

    def __init__(self, n_chains: int = 100, gibbs_steps: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        check_arguments(self, n_chains=n_chains, gibbs_steps=gibbs_steps)
        self.n_chains = int(n_chains)
        self.gibbs_steps = int(gibbs_steps)
        self.chain_names: list[str] = []
        self._mf_steps = 10

    @property
    def native_inference_steps(self) -> int:
        """The DBM's own inference: the mean-field steps of its positive phase."""
        return self._mf_steps

    def setup(self, model: MultimodalDBM) -> None:
        if not isinstance(model, MultimodalDBM):
            raise ValueError(
                f"{type(self).__name__} trains a multimodal DBM (model=mdbm in python -m mmvi.deep.pipeline), "
                f"not a {type(model).__name__}"
            )
        super().setup(model)
        self._mf_steps = model.mf_steps
        self.chain_names = [n.name for n in model.nodes]
        for i, node in enumerate(model.nodes):
            self.register_buffer(f"chain_{i}", torch.zeros(self.n_chains, node.size, dtype=model.c.dtype))
        self.register_buffer("chains_ready", torch.zeros((), dtype=torch.bool))

    def chains(self) -> dict[str, Tensor]:
        """The persistent state ``{layer name: (n_chains, size)}``."""
        return {name: getattr(self, f"chain_{i}") for i, name in enumerate(self.chain_names)}

    @torch.no_grad()
    def negative_phase(self, model: MultimodalDBM, positive: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Advance the chains ``gibbs_steps`` sweeps; return the last sweep's statistics."""
        if not bool(self.chains_ready):
            rows = torch.arange(self.n_chains, device=model.c.device) % next(iter(positive.values())).shape[0]
            start, _ = model.gibbs_step({k: x[rows] for k, x in positive.items()})
            for k, x in self.chains().items():
                x.copy_(start[k])
            self.chains_ready.fill_(True)
        state, stats = self.chains(), {}
        for _ in range(self.gibbs_steps):
            state, stats = model.gibbs_step(state)
        for k, x in self.chains().items():
            x.copy_(state[k])
        return stats

    def terms(self, model: MultimodalDBM, v: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None, dict]:
        model.check_visibles(v)
        missing = [m for m in model.names if m not in v]
        if missing:
            raise ValueError(f"DBM training needs every modality in the batch; missing {missing}")
        with torch.no_grad():
            positive = model.mean_field(dict(v), model.mf_steps, model.mf_tol)
        negative = self.negative_phase(model, positive)
        e_data, e_model = model.energy(positive).mean(), model.energy(negative).mean()
        return e_data - e_model, positive[JOINT], {"energy_data": e_data, "energy_model": e_model}


class DBMLitModule(MultimodalLitModule):
    """:class:`MultimodalLitModule` for a :class:`MultimodalDBM`: SGD over the DBM's parameters.

    The schedule, the non-finite policy, per-epoch seeding and per-rank chains are the parent's;
    weight decay applies to the weight matrices only, and the bias halves merged away by
    :meth:`MultimodalDBM.compose` are not optimised.
    """

    def configure_optimizers(self) -> torch.optim.Optimizer:
        weights, biases = self.model.dbm_parameters()
        return torch.optim.SGD(
            [
                {"params": weights, "weight_decay": float(self.optim["weight_decay"])},
                {"params": biases, "weight_decay": 0.0},
            ],
            lr=float(self.optim["lr"]),
            momentum=float(self.optim["momentum_initial"]),
        )


# ------------------------------------------------------------------------------ pipeline
def top_training(stages: Mapping) -> tuple[dict, dict]:
    """(objective, optimiser) of the joint RBM's pre-training: ``stages.pathway``'s, with ``layers.top``."""
    base = {k: v for k, v in stages["pathway"].items() if k != "layers"}
    s = deep_merge(base, (stages["pathway"].get("layers") or {}).get("top"))
    return s["objective"], s["optim"]


def check_joint_settings(cfg: Mapping, model: MultimodalDBM) -> None:
    """One clear error before any stage trains: ``stages.joint`` must train this DBM.

    Raises:
        ConfigError: ``stages.joint`` missing, an epoch or batch count that is not a whole number
            (epochs >= 0, batch >= 1), or an objective that is not a DBM estimator.
    """
    joint = (cfg.get("stages") or {}).get(JOINT_STAGE)
    if not joint:
        raise ConfigError(
            "model=mdbm needs stages.joint (objective, optim, epochs, batch_size) in conf/deep.yaml"
        )
    for key, low in (("epochs", 0), ("batch_size", 1)):
        value = joint.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"stages.joint.{key}={value!r}; allowed: an integer >= {low}")
    try:
        objective = instantiate(dict(joint["objective"]), _convert_="all")
        objective.setup(model)
    except (InstantiationException, ValueError, TypeError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise ConfigError(
            f"stages.joint.objective must be a DBM estimator ({JOINT_ESTIMATOR}): {reason}"
        ) from None


def train_joint(runner, cfg: Mapping, model: MultimodalDBM, data) -> dict:
    """Stage ``joint``: compose the pre-trained DBM and train it by :class:`DBMLikelihood`.

    ``runner`` is the pipeline's :class:`~mmvi.deep.stages.StageRunner`; ``data(fn, batch_size)``
    builds the stage's data module (the pipeline's ``stage_data``). Returns the stage record.
    """
    s = cfg["stages"][JOINT_STAGE]
    spec = {key: s.get(key) for key in ("objective", "optim", "epochs", "batch_size")}
    spec.update(model=cfg["model"], seed=int(cfg["seed"]), nonfinite=cfg.get("nonfinite"))
    spec.update(unlabelled=bool(cfg["stages"].get("unlabelled", False)))

    def fresh_start(lit: DBMLitModule, dm) -> None:
        lit.model.load_state_dict(model.state_dict())
        lit.model.compose()

    def make_lit() -> DBMLitModule:
        return DBMLitModule(
            cfg["model"], s["objective"], s["optim"], cfg.get("nonfinite"), seed=int(cfg["seed"])
        )

    return runner.run(
        JOINT_STAGE,
        spec,
        module=model,
        make_lit=make_lit,
        trained=lambda lit: lit.model,
        dm=lambda: data(lambda v: v, int(s["batch_size"])),
        epochs=int(s["epochs"]),
        validate=bool(s.get("validate", True)),
        on_fresh_start=fresh_start,
    )
