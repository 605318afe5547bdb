"""DEEP R and soft DEEP R (Bellec et al., ICLR 2018) as wrappers around any torch optimiser.

Every potential connection ``k`` of a rewired weight has a fixed sign ``s_k ∈ {−1, +1}`` and a
parameter ``θ_k``; the weight is ``w_k = s_k·θ_k`` while ``θ_k > 0`` (active) and 0 otherwise
(dormant). The weight tensor itself stores ``s·θ`` on active entries and 0 on dormant ones, and its
mask buffer (:mod:`ranvier.sparse.masks`) marks the active entries, so the layers, the metrics and
the checkpoints need nothing else. One DEEP R step (SCIENCE.md §2.2)::

    active k:  θ_k ← θ_k − η·∂E/∂θ_k − η·α_L1 + sqrt(2ηT)·ν_k,   ν_k ~ N(0, 1),  ∂E/∂θ_k = s_k·∂E/∂w_k
    dormant k: not updated
    θ_k ≤ 0 → dormant;  then K − #active dormant connections, drawn uniformly, get θ = ε.

The gradient term is the wrapped optimiser's own update (Adam in LSNN): an elementwise optimiser
commutes with flipping the sign of a coordinate, so stepping ``w = s·θ`` is stepping ``θ`` with
the sign-corrected gradient. Its update of dormant entries (momentum) is undone (the
*disconnection guard*), so a dormant connection changes only when it is reconnected.
"""
from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import torch
from torch import Tensor, nn

from .masks import get_mask, maskable_weights, set_mask

__all__ = ["DeepR", "SoftDeepR", "dale_signs", "OptimizerWrapper"]

#: What a wrapper accepts as the weights to act on: a model (its maskable weights, readouts
#: excluded), a ``{name: (module, param_name)}`` dict, or a list of ``(module, param_name)``.
Weights = Union[nn.Module, Mapping[str, tuple[nn.Module, str]], Sequence[tuple[nn.Module, str]]]


def _resolve(weights: Weights) -> list[tuple[str, nn.Module, str]]:
    if isinstance(weights, nn.Module):
        pairs = list(maskable_weights(weights).items())
    elif isinstance(weights, Mapping):
        pairs = list(weights.items())
    else:
        pairs = [(f"{type(m).__name__}.{n}", (m, n)) for m, n in weights]
    if not pairs:
        raise ValueError("no weights to act on: rewiring and pruning need ranvier layers that compute with masks "
                         "(LIF/ALIF, EGRU, MaskedLinear, readouts); torch nn.GRU/nn.LSTM ignore masks")
    out = []
    for name, (module, param_name) in pairs:
        weight = getattr(module, param_name, None)
        if not isinstance(weight, nn.Parameter):
            raise TypeError(f"{name}: {type(module).__name__}.{param_name} is not a parameter")
        out.append((name, module, param_name))
    return out


def dale_signs(n: int, excitatory: float = 0.8, *, generator: torch.Generator | None = None) -> Tensor:
    """Dale's law: one sign per presynaptic neuron, ``+1`` for a random ``excitatory`` fraction.

    Pass it as a weight's entry of ``signs`` to :class:`DeepR`: a vector of length ``in_features``
    gives every outgoing connection of presynaptic neuron ``j`` (column ``j``) the sign ``s_j``.

    Example::

        >>> s = dale_signs(10, 0.8, generator=torch.Generator().manual_seed(0))
        >>> int((s > 0).sum()), int((s < 0).sum())
        (8, 2)
    """
    if not 0.0 <= excitatory <= 1.0:
        raise ValueError(f"excitatory must be in [0, 1], got {excitatory}")
    signs = -torch.ones(n)
    signs[torch.randperm(n, generator=generator)[: round(excitatory * n)]] = 1.0
    return signs


