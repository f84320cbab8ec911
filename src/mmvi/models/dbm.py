"""Multimodal deep Boltzmann machine (Srivastava & Salakhutdinov, NIPS 2012): the deep NLL arm.

The MDRNN's pathways and joint layer (:class:`~mmvi.models.deep.PathwayStack`) read as one DBM:
energy (2.7), the two-block (even/odd distance from the joint layer) structure, pre-training with
doubled inputs (2.8; :class:`PretrainRBM`, Salakhutdinov & Hinton, AISTATS 2009, §3.1), the
composition rule (:meth:`MultimodalDBM.compose`) and mean-field inference
(:meth:`MultimodalDBM.mean_field`): docs/design.md §2.5. :meth:`energy` leaves out a
stepped-sigmoid layer's parameter-free offset term, :meth:`log_unnormalized` includes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmvi.constraints import INT1, Interval, check_arguments
from mmvi.models.deep import PathwayStack
from mmvi.models.mrbm import MultimodalRBM, Visibles
from mmvi.models.units import Units

PRETRAIN_TARGET = "mmvi.models.dbm.PretrainRBM"
JOINT = "joint"


class ScaledInput:
    """A unit type whose total input is multiplied by κ (a doubled input: κ = 2).

        mean(a) = g(κa),  sample(a) ~ P(· | κa),  log_prob(v, a) = log P(v | κa),
        log_partition(a) = log_partition₀(κa) / κ,  energy(v, b) = energy₀(v, b).

    As a hidden type, F(v) = Σ E − Σ_k log_partition(c + Wᵀv) has the gradient −v g(κx)ᵀ: the CD
    statistics of the reference's doubled RBM (``rbm.m``: ``2*vishid``), whichever way an
    estimator forms them. Everything else (``name``, ``hidden_scale``, ``length``, …) is the
    wrapped type's.
    """

    def __init__(self, inner, factor: float) -> None:
        self.inner, self.factor = inner, float(factor)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def mean(self, act: Tensor, *args, **kwargs) -> Tensor:
        return self.inner.mean(self.factor * act, *args, **kwargs)

    def sample(self, act: Tensor, *args, **kwargs) -> Tensor:
        return self.inner.sample(self.factor * act, *args, **kwargs)

    def log_prob_units(self, v: Tensor, act: Tensor) -> Tensor:
        return self.inner.log_prob_units(v, self.factor * act)

    def log_prob(self, v: Tensor, act: Tensor) -> Tensor:
        return self.log_prob_units(v, act).sum(-1)

    def log_partition(self, x: Tensor) -> Tensor:
        return self.inner.log_partition(self.factor * x) / self.factor

    def __repr__(self) -> str:
        return f"ScaledInput({self.inner!r}, factor={self.factor:g})"


def unscaled(units):
    """The unit type under a :class:`ScaledInput` (the type itself otherwise)."""
    return units.inner if isinstance(units, ScaledInput) else units


class PretrainRBM(MultimodalRBM):
    """RBM of greedy DBM pre-training with doubled inputs (docs/design.md §2.5; S&H 2009 §3.1).

        E[h | v] = f(κ_up (c·D + Σ_m W_mᵀ v_m)),        E[v_m | h] = g_m(κ_m (b_m + W_m h)),
        F(v)     = Σ_m E_m(v_m) − (1/κ_up) Σ_k log Σ_h exp(h κ_up x_k)

    (the hidden and visible unit types wrapped in :class:`ScaledInput`). The free energy is the
    surrogate whose CD gradient is the reference's update (statistics ⟨v f(κ_up x)ᵀ⟩ of the data
    and of the reconstructions); κ = 1 everywhere is a plain :class:`MultimodalRBM`.

    Args: those of :class:`MultimodalRBM`, and
        up_factor: κ_up, the factor of the hidden units' input (1 or 2).
        down_factors: ``{modality: κ_m}``, the factor of each visible modality's input (default 1).

    Raises:
        ValueError: a factor that is not positive, or a factor for an unknown modality.
    """

    def __init__(
        self,
        modalities: Mapping[str, Mapping],
        n_hidden: int,
        init_std: float = 0.01,
        hidden_units: str | Mapping = "bernoulli",
        up_factor: float = 1.0,
        down_factors: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(modalities, n_hidden, init_std, hidden_units)
        down = dict(down_factors or {})
        unknown = set(down) - set(self.names)
        if unknown:
            raise ValueError(
                f"down_factors name unknown modalities {sorted(unknown)}; the RBM has {self.names}"
            )
        self.up_factor = float(up_factor)
        self.down_factors = {m: float(down.get(m, 1.0)) for m in self.names}
        if self.up_factor <= 0 or any(k <= 0 for k in self.down_factors.values()):
            raise ValueError(f"pre-training factors must be positive, got {up_factor}, {down}")
        if self.up_factor != 1.0:
            self.hidden = ScaledInput(self.hidden, self.up_factor)
        for m, k in self.down_factors.items():
            if k != 1.0:
                self.units[m] = ScaledInput(self.units[m], k)

    @torch.no_grad()
    def init_visible_bias_from_data(self, means: Mapping[str, Tensor]) -> None:
        """The data-derived bias is the full input κ_m b_m of the visible units."""
        super().init_visible_bias_from_data(means)
        for m in means:
            self.b[m].div_(self.down_factors[m])

    def extra_repr(self) -> str:
        factors = ", ".join(f"{m}:{k:g}" for m, k in self.down_factors.items())
        return f"{super().extra_repr()}, up_factor={self.up_factor:g}, down_factors=[{factors}]"


@dataclass(frozen=True)
class Node:
    """One layer of the DBM: ``<modality>:<depth>`` (depth 0 = the data) or the joint layer."""

    name: str
    modality: str | None
    depth: int  # position in the pathway (0 = visible); -1 for the joint layer
    parity: int  # distance from the joint layer, mod 2
    size: int

    @property
    def visible(self) -> bool:
        return self.depth == 0


class MultimodalDBM(PathwayStack):
    """The pathways and joint layer as one deep Boltzmann machine (docs/design.md §2.5).

    Args: those of :class:`~mmvi.models.deep.PathwayStack`, and
        mf_steps: mean-field steps of the positive phase and of the model's own (native) inference
            (the reference ``dbm_mf.m`` uses 10).
        mf_tol: stop the positive phase's mean-field earlier when the largest mean absolute change
            of a layer is below this (None: always ``mf_steps``).

    Raises:
        ValueError: ``mf_steps < 1`` or a negative ``mf_tol`` (and the errors of the pathway specs).
    """

    constraints = {"mf_steps": INT1, "mf_tol": Interval(0, allow_none=True)}

    def __init__(
        self,
        modalities: Mapping[str, Mapping],
        n_joint: int,
        pathways: Mapping[str, Mapping] | None = None,
        default_pathway: Mapping | None = None,
        init_std: float = 0.01,
        mf_steps: int = 10,
        mf_tol: float | None = None,
    ) -> None:
        super().__init__(modalities, n_joint, pathways, default_pathway, init_std)
        check_arguments(self, mf_steps=mf_steps, mf_tol=mf_tol)
        self.mf_steps = int(mf_steps)
        self.mf_tol = None if mf_tol is None else float(mf_tol)
        self.depth = {m: len(self.layers[m]) for m in self.names}
        nodes = []
        for m in self.names:
            L = self.depth[m]
            sizes = [self.sizes[m]] + [layer.n_hidden for layer in self.layers[m]]
            nodes += [Node(f"{m}:{k}", m, k, (L - k + 1) % 2, sizes[k]) for k in range(L + 1)]
        nodes.append(Node(JOINT, None, -1, 0, self.top.n_hidden))
        self.nodes: list[Node] = nodes
        self.node = {n.name: n for n in nodes}

    def configure_layers(self) -> None:
        """Pre-training RBMs with the doubled inputs of DBM pre-training (docs/design.md §2.5)."""
        for m, configs in self.layer_configs.items():
            for i, cfg in enumerate(configs):
                cfg.update(_target_=PRETRAIN_TARGET, up_factor=2.0, down_factors={m: 1.0 if i == 0 else 2.0})
        self.top_config.update(
            _target_=PRETRAIN_TARGET,
            up_factor=1.0,
            down_factors={m: 2.0 if self.layer_configs[m] else 1.0 for m in self.names},
        )

    # ------------------------------------------------------------ parameters
    def weight(self, m: str, k: int) -> Tensor:
        """W_mˡ, shape (size of x_mˡ⁻¹, size of x_mˡ); l = L_m + 1 is the joint weight W_mᴶ."""
        return self.top.W[m] if k == self.depth[m] + 1 else self.layers[m][k - 1].W[m]

    def _upper_bias(self, m: str, k: int) -> Tensor:
        """Visible bias of layer x_mˡ in the RBM above it (the bias half merged by :meth:`compose`)."""
        return self.top.b[m] if k == self.depth[m] else self.layers[m][k].b[m]

    def bias(self, node: Node) -> Tensor:
        """The DBM bias of a layer: a_m⁰, a_mˡ = (RBM below).c + (RBM above).b, or c."""
        if node.name == JOINT:
            return self.top.c
        m, k = node.modality, node.depth
        if k == 0:
            return self.layers[m][0].b[m] if self.depth[m] else self.top.b[m]
        return self.layers[m][k - 1].c + self._upper_bias(m, k)

    def node_units(self, node: Node) -> Units:
        """The layer's unit type in the DBM (the pre-training RBMs' doubling removed)."""
        if node.name == JOINT:
            return unscaled(self.top.hidden)
        if node.visible:
            return self.units[node.modality]
        return unscaled(self.layers[node.modality][node.depth - 1].hidden)

    @torch.no_grad()
    def compose(self) -> None:
        """Move the upper half of every hidden pathway layer's bias into the lower one (DBM unchanged).

        The DBM's parameters are the pre-training RBMs' (one per pipeline stage): W_mˡ =
        ``layers[m][l-1].W[m]``, W_mᴶ = ``top.W[m]``, c = ``top.c``, a_m⁰ = ``layers[m][0].b[m]``
        (``top.b[m]`` when L = 0), and a hidden pathway layer's bias a_mˡ = ``layers[m][l-1].c`` +
        the visible bias of the RBM above it (the reference's ``dbm_mf.m``: ``hidbiases +
        visbiases_l2``); after this call joint training updates one bias per layer.
        """
        for m in self.names:
            for k in range(1, self.depth[m] + 1):
                upper = self._upper_bias(m, k)
                self.layers[m][k - 1].c.add_(upper)
                upper.zero_()

    def dbm_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(weights, biases) of the DBM: every W, then a_m⁰, the hidden layers' a_mˡ and c.

        The bias halves that :meth:`compose` merges away (the visible biases of the RBMs above the
        first pathway layer) are left out: joint training keeps them at zero.
        """
        weights = [self.weight(m, k) for m in self.names for k in range(1, self.depth[m] + 2)]
        biases = []
        for m in self.names:
            biases.append(self.layers[m][0].b[m] if self.depth[m] else self.top.b[m])
            biases += [layer.c for layer in self.layers[m]]
        biases.append(self.top.c)
        return weights, biases

    # ------------------------------------------------------------ conditionals
    def _below(self, node: Node) -> list[tuple[Node, Tensor]]:
        """Neighbours below ``node`` with the weights (rows: the neighbour's units)."""
        if node.name == JOINT:
            return [(self.node[f"{m}:{self.depth[m]}"], self.top.W[m]) for m in self.names]
        if node.depth == 0:
            return []
        m = node.modality
        return [(self.node[f"{m}:{node.depth - 1}"], self.weight(m, node.depth))]

    def _above(self, node: Node) -> Node | None:
        if node.name == JOINT:
            return None
        m = node.modality
        return self.node[JOINT] if node.depth == self.depth[m] else self.node[f"{m}:{node.depth + 1}"]

    def bias_scale(self, node: Node, state: Mapping[str, Tensor]) -> Tensor | float:
        """s of a layer's bias: the length D of a replicated-softmax modality right below it, else 1."""
        scale: Tensor | float = 1.0
        for below, _ in self._below(node):
            if below.visible and below.name in state:
                hs = self.units[below.modality].hidden_scale(state[below.name])
                if not isinstance(hs, float):
                    scale = hs
        return scale

    def node_input(self, node: Node | str, state: Mapping[str, Tensor]) -> Tensor:
        """Total input of a layer given its neighbours' states: s·a + Σ_below xᵀW + Σ_above W x."""
        node = self.node[node] if isinstance(node, str) else node
        x = self.bias(node) * self.bias_scale(node, state)
        for below, W in self._below(node):
            x = x + state[below.name] @ W
        above = self._above(node)
        if above is not None:
            x = x + F.linear(state[above.name], self.weight(node.modality, node.depth + 1))
        return x

    def node_mean(self, node: Node, state: Mapping[str, Tensor], act: Tensor | None = None) -> Tensor:
        """E[x_n | neighbours] (a replicated-softmax layer in ``state`` keeps its length D)."""
        act = self.node_input(node, state) if act is None else act
        units = self.node_units(node)
        if node.visible and units.name == "softmax" and node.name in state:
            return units.mean(act, state[node.name].sum(-1))
        return units.mean(act)

    def node_sample(self, node: Node, state: Mapping[str, Tensor], act: Tensor | None = None) -> Tensor:
        """A draw of x_n | neighbours (a replicated-softmax layer keeps its length D)."""
        act = self.node_input(node, state) if act is None else act
        units = self.node_units(node)
        if node.visible and units.name == "softmax":
            return units.sample(act, state[node.name].sum(-1))
        return units.sample(act)

    def blocks(self, names: list[str] | None = None) -> tuple[list[Node], list[Node]]:
        """(odd block, even block) of the layers in ``names`` (default all); the joint layer is even."""
        nodes = [self.node[n] for n in names] if names is not None else self.nodes
        return [n for n in nodes if n.parity == 1], [n for n in nodes if n.parity == 0]

    # ----------------------------------------------------------------- energy
    def energy(self, state: Mapping[str, Tensor]) -> Tensor:
        """E(x) per example for a state ``{layer name: (B, size)}`` of every layer (docs/design.md §2.5)."""
        e: Tensor | float = 0.0
        for node in self.nodes:
            x = state[node.name]
            if node.visible:
                e = e + self.units[node.modality].energy(x, self.bias(node))
                continue
            e = e - ((self.bias(node) * self.bias_scale(node, state)) * x).sum(-1)
            for below, W in self._below(node):
                e = e - ((state[below.name] @ W) * x).sum(-1)
        return e

    def log_unnormalized(self, v: Mapping[str, Tensor], max_units: int = 20) -> Tensor:
        """log Σ_{hidden layers} exp(−E(v, ·)) per example, exactly (small models).

        The hidden layers of one block are enumerated (they must be binary, at most ``max_units``
        units in all) and those of the other block are summed out analytically: with the
        enumerated ones fixed they are independent, each unit contributing its unit type's
        log-partition of its input (stepped-sigmoid copies and their offsets included).

        Raises:
            ValueError: a modality missing, or no block whose hidden layers are binary and small.
        """
        self.check_visibles(v)
        missing = [m for m in self.names if m not in v]
        if missing:
            raise ValueError(f"log_unnormalized needs every modality; missing {missing}")
        choices = []
        for block, other in (self.blocks(), self.blocks()[::-1]):
            hidden = [n for n in block if not n.visible]
            if all(self.node_units(n).name == "bernoulli" for n in hidden):
                choices.append((sum(n.size for n in hidden), hidden, [n for n in other if not n.visible]))
        choices = [c for c in choices if c[0] <= max_units]
        if not choices:
            raise ValueError(f"no block of binary hidden layers with at most {max_units} units to enumerate")
        k, enumerated, summed = min(choices, key=lambda c: c[0])
        ref = self.c
        codes = torch.arange(2**k, device=ref.device).unsqueeze(-1)
        grid = ((codes >> torch.arange(k, device=ref.device)) & 1).to(ref.dtype)  # (S, k); S = 1 if k = 0
        n_batch, n_states = next(iter(v.values())).shape[0], grid.shape[0]
        state = {f"{m}:0": v[m].repeat_interleave(n_states, 0) for m in self.names}
        start = 0
        for node in enumerated:
            state[node.name] = grid[:, start : start + node.size].repeat(n_batch, 1)
            start += node.size
        for node in summed:
            state[node.name] = torch.zeros(n_batch * n_states, node.size, dtype=ref.dtype, device=ref.device)
        logp = -self.energy(state)
        for node in summed:
            logp = logp + self.node_units(node).log_partition(self.node_input(node, state)).sum(-1)
        return torch.logsumexp(logp.view(n_batch, n_states), dim=1)

    # ------------------------------------------------------------ mean-field
    def initial_state(self, given: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Start of mean-field (docs/design.md §2.5): doubled bottom-up and top-down passes."""
        self.check_visibles(given)
        if not given:
            raise ValueError("mean-field needs at least one given modality")
        state: dict[str, Tensor] = {}
        for m, x in given.items():
            state[f"{m}:0"] = x
            for k in range(1, self.depth[m] + 1):
                node = self.node[f"{m}:{k}"]
                act = self.bias(node) * self.bias_scale(node, state) + 2.0 * (x @ self.weight(m, k))
                x = state[node.name] = self.node_units(node).mean(act)
        missing = [m for m in self.names if m not in given]
        tops = {m: state[f"{m}:{self.depth[m]}"] for m in given}
        scale = self.top.missing_scale(given) if missing else {}
        joint = self.node[JOINT]
        act = self.bias(joint) * self.bias_scale(joint, state)
        for m, x in tops.items():
            act = act + scale.get(m, 1.0) * (x @ self.top.W[m])
        state[JOINT] = self.node_units(joint).mean(act)
        for m in missing:
            self._top_down(m, state)
        return state

    def _top_down(self, m: str, state: dict[str, Tensor]) -> None:
        """Fill pathway m's layers from the joint state down: doubled inputs above the data."""
        for k in range(self.depth[m], -1, -1):
            node = self.node[f"{m}:{k}"]
            above = self._above(node)
            top_down = F.linear(state[above.name], self.weight(m, k + 1))
            if k == 0:
                state[node.name] = self.node_units(node).mean(self.bias(node) + top_down)
            else:
                state[node.name] = self.node_units(node).mean(self.bias(node) + 2.0 * top_down)

    def iterate(
        self, state: dict[str, Tensor], free: list[str], steps: int, tol: float | None = None
    ) -> dict[str, Tensor]:
        """Mean-field block updates of the layers ``free`` (odd block, then even), in place.

        Stops after ``steps`` sweeps or when the largest mean absolute change of a layer in a
        sweep is below ``tol``. Returns ``state``.
        """
        odd, even = self.blocks(free)
        for _ in range(int(steps)):
            change = 0.0
            for block in (odd, even):
                new = {n.name: self.node_mean(n, state) for n in block}
                if tol is not None:
                    for name, x in new.items():
                        change = max(change, float((x - state[name]).detach().abs().mean()))
                state.update(new)
            if tol is not None and change < tol:
                break
        return state

    def mean_field(
        self, given: Mapping[str, Tensor], steps: int | None = None, tol: float | None = None
    ) -> dict[str, Tensor]:
        """Mean-field state ``{layer: means}`` of every layer given the modalities in ``given``.

        ``steps`` defaults to ``mf_steps``; the given modalities are clamped, every other layer
        (hidden layers and missing modalities) is updated (docs/design.md §2.5).
        """
        state = self.initial_state(given)
        free = [n.name for n in self.nodes if not (n.visible and n.modality in given)]
        return self.iterate(state, free, self.mf_steps if steps is None else steps, tol)

    # ------------------------------------------------------------- interface
    def visible_input(self, m: str, h: Tensor, steps: int | None = None) -> Tensor:
        """Input a_m⁰ + W_m¹ μ_m¹ of modality m's units given the joint means h.

        μ is the mean-field of m's pathway (and v_m) with the joint layer clamped at h, ``steps``
        sweeps (default ``mf_steps``) from the doubled top-down pass; at a mean-field fixed point
        of the whole DBM this is the fixed point's own input of v_m.
        """
        state = {JOINT: h}
        self._top_down(m, state)
        free = [f"{m}:{k}" for k in range(self.depth[m] + 1)]
        self.iterate(state, free, (self.mf_steps if steps is None else steps) if self.depth[m] else 0)
        return self.node_input(f"{m}:0", state)

    def visible_mean(self, m: str, h: Tensor) -> Tensor:
        return self.units[m].mean(self.visible_input(m, h))

    def infer_missing(
        self, given: Mapping[str, Tensor], steps: int = 100, tol: float | None = 1e-5
    ) -> tuple[Visibles, Tensor]:
        """Missing modalities' means (given ones unchanged) and the joint means, by mean-field.

        The joint means come from mean-field in the whole DBM (:meth:`mean_field`); each missing
        modality's means are :meth:`visible_mean` of those (the same at a fixed point).
        """
        h = self.mean_field(given, steps, tol)[JOINT]
        v: Visibles = dict(given)
        v.update({m: self.visible_mean(m, h) for m in self.names if m not in given})
        return v, h

    def representation(
        self, given: Mapping[str, Tensor], steps: int = 100, tol: float | None = 1e-5
    ) -> Tensor:
        """Joint layer's mean-field means given the modalities in ``given`` (all or some)."""
        return self.mean_field(given, steps, tol)[JOINT]

    # ------------------------------------------------------------------ Gibbs
    def gibbs_step(self, state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """One block-Gibbs sweep over every layer: the odd block given the even one, then the even one.

        Returns (the new state, its Rao–Blackwellised statistics): the statistics are the new
        state with the even block replaced by its conditional means given the new odd block,
        whose energy gradient is the conditional expectation of the sampled state's.
        """
        odd, even = self.blocks()
        new = dict(state)
        for node in odd:
            new[node.name] = self.node_sample(node, state)
        stats = dict(new)
        for node in even:
            act = self.node_input(node, new)
            stats[node.name] = self.node_mean(node, new, act)
            new[node.name] = self.node_sample(node, new, act)
        return new, stats

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mf_steps={self.mf_steps}"
