"""Deep multimodal model (MDRNN, docs/paper.md §3): modality pathways of RBM layers under one joint layer.

Pathway m is a stack of single-modality RBMs v_m → h_m¹ → … → h_mᴸ; the joint layer is a
:class:`MultimodalRBM` over the pathway tops. With tied weights, mean-field inference is a
recurrent network, eq. (2.6) of docs/design.md §2.4 (T = 0: the feed-forward pass); the
representation is the joint mean. The model exposes the interface the evaluation protocol uses:
``names``, ``sizes``, ``units``, ``c``, ``representation``, ``infer_missing``, ``visible_input``.
"""

from __future__ import annotations

from collections.abc import Mapping

from hydra.utils import get_class
from torch import Tensor, nn

from mmvi.constraints import INT1, POSITIVE, check_arguments
from mmvi.models.mrbm import MODALITIES, MultimodalRBM, Visibles, check_visibles
from mmvi.models.units import UNIT_OPTIONS, Units, make_hidden_units, make_units, observe

RBM_TARGET = "mmvi.models.MultimodalRBM"


def visible_spec(size: int, hidden: str | Mapping) -> dict:
    """Modality spec of a layer seen as the visible layer of the RBM above it."""
    if isinstance(hidden, str):
        return {"size": int(size), "units": hidden}
    options = dict(hidden)
    return {"size": int(size), "units": str(options.pop("type", "bernoulli")), **options}