class OptimizerWrapper(abc.ABC):
    """Forwards the optimiser interface (``param_groups``, ``state``, ``zero_grad``) to ``optimizer``.

    ``state_dict()`` is the wrapped optimiser's, with the wrapper's own per-weight tensors added
    to the state entries of those weights under names starting with ``_extra_prefix``, so that a
    checkpoint written by :func:`ranvier.checkpoint.save_checkpoint` restores them too.
    """

    _extra_prefix = "sparse_"

    def __init__(self, optimizer: torch.optim.Optimizer, weights: Weights) -> None:
        self.optimizer = optimizer
        self.targets = _resolve(weights)
        index, group_of = {}, {}
        for g, group in enumerate(optimizer.param_groups):
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                group_of[id(p)] = g
        # group *positions*, not the dicts: load_state_dict replaces the optimiser's group dicts
        self._index, self._group_index = [], []
        for name, module, param_name in self.targets:
            weight = getattr(module, param_name)
            if id(weight) not in index:
                raise ValueError(f"{name} is not among the optimiser's parameters")
            self._index.append(index[id(weight)])
            self._group_index.append(group_of[id(weight)])

    def _lr(self, i: int) -> float:
        """The current learning rate of target ``i``'s param group (schedules change it)."""
        return float(self.optimizer.param_groups[self._group_index[i]]["lr"])

    # -- the optimiser interface ----------------------------------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], float] | None = None) -> Any:
        loss = self.optimizer.step(closure)
        with torch.no_grad():
            self._after_step()
        return loss

    @abc.abstractmethod
    def _after_step(self) -> None:
        """What the wrapper does to the weights after every inner optimiser step (under no_grad)."""

    # -- checkpoints ----------------------------------------------------------------------------
    def _extra_state(self) -> list[dict[str, Any]]:
        """Per target: ``{name: tensor or number}`` to save (names start with ``_extra_prefix``)."""
        return [{} for _ in self.targets]

    def _load_extra_state(self, extras: list[dict[str, Any]]) -> None:
        """Restore what :meth:`_extra_state` saved."""

    def state_dict(self) -> dict[str, Any]:
        state = self.optimizer.state_dict()
        entries = dict(state["state"])  # copy: the inner dicts are the optimiser's live state
        for index, extra in zip(self._index, self._extra_state()):
            entries[index] = {**entries.get(index, {}), **extra}
        return {"state": entries, "param_groups": state["param_groups"]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        entries = {int(k): dict(v) for k, v in state_dict["state"].items()}
        extras = []
        for index in self._index:
            entry = entries.get(index, {})
            extras.append({k: entry.pop(k) for k in [k for k in entry if k.startswith(self._extra_prefix)]})
        entries = {k: v for k, v in entries.items() if v}  # an entry holding only extras: fresh optimiser state
        missing = [name for (name, _, _), extra in zip(self.targets, extras) if not extra]
        if missing:
            raise ValueError(f"the optimiser state has no {type(self).__name__} state for {', '.join(missing)}")
        self.optimizer.load_state_dict({"state": entries, "param_groups": state_dict["param_groups"]})
        self._load_extra_state(extras)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.optimizer!r}, weights={[n for n, _, _ in self.targets]})"


def _initial_signs(weight: Tensor, signs: Tensor | None) -> Tensor:
    """Fixed signs: given (a full tensor, or one per presynaptic neuron = column), else sign(w)."""
    if signs is None:
        s = torch.sign(weight.detach())
        zero = s == 0  # exact zeros (e.g. already masked entries): a random sign
        s[zero] = torch.randint(0, 2, (int(zero.sum()),), device=s.device).to(s.dtype) * 2 - 1
        return s
    signs = torch.as_tensor(signs, dtype=weight.dtype, device=weight.device)
    if signs.dim() == 1 and weight.dim() == 2 and signs.shape[0] == weight.shape[1]:
        signs = signs.expand_as(weight)
    if tuple(signs.shape) != tuple(weight.shape):
        raise ValueError(f"signs of shape {tuple(signs.shape)} fit neither the weight {tuple(weight.shape)} "
                         f"nor its {weight.shape[-1]} presynaptic neurons")
    if not bool(((signs == 1) | (signs == -1)).all()):
        raise ValueError("signs must be +1 or -1")
    return signs.clone()


def _choose(candidates: Tensor, n: int) -> Tensor:
    """``n`` flat indices drawn uniformly without replacement among the True entries of ``candidates``."""
    pool = candidates.flatten().nonzero().squeeze(1)
    return pool[torch.randperm(pool.numel(), device=pool.device)[:n]]


