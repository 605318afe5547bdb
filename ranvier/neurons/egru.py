"""Event-based gated recurrent unit (EGRU; SCIENCE.md §3).

Default: the form that the reference code (EvNN) actually runs (SCIENCE.md §3.3): a
cuDNN/Haste-style GRU whose reset gate acts after the recurrent matmul, an event output
``y = o·ĉ``, and a reset that subtracts the threshold. The paper form (§3.2, NeurIPS'22 Eq. 1–2)
is available through ``reset="event"`` and ``reset_gate="before"``.

Gate chunks of every ``[3H, ·]`` weight and ``[3H]`` bias are ordered ``[z, r, g]``: update gate
``z`` ("keep old", the paper's ``1 − u``), reset gate ``r``, candidate ``g``. ``torch.nn.GRU``
orders them ``[r, z, n]``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.scan import scan
from ..core.surrogate import PiecewiseLinear, Surrogate
from ..layers.recurrent import check_input
from ..kernels import check_backend
from ..sparse.masks import effective_weight

__all__ = ["EGRUState", "egru_step", "EGRUCell", "EGRU", "activity_sparsity", "backward_sparsity"]

TRACE_DECAY = 0.9  # EvNN's output trace: trace_t = 0.9·trace_{t−1} + 0.1·y_t
THRESHOLD_INITS = ("sigmoid", "beta")
DEFAULT_THRESHOLD_MEAN = {"sigmoid": 0.0, "beta": 0.3}
RESETS = ("threshold", "event")
RESET_GATES = ("after", "before")


class EGRUState(NamedTuple):
    c: Tensor  # [B, H] internal state after the reset (ĉ − o·ϑ; = ĉ with reset="event")
    y: Tensor  # [B, H] graded event output o·ĉ of the step (the recurrent input of the next step)
    o: Tensor  # [B, H] event indicator H(ĉ − ϑ) ∈ {0, 1}
    trace: Tensor  # [B, H] output trace 0.9·trace_{t−1} + 0.1·y_t
    margin: Tensor  # [B, H] ĉ − ϑ: the argument of H and of the pseudo-derivative (never read by
    #                  the step; kept so that backward sparsity can be computed from a trajectory)


def egru_step(
    input_proj: Tensor,
    state: EGRUState,
    *,
    recurrent_weight: Tensor,
    recurrent_bias: Tensor | None,
    threshold: Tensor,
    surrogate: Surrogate = PiecewiseLinear(gamma=0.7, width=1.0),
    reset: str = "threshold",
    reset_gate: str = "after",
    event_gating: bool = True,
    zoneout: float = 0.0,
    zoneout_mask: Tensor | None = None,
) -> tuple[Tensor, EGRUState]:
    """One EGRU step. ``input_proj = x_t W^T + b`` ``[B, 3H]``, chunks ``[z, r, g]``.

    With ``R`` = ``recurrent_weight`` ``[3H, H]``, ``b_R`` = ``recurrent_bias`` and ``ϑ`` =
    ``threshold`` ``[H]``::

        reset_gate="after" (EvNN code):  Rh = y_{t−1} R^T + b_R
                                         z = σ(Wx_z + Rh_z);  r = σ(Wx_r + Rh_r)
                                         g = tanh(Wx_g + r ⊙ Rh_g)
        reset_gate="before" (paper):     z, r as above
                                         g = tanh(Wx_g + (r ⊙ y_{t−1}) R_g^T + b_R,g)
        ĉ = z ⊙ c_{t−1} + (1 − z) ⊙ g                     (computed as lerp(g, c_{t−1}, z))
        zoneout, training (mask given):  ĉ = (ĉ − c_{t−1}) ⊙ mask + c_{t−1}
        zoneout, eval (mask None, p>0):  ĉ = p·c_{t−1} + (1 − p)·ĉ
        reset="event" (paper Eq. 2):     ĉ = ĉ − y_{t−1}
        o = H(ĉ − ϑ)        H(0) = 0; backward: surrogate.derivative(ĉ − ϑ)
        y = o ⊙ ĉ
        reset="threshold" (EvNN code):   c = ĉ − o ⊙ ϑ
        reset="event" (paper Eq. 2):     c = ĉ      (the event is cleared next step by −y_{t−1})
        trace = 0.9·trace_{t−1} + 0.1·y

    ``event_gating=False`` (for tests) sets ``o ≡ 1`` and applies no reset of either kind, so
    ``y = c = ĉ``: a plain GRU (``torch.nn.GRU`` when ``reset_gate="after"``).

    Returns ``(y_t, EGRUState(c, y, o, trace, margin=ĉ − ϑ))``.
    """
    hidden = state.c.shape[-1]
    y_prev, c_prev = state.y, state.c
    wx_zr, wx_g = input_proj[:, : 2 * hidden], input_proj[:, 2 * hidden:]
    if reset_gate == "after":
        rh = F.linear(y_prev, recurrent_weight, recurrent_bias)  # [B, 3H]
        zr = torch.sigmoid(wx_zr + rh[:, : 2 * hidden])  # [B, 2H]
        z, r = zr[:, :hidden], zr[:, hidden:]
        g = torch.tanh(torch.addcmul(wx_g, r, rh[:, 2 * hidden:]))
    elif reset_gate == "before":
        w_zr, w_g = recurrent_weight[: 2 * hidden], recurrent_weight[2 * hidden:]  # [2H, H], [H, H]
        b_zr, b_g = (None, None) if recurrent_bias is None else (recurrent_bias[: 2 * hidden], recurrent_bias[2 * hidden:])
        zr = torch.sigmoid(wx_zr + F.linear(y_prev, w_zr, b_zr))
        z, r = zr[:, :hidden], zr[:, hidden:]
        g = torch.tanh(wx_g + F.linear(r * y_prev, w_g, b_g))
    else:
        raise ValueError(f"unknown reset_gate {reset_gate!r}; expected one of {RESET_GATES}")
    c_hat = torch.lerp(g, c_prev, z)  # z ⊙ c_{t−1} + (1 − z) ⊙ g
    if zoneout_mask is not None:
        c_hat = torch.lerp(c_prev, c_hat, zoneout_mask)  # (ĉ − c_{t−1})·mask + c_{t−1}
    elif zoneout > 0.0:
        c_hat = torch.lerp(c_hat, c_prev, zoneout)  # p·c_{t−1} + (1 − p)·ĉ (zoneout's expectation)
    if reset not in RESETS:
        raise ValueError(f"unknown reset {reset!r}; expected one of {RESETS}")
    if event_gating and reset == "event":
        c_hat = c_hat - y_prev
    margin = c_hat - threshold
    if event_gating:
        o = surrogate(margin)
        y = o * c_hat
        c = c_hat - o * threshold if reset == "threshold" else c_hat
    else:
        o = torch.ones_like(c_hat)
        y = c = c_hat
    trace = torch.lerp(state.trace, y, 1.0 - TRACE_DECAY)
    return y, EGRUState(c, y, o, trace, margin)


# ---------------------------------------------------------------- sparsity metrics (pure)
def _pool(x: Tensor | Sequence[Tensor]) -> Tensor:
    if isinstance(x, Tensor):
        return x.reshape(-1)
    return torch.cat([t.reshape(-1) for t in x])


def activity_sparsity(o: Tensor | Sequence[Tensor]) -> Tensor:
    """Activity sparsity ``1 − mean(o)`` (EvNN ``benchmarks``; SCIENCE.md §3.5).

    ``o`` is the event indicator of a trajectory (``states.o``, any shape), or a list of them, one
    per layer; a list is pooled, which weights each layer by its number of units (as EvNN does).
    """
    pooled = _pool(o)
    return 1.0 - (pooled if pooled.is_floating_point() else pooled.double()).mean()


def backward_sparsity(c_hat_minus_threshold: Tensor | Sequence[Tensor], epsilon: float) -> Tensor:
    """Backward sparsity ``mean(|ĉ − ϑ| ≥ 1/ε)`` (SCIENCE.md §3.4–3.5).

    The fraction of entries where the pseudo-derivative ``γ·max(0, 1 − ε|ĉ − ϑ|)`` is zero, i.e.
    where BPTT need not propagate through the event. Pass ``states.margin`` of a trajectory (or a
    list, one per layer, pooled as in :func:`activity_sparsity`). EvNN writes ``> 1/ε`` on the
    state after the reset; ``≥`` on ``ĉ − ϑ`` is exactly "pseudo-derivative is zero".
    """
    return (_pool(c_hat_minus_threshold).abs() >= 1.0 / epsilon).double().mean()


# ---------------------------------------------------------------- modules
def _check_probability(value: float, name: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


class _EGRUBase(nn.Module):
    """What :class:`EGRUCell` and :class:`EGRU` share: options, thresholds, state checks."""

    def _setup(self, input_size: int, hidden_size: int, *, bias: bool, gamma: float, epsilon: float,
               surrogate: Surrogate | None, threshold_init: str, threshold_mean: float | None,
               reset: str, reset_gate: str, event_gating: bool) -> None:
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"input_size and hidden_size must be positive, got {input_size}, {hidden_size}")
        if threshold_init not in THRESHOLD_INITS:
            raise ValueError(f"unknown threshold_init {threshold_init!r}; expected one of {THRESHOLD_INITS}")
        if reset not in RESETS:
            raise ValueError(f"unknown reset {reset!r}; expected one of {RESETS}")
        if reset_gate not in RESET_GATES:
            raise ValueError(f"unknown reset_gate {reset_gate!r}; expected one of {RESET_GATES}")
        if epsilon <= 0:
            raise ValueError(f"epsilon (pseudo-derivative support) must be positive, got {epsilon}")
        if threshold_mean is None:
            threshold_mean = DEFAULT_THRESHOLD_MEAN[threshold_init]
        if threshold_init == "beta" and not 0.0 < threshold_mean < 1.0:
            raise ValueError(f"threshold_mean must be in (0, 1) for threshold_init='beta', got {threshold_mean}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)
        self.surrogate = surrogate if surrogate is not None else PiecewiseLinear(gamma=self.gamma, width=1.0 / self.epsilon)
        self.threshold_init = threshold_init
        self.threshold_mean = float(threshold_mean)
        self.reset = reset
        self.reset_gate = reset_gate
        self._event_gating = event_gating
        # Distinct names per init, so a checkpoint of one kind does not load silently into the other.
        self._threshold_stem = "threshold_logit" if threshold_init == "sigmoid" else "threshold"

    # -- thresholds ------------------------------------------------------------------------
    def _new_threshold(self) -> nn.Parameter:
        h = self.hidden_size
        if self.threshold_init == "sigmoid":
            # EvNN ICLR-era: θ ~ N(thr_mean, std √2) per unit, ϑ = sigmoid(θ).
            raw = torch.randn(h) * math.sqrt(2.0) + self.threshold_mean
        else:
            # EvNN current: ϑ ~ Beta(α, 3) with α = 3m/(1 − m), so E[ϑ] = m.
            alpha = 3.0 * self.threshold_mean / (1.0 - self.threshold_mean)
            raw = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(3.0)).sample((h,))
        return nn.Parameter(raw)

    def _threshold_value(self, raw: Tensor) -> Tensor:
        if self.threshold_init == "sigmoid":
            return torch.sigmoid(raw)
        return torch.clamp(raw, 0.0, 1.0)

    def _project_thresholds(self) -> None:
        # Beta init: project the raw parameter back into [0, 1] before each forward, as EvNN does
        # (through .data, so pending autograd graphs are not invalidated by a version bump).
        if self.threshold_init == "beta":
            for p in self.threshold_parameters():
                p.data.clamp_(0.0, 1.0)

    def threshold_parameters(self) -> list[nn.Parameter]:
        """The trainable threshold parameters (θ for "sigmoid", ϑ itself for "beta")."""
        return [getattr(self, name) for name in self._threshold_names]

    def parameter_groups(self, lr: float, threshold_lr_multiplier: float = 1.0, weight_decay: float = 0.0) -> list[dict]:
        """Optimizer param groups: thresholds get ``lr·threshold_lr_multiplier`` and no weight decay.

        ``threshold_lr_multiplier=0`` freezes the thresholds (EvNN's current PTB recipe).
        """
        thresholds = self.threshold_parameters()
        ids = {id(p) for p in thresholds}
        others = [p for p in self.parameters() if id(p) not in ids]
        return [
            {"params": others, "lr": lr, "weight_decay": weight_decay},
            {"params": thresholds, "lr": lr * threshold_lr_multiplier, "weight_decay": 0.0},
        ]

    # -- state -----------------------------------------------------------------------------
    def _zero_state(self, batch_size: int, like: Tensor) -> EGRUState:
        zeros = torch.zeros(batch_size, self.hidden_size, device=like.device, dtype=like.dtype)
        return EGRUState(*([zeros] * len(EGRUState._fields)))

    def _check_state(self, state: object, batch_size: int, like: Tensor, where: str = "state") -> None:
        if not isinstance(state, EGRUState):
            raise TypeError(f"{where} must be an EGRUState, got {type(state).__name__}")
        want = (batch_size, self.hidden_size)
        for name, value in zip(state._fields, state):
            if not isinstance(value, Tensor):
                raise TypeError(f"{where}.{name} must be a Tensor, got {type(value).__name__}")
            if tuple(value.shape) != want:
                raise ValueError(f"{where}.{name} has shape {tuple(value.shape)} but must be {want} (batch, hidden_size); "
                                 "pass state=None to start from zeros")
            if value.dtype != like.dtype:
                raise ValueError(f"{where}.{name} has dtype {value.dtype} but the input is {like.dtype}")

    def _step_kwargs(self) -> dict:
        return dict(surrogate=self.surrogate, reset=self.reset, reset_gate=self.reset_gate, event_gating=self._event_gating)


class EGRUCell(_EGRUBase):
    r"""One EGRU step on a raw input: ``y_t, state = cell(x_t, state)``.

    ``Wx = x_t W_ih^T + b_ih``, then :func:`egru_step` (see :class:`EGRU` for the update).

    Args:
        input_size, hidden_size: feature sizes.
        bias, gamma, epsilon, surrogate, threshold_init, threshold_mean, reset, reset_gate: as in
            :class:`EGRU` (no dropout, DropConnect or zoneout here).

    Shape:
        ``x_t`` ``[B, I]``; ``y_t`` and every state field ``[B, H]``.

    Example::

        >>> cell = EGRUCell(3, 8)
        >>> y, state = cell(torch.randn(2, 3))
        >>> y, state = cell(torch.randn(2, 3), state)
        >>> y.shape, state.c.shape
        (torch.Size([2, 8]), torch.Size([2, 8]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        bias: bool = True,
        gamma: float = 0.7,
        epsilon: float = 1.0,
        surrogate: Surrogate | None = None,
        threshold_init: str = "sigmoid",
        threshold_mean: float | None = None,
        reset: str = "threshold",
        reset_gate: str = "after",
        _event_gating: bool = True,
    ) -> None:
        super().__init__()
        self._setup(input_size, hidden_size, bias=bias, gamma=gamma, epsilon=epsilon, surrogate=surrogate,
                    threshold_init=threshold_init, threshold_mean=threshold_mean, reset=reset,
                    reset_gate=reset_gate, event_gating=_event_gating)
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size)) if bias else None
        self._threshold_names = [self._threshold_stem]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal weights, zero biases (EvNN), fresh thresholds."""
        nn.init.xavier_normal_(self.weight_ih)
        nn.init.xavier_normal_(self.weight_hh)
        for b in (self.bias_ih, self.bias_hh):
            if b is not None:
                nn.init.zeros_(b)
        setattr(self, self._threshold_stem, self._new_threshold())

    def threshold_values(self) -> Tensor:
        """ϑ ``[H]`` as used in the forward pass."""
        return self._threshold_value(getattr(self, self._threshold_stem))

    def forward(self, x_t: Tensor, state: EGRUState | None = None) -> tuple[Tensor, EGRUState]:
        if isinstance(x_t, Tensor) and x_t.dim() != 2:
            raise ValueError(f"x_t must have 2 dims (batch, features); got shape {tuple(x_t.shape)}")
        check_input(x_t.unsqueeze(0) if isinstance(x_t, Tensor) else x_t, self.input_size, name="x_t")
        if state is None:
            state = self._zero_state(x_t.shape[0], x_t)
        else:
            self._check_state(state, x_t.shape[0], x_t)
        self._project_thresholds()
        proj = F.linear(x_t, effective_weight(self, "weight_ih"), self.bias_ih)  # [B, 3H]
        return egru_step(proj, state, recurrent_weight=effective_weight(self, "weight_hh"), recurrent_bias=self.bias_hh,
                         threshold=self.threshold_values(), **self._step_kwargs())

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, bias={self.bias}, threshold_init={self.threshold_init!r}, "
                f"reset={self.reset!r}, reset_gate={self.reset_gate!r}")


class EGRU(_EGRUBase):
    r"""A (multi-layer) event-based GRU, used like ``torch.nn.GRU`` (SCIENCE.md §3).

    For each layer, with ``x_t`` the layer input (the previous layer's ``y_t``, after dropout)
    and gate chunks ordered ``[z, r, g]``, the default (EvNN reference-code) update is::

        Wx = x_t W_ih^T + b_ih                        (one matmul for the whole sequence)
        Rh = y_{t−1} W_hh^T + b_hh                    (recurrent input: the event output y)
        z  = σ(Wx_z + Rh_z)                           update gate, "keep old" (paper u = 1 − z)
        r  = σ(Wx_r + Rh_r)
        g  = tanh(Wx_g + r ⊙ Rh_g)
        ĉ  = z ⊙ c_{t−1} + (1 − z) ⊙ g
        o  = H(ĉ − ϑ)                                 H(0) = 0
        y  = o ⊙ ĉ                                    graded event
        c  = ĉ − o ⊙ ϑ                                reset by subtracting the threshold
        trace = 0.9·trace_{t−1} + 0.1·y

    The backward pass of ``H`` is ``γ·max(0, 1 − ε·|ĉ − ϑ|)`` (``PiecewiseLinear(γ, 1/ε)``).

    ``reset="event"`` is the paper's Eq. 2, ``c_t = u ⊙ g + (1 − u) ⊙ c_{t−1} − y_{t−1}`` with
    ``y_t = c_t·H(c_t − ϑ)``: ``ĉ = z ⊙ c_{t−1} + (1 − z) ⊙ g − y_{t−1}``, ``o = H(ĉ − ϑ)``,
    ``y = o ⊙ ĉ``, ``c = ĉ`` (the event is removed at the next step, not at once).
    ``reset_gate="before"`` is the paper's candidate ``g = tanh(Wx_g + (r ⊙ y_{t−1}) W_hh,g^T + b_hh,g)``.
    Zoneout with probability ``p`` (training): ``ĉ ← (ĉ − c_{t−1}) ⊙ m + c_{t−1}``,
    ``m ~ Bernoulli(1 − p)`` per step and unit; eval: ``ĉ ← p·c_{t−1} + (1 − p)·ĉ``. It acts on
    the gated update, before the ``−y_{t−1}`` of ``reset="event"``. See :func:`egru_step`.

    Reference loop (one layer, no regularisation)::

        state = EGRUState(*[zeros(B, H)] * 5)
        for x_t in x:
            y_t, state = egru_step(x_t @ W_ih.T + b_ih, state, recurrent_weight=W_hh,
                                   recurrent_bias=b_hh, threshold=ϑ, surrogate=PiecewiseLinear(γ, 1/ε))

    Args:
        input_size, hidden_size: feature sizes.
        num_layers: stacked layers; layer ``k > 0`` takes layer ``k − 1``'s events ``y``.
        bias: learn ``b_ih`` and ``b_hh``.
        batch_first: input and output are ``[B, T, ·]``.
        dropout: dropout on the events passed between layers (training only, like ``nn.GRU``).
        dropconnect: DropConnect on ``W_hh`` (training only; one inverted-dropout mask per layer
            and forward call, shared by all steps and samples, as EvNN's ``dropout``).
        zoneout: zoneout probability ``p`` (see above).
        gamma, epsilon: pseudo-derivative height γ and support ε (EvNN ``dampening_factor``
            0.7, ``pseudo_derivative_support`` 1.0).
        surrogate: any :class:`~ranvier.Surrogate`; replaces ``PiecewiseLinear(gamma, 1/epsilon)``.
        threshold_init: ``"sigmoid"``: per-unit ``θ ~ N(threshold_mean, std √2)``, ``ϑ = σ(θ)``
            (EvNN's ICLR-2023 code); ``"beta"``: ``ϑ ~ Beta(α, 3)``, ``α = 3m/(1 − m)``,
            ``m = threshold_mean``, projected into ``[0, 1]`` before every forward (EvNN now).
        threshold_mean: ``None`` picks each init's EvNN default: ``0.0`` for "sigmoid" (median
            ``ϑ = 0.5``), ``0.3`` for "beta" (mean ``ϑ = 0.3``). For "sigmoid" it is in logit space
            (EvNN's PTB configs used about −3.6, i.e. ``ϑ ≈ 0.03``).
        reset: ``"threshold"`` (code) or ``"event"`` (paper Eq. 2).
        reset_gate: ``"after"`` (code, cuDNN style) or ``"before"`` (paper).
        backend: ``"auto"`` (the fused CPU kernel of :mod:`ranvier.kernels` when it supports the
            call, else the step loop), ``"kernel"`` (raise if unsupported) or ``"reference"``.
            :meth:`trajectory` always runs the step loop.

    Parameters per layer ``k``: ``weight_ih_l{k}`` ``[3H, I]`` (``[3H, H]`` for k > 0),
    ``weight_hh_l{k}`` ``[3H, H]``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` ``[3H]``, and the threshold
    ``threshold_logit_l{k}`` ("sigmoid") or ``threshold_l{k}`` ("beta") ``[H]``.

    Shape:
        input ``[T, B, I]`` (``[B, T, I]`` with ``batch_first``); output ``[T, B, H]``
        (``[B, T, H]``); state: a list with one :class:`EGRUState` per layer, fields ``[B, H]``.

    Returns:
        ``forward``: ``(y, states)``, ``y`` the last layer's events, ``states`` the final state
        of each layer. ``trajectory``: ``(y, states)`` with every state field stacked over time.

    Example::

        >>> egru = EGRU(3, 8, num_layers=2)
        >>> y, state = egru(torch.randn(5, 2, 3))
        >>> y.shape, len(state), state[1].o.shape
        (torch.Size([5, 2, 8]), 2, torch.Size([2, 8]))
        >>> with torch.no_grad():
        ...     y, states = egru.trajectory(torch.randn(5, 2, 3), state)
        >>> states[0].o.shape  # [T, B, H]
        torch.Size([5, 2, 8])
        >>> 0.0 <= float(activity_sparsity([s.o for s in states])) <= 1.0
        True
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        dropconnect: float = 0.0,
        zoneout: float = 0.0,
        gamma: float = 0.7,
        epsilon: float = 1.0,
        surrogate: Surrogate | None = None,
        threshold_init: str = "sigmoid",
        threshold_mean: float | None = None,
        reset: str = "threshold",
        reset_gate: str = "after",
        _event_gating: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self._setup(input_size, hidden_size, bias=bias, gamma=gamma, epsilon=epsilon, surrogate=surrogate,
                    threshold_init=threshold_init, threshold_mean=threshold_mean, reset=reset,
                    reset_gate=reset_gate, event_gating=_event_gating)
        self.num_layers = num_layers
        self.batch_first = batch_first
        self.dropout = _check_probability(dropout, "dropout")
        self.dropconnect = _check_probability(dropconnect, "dropconnect")
        self.zoneout = _check_probability(zoneout, "zoneout")
        self.backend = check_backend(backend)  # issue 5: "auto" | "kernel" | "reference"
        self._threshold_names = [f"{self._threshold_stem}_l{k}" for k in range(num_layers)]
        for k in range(num_layers):
            layer_in = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(3 * hidden_size, layer_in)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(3 * hidden_size, hidden_size)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(3 * hidden_size)) if bias else None)
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(3 * hidden_size)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal weights, zero biases (EvNN), fresh thresholds."""
        for k in range(self.num_layers):
            nn.init.xavier_normal_(getattr(self, f"weight_ih_l{k}"))
            nn.init.xavier_normal_(getattr(self, f"weight_hh_l{k}"))
            for name in (f"bias_ih_l{k}", f"bias_hh_l{k}"):
                if getattr(self, name) is not None:
                    nn.init.zeros_(getattr(self, name))
            setattr(self, self._threshold_names[k], self._new_threshold())

    def threshold_values(self) -> list[Tensor]:
        """ϑ ``[H]`` of every layer, as used in the forward pass."""
        return [self._threshold_value(p) for p in self.threshold_parameters()]

    # -- running ---------------------------------------------------------------------------
    def _check_states(self, state: object, batch_size: int, like: Tensor) -> list[EGRUState]:
        if isinstance(state, EGRUState):
            raise TypeError("state must be a list with one EGRUState per layer, got a single EGRUState")
        if not isinstance(state, (list, tuple)):
            raise TypeError(f"state must be a list of {self.num_layers} EGRUState, got {type(state).__name__}")
        if len(state) != self.num_layers:
            raise ValueError(f"state has {len(state)} entries but the EGRU has num_layers={self.num_layers}")
        for k, s in enumerate(state):
            self._check_state(s, batch_size, like, where=f"state[{k}]")
        return list(state)

    def _recurrent_weight(self, k: int) -> Tensor:
        w_hh = effective_weight(self, f"weight_hh_l{k}")
        if self.training and self.dropconnect > 0.0:
            w_hh = F.dropout(w_hh, self.dropconnect, training=True)  # one mask for the whole sequence
        return w_hh

    def _layer_step(self, k: int, use_zoneout_mask: bool) -> Callable[[Tensor, EGRUState], tuple[Tensor, EGRUState]]:
        w_hh = self._recurrent_weight(k)
        kwargs = dict(recurrent_weight=w_hh, recurrent_bias=getattr(self, f"bias_hh_l{k}"),
                      threshold=self._threshold_value(getattr(self, self._threshold_names[k])), **self._step_kwargs())
        h3 = 3 * self.hidden_size
        if use_zoneout_mask:
            def step(x_t: Tensor, state: EGRUState) -> tuple[Tensor, EGRUState]:
                return egru_step(x_t[:, :h3], state, zoneout_mask=x_t[:, h3:], **kwargs)
        else:
            def step(x_t: Tensor, state: EGRUState) -> tuple[Tensor, EGRUState]:
                return egru_step(x_t, state, zoneout=self.zoneout, **kwargs)
        return step

    def _run(self, x: Tensor, state: list[EGRUState] | None, record: bool) -> tuple[Tensor, list[EGRUState]]:
        check_input(x, self.input_size)
        xs = x.transpose(0, 1) if self.batch_first else x  # [T, B, I]
        batch = xs.shape[1]
        states = [self._zero_state(batch, xs)] * self.num_layers if state is None else self._check_states(state, batch, xs)
        self._project_thresholds()
        use_mask = self.training and self.zoneout > 0.0
        from ..kernels import egru as kernel  # lazy: numba loads on first use, not on import

        use_kernel = kernel.select(self, xs, states)
        out, finals = [], []
        layer_in = xs
        for k in range(self.num_layers):
            if k > 0 and self.training and self.dropout > 0.0:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
            w_ih, b_ih = effective_weight(self, f"weight_ih_l{k}"), getattr(self, f"bias_ih_l{k}")
            proj = F.linear(layer_in, w_ih, b_ih)  # [T, B, 3H]: one matmul for the whole sequence
            if use_mask:
                mask = torch.bernoulli(torch.full_like(proj[..., : self.hidden_size], 1.0 - self.zoneout))  # [T, B, H]
                proj = torch.cat([proj, mask], -1)  # [T, B, 4H]: the step splits it again
            if use_kernel:
                h3 = 3 * self.hidden_size
                y, final = kernel.run_layer(
                    self, proj[..., :h3], proj[..., h3:] if use_mask else None, self._recurrent_weight(k),
                    getattr(self, f"bias_hh_l{k}"), self._threshold_value(getattr(self, self._threshold_names[k])), states[k],
                    record=record)
                if record:
                    out.append(final)
                    final = EGRUState(*(f[-1] for f in final))
            elif record:
                (y, layer_states), final = scan(self._layer_step(k, use_mask), proj, states[k], record=True)
                out.append(layer_states)
            else:
                y, final = scan(self._layer_step(k, use_mask), proj, states[k])
            finals.append(final)
            layer_in = y  # [T, B, H]
        if self.batch_first:
            layer_in = layer_in.transpose(0, 1)
            out = [EGRUState(*(f.transpose(0, 1) for f in s)) for s in out]
        return layer_in, (out if record else finals)

    def forward(self, x: Tensor, state: list[EGRUState] | None = None) -> tuple[Tensor, list[EGRUState]]:
        """Run a sequence. Returns ``(y, final_states)``: the last layer's events ``[T, B, H]``
        (``[B, T, H]`` with ``batch_first``) and one :class:`EGRUState` ``[B, H]`` per layer."""
        return self._run(x, state, record=False)

    def trajectory(self, x: Tensor, state: list[EGRUState] | None = None) -> tuple[Tensor, list[EGRUState]]:
        """Like :meth:`forward`, but ``states[k]`` holds layer ``k``'s state after every step,
        each field stacked over time ``[T, B, H]`` (``[B, T, H]`` with ``batch_first``): use
        ``states[k].o`` for :func:`activity_sparsity` and ``states[k].margin`` for
        :func:`backward_sparsity`. The final state of layer ``k`` is ``states[k]`` at ``t = −1``."""
        return self._run(x, state, record=True)

    def extra_repr(self) -> str:
        parts = [f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"]
        for name in ("dropout", "dropconnect", "zoneout"):
            if getattr(self, name):
                parts.append(f"{name}={getattr(self, name)}")
        parts.append(f"threshold_init={self.threshold_init!r}, reset={self.reset!r}, reset_gate={self.reset_gate!r}")
        if self.batch_first:
            parts.append("batch_first=True")
        return ", ".join(parts)