class PathwayStack(nn.Module):
    """Modality pathways of RBM layers under one joint RBM: the structure shared by the deep models.

    Holds each pathway layer as an RBM (``layers[m][l]``, built from ``layer_configs[m][l]``) and
    the joint RBM (``top``, from ``top_config``); these are the modules the deep pipeline trains
    greedily, stage by stage. :class:`MDRNN` and :class:`mmvi.models.dbm.MultimodalDBM` add their
    own inference.

    Args:
        modalities: the data's ``{name: {"size", "units"}}``.
        n_joint: units of the joint top layer (Bernoulli).
        pathways: per modality ``{"units": optional override, "layers": [{"size", "hidden"}, …]}``;
            ``hidden`` is ``bernoulli`` (default), ``stepped_sigmoid`` or ``{"type", "n_steps"}``.
        default_pathway: used for modalities absent from ``pathways`` (default: no layers, the
            modality feeds the joint layer directly).
        init_std: std of the N(0, init_std²) weight initialisation.
    """

    constraints = {"modalities": MODALITIES, "n_joint": INT1, "init_std": POSITIVE}

    def __init__(
        self,
        modalities: Mapping[str, Mapping],
        n_joint: int,
        pathways: Mapping[str, Mapping] | None = None,
        default_pathway: Mapping | None = None,
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        check_arguments(self, modalities=modalities, n_joint=n_joint, init_std=init_std)
        pathways = dict(pathways or {})
        unknown = set(pathways) - set(modalities)
        if unknown:
            raise ValueError(
                f"model.pathways names unknown modalities {sorted(unknown)}; data: {list(modalities)}"
            )
        self.names: list[str] = list(modalities)
        self.sizes: dict[str, int] = {m: int(spec["size"]) for m, spec in modalities.items()}
        self.units: dict[str, Units] = {}
        self.layer_configs: dict[str, list[dict]] = {}
        top_modalities: dict[str, dict] = {}
        for m, spec in modalities.items():
            path = dict(pathways.get(m, default_pathway or {}))
            vis = {**dict(spec), "units": path.get("units", spec.get("units", "bernoulli"))}
            self.units[m] = make_units(str(vis["units"]), **{k: vis[k] for k in UNIT_OPTIONS if k in vis})
            configs = []
            for layer in path.get("layers", []) or []:
                hidden = layer.get("hidden", "bernoulli")
                make_hidden_units(hidden)  # fail early on a bad unit type
                configs.append(
                    {
                        "_target_": RBM_TARGET,
                        "modalities": {m: vis},
                        "n_hidden": int(layer["size"]),
                        "init_std": float(init_std),
                        "hidden_units": hidden,
                    }
                )
                vis = visible_spec(int(layer["size"]), hidden)
            self.layer_configs[m] = configs
            top_modalities[m] = vis
        self.top_config = {
            "_target_": RBM_TARGET,
            "modalities": top_modalities,
            "n_hidden": int(n_joint),
            "init_std": float(init_std),
        }
        self.configure_layers()
        self.layers = nn.ModuleDict(
            {m: nn.ModuleList([build_rbm(cfg) for cfg in cfgs]) for m, cfgs in self.layer_configs.items()}
        )
        self.top = build_rbm(self.top_config)

    def configure_layers(self) -> None:
        """Adjust ``layer_configs`` and ``top_config`` before their RBMs are built (default: keep them)."""

    # ------------------------------------------------------------- interface
    @property
    def c(self) -> Tensor:
        """Joint-layer bias (also tells the model's device and dtype)."""
        return self.top.c

    @property
    def n_hidden(self) -> int:
        return self.top.n_hidden

    def check_visibles(self, v: Mapping[str, Tensor]) -> None:
        check_visibles(v, self.sizes)

    # ---------------------------------------------------------------- passes
    def up(self, m: str, x: Tensor, n_layers: int | None = None) -> Tensor:
        """Mean activations of the first ``n_layers`` layers of pathway m (default: all)."""
        for layer in list(self.layers[m])[:n_layers]:
            x = layer.hidden_probs({m: x})
        return x

    # ------------------------------------------------------------- structure
    def stage_modules(self) -> dict[str, MultimodalRBM]:
        """``{stage name: RBM}`` in training order: pathway layers ``pathway_<m>_<l>``, then ``top``."""
        out = {f"pathway_{m}_{i + 1}": layer for m in self.names for i, layer in enumerate(self.layers[m])}
        out["top"] = self.top
        return out

    def extra_repr(self) -> str:
        paths = "; ".join(
            f"{m}:{self.sizes[m]}({self.units[m].name})"
            + "".join(f"→{layer.n_hidden}({layer.hidden.name})" for layer in self.layers[m])
            for m in self.names
        )
        return f"pathways=[{paths}], n_joint={self.top.n_hidden}"


class MDRNN(PathwayStack):
    """Modality pathways + joint layer, trained stage-wise and fine-tuned as a recurrent network.

    Args: those of :class:`PathwayStack`.
    """

    def down(self, m: str, h: Tensor) -> Tensor:
        """Input b_1 + W_1 y¹ of modality m's visible units given the joint means h."""
        layers = list(self.layers[m])
        if not layers:
            return self.top.visible_input(m, h)
        y = self.top.visible_mean(m, h)
        for layer in reversed(layers[1:]):
            y = layer.visible_mean(m, y)
        return layers[0].visible_input(m, y)

    def visible_input(self, m: str, h: Tensor) -> Tensor:
        return self.down(m, h)

    def visible_mean(self, m: str, h: Tensor) -> Tensor:
        return self.units[m].mean(self.down(m, h))

    def hidden_probs(self, v: Mapping[str, Tensor]) -> Tensor:
        """Feed-forward joint means with every modality given."""
        return self.top.hidden_probs({m: self.up(m, v[m]) for m in self.names})

    # ------------------------------------------------------------ recurrence
    def mean_field(
        self,
        given: Mapping[str, Tensor],
        steps: int,
        observed: Mapping[str, tuple[Tensor, Tensor]] | None = None,
        tol: float | None = None,
        bptt_steps: int | None = None,
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Unrolled mean-field loop for the modalities absent from ``given`` (docs/design.md §2.4).

        ``observed[m] = (mask, values)`` keeps the units of a missing modality m where mask = 1 at
        their values. Stops after ``steps`` updates of h or when the mean absolute change of the
        missing means is below ``tol``; gradients flow through the last ``bptt_steps`` updates
        (all if None). Returns the final visible inputs ``down_m(h)`` of the missing modalities
        and the final joint means h.
        """
        self.check_visibles(given)
        missing = [m for m in self.names if m not in given]
        if not given:
            raise ValueError("mean_field needs at least one given modality")
        observed = observed or {}
        tops = {m: self.up(m, x) for m, x in given.items()}
        h = self.top.hidden_probs(tops, self.top.missing_scale(given) if missing else None)
        prev: dict[str, Tensor] = {}
        for t in range(steps if missing else 0):
            if bptt_steps is not None and bptt_steps < steps and t == steps - bptt_steps:
                h = h.detach()
            means = {}
            for m in missing:
                mean = self.units[m].mean(self.down(m, h))
                if m in observed:
                    mask, values = observed[m]
                    mean = observe(mean, values, mask)
                means[m] = mean
            h = self.top.hidden_probs({**tops, **{m: self.up(m, x) for m, x in means.items()}})
            if tol is not None and prev:
                change = max(float((means[m] - prev[m]).detach().abs().mean()) for m in missing)
                if change < tol:
                    break
            prev = means
        return {m: self.down(m, h) for m in missing}, h

    def infer_missing(
        self, given: Mapping[str, Tensor], steps: int = 100, tol: float | None = 1e-5
    ) -> tuple[Visibles, Tensor]:
        """Missing modalities' mean-field means (given ones unchanged) and the joint means."""
        acts, h = self.mean_field(given, steps, tol=tol)
        v: Visibles = dict(given)
        v.update({m: self.units[m].mean(a) for m, a in acts.items()})
        return v, h

    def representation(
        self, given: Mapping[str, Tensor], steps: int = 100, tol: float | None = 1e-5
    ) -> Tensor:
        """Joint means: feed-forward with all modalities, else after inferring the missing ones."""
        if all(m in given for m in self.names):
            return self.hidden_probs(given)
        return self.infer_missing(given, steps=steps, tol=tol)[1]

    def top_parameters(self) -> list[nn.Parameter]:
        """Parameters of the top two layers: the joint RBM and each pathway's last layer."""
        params = list(self.top.parameters())
        for m in self.names:
            if len(self.layers[m]):
                params += list(self.layers[m][-1].parameters())
        return params


def build_rbm(cfg: Mapping) -> MultimodalRBM:
    """A :class:`MultimodalRBM` (or the subclass named by ``_target_``) from its config."""
    kwargs = {k: v for k, v in cfg.items() if k != "_target_"}
    return get_class(str(cfg.get("_target_", RBM_TARGET)))(**kwargs)