class DeepR(OptimizerWrapper):
    """DEEP R: rewiring with exactly ``K`` active connections, around any elementwise optimiser.

    After every ``optimizer.step()`` of the wrapped optimiser (which computes the gradient term
    of the update from the sign-corrected gradient), for every rewired weight:

    1. disconnection guard: entries dormant before the step are reset to 0;
    2. entries active before the step: ``θ ← θ − lr·l1 + sqrt(2·lr·T)·N(0, 1)`` (``lr`` the
       current learning rate of the weight's param group);
    3. every ``θ ≤ 0`` becomes dormant (``w = 0``, mask 0);
    4. reconnection: dormant entries drawn uniformly at random get ``θ = epsilon`` until the
       number of active entries is ``K`` again: per weight (``budget="per_matrix"``, the
       official MNIST script) or over all weights together (``budget="global"``, LSNN's
       wrapper: the missing connections are shared out by a categorical draw with probabilities
       ∝ each weight's own ``K_m``).

    Signs are fixed at construction: ``signs[i]`` if given (a full ±1 tensor, or one sign per
    presynaptic neuron for Dale's law, see :func:`dale_signs`), else the sign of the initial
    weight. Construction draws the initial ``K_m = round(p_m · #allowed)`` active entries of each
    weight uniformly among its allowed entries (those its existing mask allows, e.g. no
    self-connections) with ``θ = |w_init|`` (LSNN: ``|N(0, 1)|/sqrt(n_in)``), and installs the
    masks. Randomness comes from torch's global generator (which checkpoints restore).

    Args:
        optimizer: any torch optimiser whose update is elementwise (SGD, Adam, AdamW, RMSprop...).
        weights: the weights to rewire (see :data:`Weights`; a model means its maskable weights,
            readouts excluded, as in LSNN).
        connectivity: fraction ``p`` of allowed connections kept active, one for all weights or
            one per weight.
        l1: ``α_L1``, the L1 prior on active ``θ`` (LSNN-official: 1e-2 with Adam).
        temperature: ``T`` of the Langevin noise (0: none).
        budget: ``"global"`` or ``"per_matrix"``.
        epsilon: ``θ`` of a reconnected entry (the official code: 1e-12).
        signs: optional per-weight signs (``None`` entries: sign of the initial weight).

    Example::

        >>> from ranvier import ALIF
        >>> layer = ALIF(3, 10)
        >>> opt = DeepR(torch.optim.Adam(layer.parameters(), lr=1e-2), layer, connectivity=0.2, l1=1e-4)
        >>> opt.active_counts() == opt.budgets
        True
        >>> out, _ = layer(torch.rand(5, 2, 3))
        >>> out.sum().backward(); opt.step(); opt.zero_grad()
        >>> opt.active_counts() == opt.budgets
        True
    """

    _extra_prefix = "deepr_"

    def __init__(self, optimizer: torch.optim.Optimizer, weights: Weights, connectivity: float | Sequence[float],
                 *, l1: float = 0.0, temperature: float = 0.0, budget: str = "global", epsilon: float = 1e-12,
                 signs: Sequence[Tensor | None] | None = None) -> None:
        super().__init__(optimizer, weights)
        n = len(self.targets)
        p = [float(connectivity)] * n if isinstance(connectivity, (int, float)) else [float(c) for c in connectivity]
        if len(p) != n:
            raise ValueError(f"{len(p)} connectivities for {n} weights")
        if any(not 0.0 < c <= 1.0 for c in p):
            raise ValueError(f"connectivity must be in (0, 1], got {p}")
        if l1 < 0 or temperature < 0 or epsilon <= 0:
            raise ValueError(f"need l1 >= 0, temperature >= 0, epsilon > 0; got {l1}, {temperature}, {epsilon}")
        if budget not in ("global", "per_matrix"):
            raise ValueError(f"budget must be 'global' or 'per_matrix', got {budget!r}")
        signs = list(signs) if signs is not None else [None] * n
        if len(signs) != n:
            raise ValueError(f"{len(signs)} sign tensors for {n} weights")
        self.l1, self.temperature, self.budget, self.epsilon = l1, temperature, budget, epsilon
        self.signs: list[Tensor] = []
        self.allowed: list[Tensor] = []
        self.budgets: list[int] = []
        with torch.no_grad():
            for (name, module, param_name), c, s in zip(self.targets, p, signs):
                weight = getattr(module, param_name)
                mask = get_mask(module, param_name)
                allowed = torch.ones_like(weight, dtype=torch.bool) if mask is None else mask != 0
                sign = _initial_signs(weight, s)
                k = round(c * int(allowed.sum()))
                if k < 1:
                    raise ValueError(f"{name}: connectivity {c} keeps no connection of {int(allowed.sum())}")
                theta = weight.abs().clamp_min(epsilon)
                active = torch.zeros_like(allowed)
                active.view(-1)[_choose(allowed, k)] = True
                weight.copy_(sign * theta)
                set_mask(module, param_name, active)  # zeroes the dormant entries
                self.signs.append(sign)
                self.allowed.append(allowed)
                self.budgets.append(k)

    def active_counts(self) -> list[int]:
        """Number of active connections of each rewired weight (its mask's non-zeros)."""
        return [int(get_mask(m, n).count_nonzero()) for _, m, n in self.targets]

    def _after_step(self) -> None:
        actives = []
        for i, (_, module, param_name) in enumerate(self.targets):
            weight, mask = getattr(module, param_name), get_mask(module, param_name)
            was_active = mask != 0
            theta = (self.signs[i] * weight) * was_active  # disconnection guard: dormant θ stay 0
            lr = self._lr(i)
            theta -= lr * self.l1 * was_active
            if self.temperature > 0:
                theta += math.sqrt(2 * lr * self.temperature) * torch.randn_like(theta) * was_active
            actives.append(theta > 0)
            weight.copy_(self.signs[i] * theta * actives[-1])
        self._reconnect(actives)
        for i, (_, module, param_name) in enumerate(self.targets):
            get_mask(module, param_name).copy_(actives[i])

    def _reconnect(self, actives: list[Tensor]) -> None:
        counts = [int(a.sum()) for a in actives]
        if self.budget == "per_matrix":
            missing = [k - c for k, c in zip(self.budgets, counts)]
        else:
            missing = self._share_out(sum(self.budgets) - sum(counts), actives)
        for i, n in enumerate(missing):
            if n <= 0:
                continue
            flat = _choose(self.allowed[i] & ~actives[i], n)
            actives[i].view(-1)[flat] = True
            weight = getattr(self.targets[i][1], self.targets[i][2])
            weight.view(-1)[flat] = self.signs[i].reshape(-1)[flat] * self.epsilon

    def _share_out(self, total: int, actives: list[Tensor]) -> list[int]:
        """Split ``total`` reconnections across weights by a categorical draw ∝ K_m (LSNN), never
        giving a weight more than it has dormant allowed entries (the excess is drawn again)."""
        room = [int((allowed & ~active).sum()) for allowed, active in zip(self.allowed, actives)]
        shares = [0] * len(actives)
        probs = torch.tensor(self.budgets, dtype=torch.float64)
        while total > 0:
            free = torch.tensor([r - s > 0 for r, s in zip(room, shares)])
            weights = probs * free
            draws = torch.multinomial(weights, total, replacement=True)
            total = 0
            for i, got in enumerate(torch.bincount(draws, minlength=len(shares)).tolist()):
                take = min(got, room[i] - shares[i])
                shares[i] += take
                total += got - take
        return shares

    def _extra_state(self) -> list[dict[str, Any]]:
        return [{"deepr_sign": s.to(torch.int8), "deepr_allowed": a.to(torch.uint8)}
                for s, a in zip(self.signs, self.allowed)]

    def _load_extra_state(self, extras: list[dict[str, Any]]) -> None:
        for i, extra in enumerate(extras):
            weight = getattr(self.targets[i][1], self.targets[i][2])
            self.signs[i] = extra["deepr_sign"].to(dtype=weight.dtype, device=weight.device)
            self.allowed[i] = extra["deepr_allowed"].to(device=weight.device) != 0


class SoftDeepR(OptimizerWrapper):
    """Soft DEEP R (SCIENCE.md §2.2): no fixed ``K``; dormant ``θ`` diffuse and may come back.

    ``θ`` is kept for every entry (dormant ones are ≤ 0, so the weight cannot hold them). After
    every step of the wrapped optimiser, for every weight::

        active (θ > 0 before the step): θ ← θ − η·∂E/∂θ − η·α_L1 + sqrt(2ηT)·ν   (the optimiser's update)
        dormant:                        θ ← θ + sqrt(2ηT)·ν                        (noise only)
        θ ← max(θ, θ_min);   w = s·θ where θ > 0, else 0

    ``theta_min < 0`` bounds how far a dormant connection can drift away (the official script
    sets it by a rule of thumb from ``T`` and ``α_L1``; the unofficial PyTorch port uses
    ``−3·α_L1``). Construction makes a random ``connectivity`` fraction of the allowed entries
    active with ``θ = |w|`` and gives the others ``θ = 0``. Signs as in :class:`DeepR`.

    Example::

        >>> from ranvier.layers import MaskedLinear
        >>> layer = MaskedLinear(20, 20)
        >>> opt = SoftDeepR(torch.optim.SGD(layer.parameters(), lr=0.05), {"w": (layer, "weight")},
        ...                 l1=1e-4, temperature=1e-4, theta_min=-0.01, connectivity=0.5)
        >>> layer(torch.randn(4, 20)).sum().backward(); opt.step()
        >>> bool((opt.theta[0] >= -0.01).all())
        True
    """

    _extra_prefix = "softdeepr_"

    def __init__(self, optimizer: torch.optim.Optimizer, weights: Weights, *, l1: float, temperature: float,
                 theta_min: float, connectivity: float = 1.0, signs: Sequence[Tensor | None] | None = None) -> None:
        super().__init__(optimizer, weights)
        if theta_min >= 0:
            raise ValueError(f"theta_min must be negative, got {theta_min}")
        if l1 < 0 or temperature < 0:
            raise ValueError(f"need l1 >= 0 and temperature >= 0; got {l1}, {temperature}")
        if not 0.0 < connectivity <= 1.0:
            raise ValueError(f"connectivity must be in (0, 1], got {connectivity}")
        n = len(self.targets)
        signs = list(signs) if signs is not None else [None] * n
        if len(signs) != n:
            raise ValueError(f"{len(signs)} sign tensors for {n} weights")
        self.l1, self.temperature, self.theta_min = l1, temperature, theta_min
        self.signs: list[Tensor] = []
        self.allowed: list[Tensor] = []
        self.theta: list[Tensor] = []
        with torch.no_grad():
            for (_, module, param_name), s in zip(self.targets, signs):
                weight = getattr(module, param_name)
                mask = get_mask(module, param_name)
                allowed = torch.ones_like(weight, dtype=torch.bool) if mask is None else mask != 0
                sign = _initial_signs(weight, s)
                active = torch.zeros_like(allowed)
                active.view(-1)[_choose(allowed, round(connectivity * int(allowed.sum())))] = True
                theta = weight.abs() * active
                weight.copy_(sign * theta)
                set_mask(module, param_name, active & (theta > 0))
                self.signs.append(sign)
                self.allowed.append(allowed)
                self.theta.append(theta)

    def _after_step(self) -> None:
        for i, (_, module, param_name) in enumerate(self.targets):
            weight, mask = getattr(module, param_name), get_mask(module, param_name)
            was_active = mask != 0
            lr = self._lr(i)
            # active θ take the optimiser's update; dormant θ keep theirs (the guard)
            theta = torch.where(was_active, self.signs[i] * weight - lr * self.l1, self.theta[i])
            if self.temperature > 0:
                theta += math.sqrt(2 * lr * self.temperature) * torch.randn_like(theta)
            theta.clamp_(min=self.theta_min)
            theta *= self.allowed[i]  # entries the structure forbids stay at 0 (dormant)
            self.theta[i] = theta
            active = theta > 0
            weight.copy_(self.signs[i] * theta * active)
            mask.copy_(active)

    def _extra_state(self) -> list[dict[str, Any]]:
        return [{"softdeepr_sign": s.to(torch.int8), "softdeepr_allowed": a.to(torch.uint8), "softdeepr_theta": t}
                for s, a, t in zip(self.signs, self.allowed, self.theta)]

    def _load_extra_state(self, extras: list[dict[str, Any]]) -> None:
        for i, extra in enumerate(extras):
            weight = getattr(self.targets[i][1], self.targets[i][2])
            self.signs[i] = extra["softdeepr_sign"].to(dtype=weight.dtype, device=weight.device)
            self.allowed[i] = extra["softdeepr_allowed"].to(device=weight.device) != 0
            self.theta[i] = extra["softdeepr_theta"].to(dtype=weight.dtype, device=weight.device)
