"""Learnable real-valued transmission delays ("Beyond Weights", SCIENCE.md §4).

Two granularities:

* :class:`Delay`: one delay per channel (an axonal delay of the presynaptic neuron):
  ``y_i(t) = x_i(t − d_i)``;
* :class:`DelayedLinear`: one delay per synapse, ``out_j(t) = Σ_i w_ij · x_i(t − d_ij)``
  (the delayed dense layer of Grappolini & Subramoney, ICONS '23, SCIENCE.md §4.3).

A real delay ``d = k + f`` (``k = ⌊d⌋``, ``0 ≤ f < 1``) shifts by linear interpolation between
the two neighbouring whole-step shifts::

    x(t − d) := (1 − f)·x(t − k) + f·x(t − k − 1)        (x(t) = 0 before the first step)

so an integer delay is an exact hard shift, and the delay gradient is the natural derivative of
the interpolation::

    ∂x(t − d)/∂d = x(t − k − 1) − x(t − k) = −∂_t x̃(t − d)

the negative time-derivative of the shifted input (x̃ the piecewise-linear interpolant), which is
SCIENCE.md §4.3's ``∂L/∂d_ij = Σ_t δ_j(t)·(−∂_t[w_ij x_i(t − d_ij)])``. The reference code takes
that derivative as a ``[−1, +1]`` finite difference of the already shifted signal; the two agree
for integer delays, and ours is the exact gradient of the forward pass (tests compare it with
finite differences).

Delays live in ``[0, max_delay]`` (causality, and a bounded history): the stored values are
projected onto that interval at the start of every forward pass, which is the reference's
"clamp after every optimiser step" (also for the upper bound).

Memory: a call keeps the input plus a history of ``⌈max_delay⌉`` past steps (``O(in × D_max)``
per sample) and ``O(in × out)`` parameters. :class:`DelayedLinear` never builds an
``in × out × D_max`` kernel: it loops over the whole-step shifts ``s`` that occur and applies the
``[out, in]`` matrix of the synapses whose interpolation touches ``s`` (the parts of ``w_ij`` with
``⌊d_ij⌋ = s`` or ``⌊d_ij⌋ + 1 = s``), in a custom autograd function whose backward rebuilds those
matrices instead of saving them.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..sparse.masks import effective_weight
from .recurrent import check_input

__all__ = ["Delay", "DelayedLinear", "delay_shift", "delayed_linear"]


def _check_max_delay(max_delay: float) -> float:
    max_delay = float(max_delay)
    if not math.isfinite(max_delay) or max_delay < 0:
        raise ValueError(f"max_delay must be a finite number >= 0, got {max_delay}")
    return max_delay


def _history_length(max_delay: float) -> int:
    """Past steps a shift by up to ``max_delay`` reads: ``x(t − k − 1)`` with ``k + 1 ≤ ⌈D_max⌉``."""
    return math.ceil(max_delay)


def _split(delay: Tensor) -> tuple[Tensor, Tensor]:
    """``d = k + f``: the whole steps ``k`` (int64, no gradient) and the fraction ``f`` (with gradient)."""
    whole = delay.detach().floor()
    return whole.long(), delay - whole


def _check_causal(delay: Tensor) -> None:
    if delay.numel() and not bool((delay.detach() >= 0).all()):  # NaN fails too
        raise ValueError("delays must be >= 0 (a negative delay would read the future); clamp them first")


def _padded(x: Tensor, history: Tensor | None, length: int) -> Tensor:
    """``[history; x]`` along time: ``[length + T, B, C]`` (zeros when ``history`` is None)."""
    if history is None:
        history = x.new_zeros((length, *x.shape[1:]))
    elif tuple(history.shape) != (length, *x.shape[1:]):
        raise ValueError(f"history has shape {tuple(history.shape)} but must be {(length, *x.shape[1:])} "
                         "(max-delay steps, batch, features); pass None to start from silence")
    return torch.cat([history, x], dim=0)


def delay_shift(x: Tensor, delay: Tensor, history: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Shift every channel of ``x [T, B, C]`` by its own real delay ``delay [C]`` (in steps).

    ``y_i(t) = (1 − f_i)·x_i(t − k_i) + f_i·x_i(t − k_i − 1)`` with ``k_i = ⌊d_i⌋``, reading the
    steps before ``t = 0`` from ``history [⌈max d⌉, B, C]`` (oldest first; zeros when None).
    Delays must already lie in ``[0, ∞)``. Returns ``(y [T, B, C], new_history)`` where
    ``new_history`` holds the last ``⌈max d⌉`` input steps, so a sequence cut into chunks gives
    the same output as in one piece.

    Example::

        >>> x = torch.arange(1.0, 5.0).reshape(4, 1, 1)       # 1, 2, 3, 4
        >>> delay_shift(x, torch.tensor([1.5]))[0].flatten()  # 0, ½·1, ½(2 + 1), ½(3 + 2)
        tensor([0.0000, 0.5000, 1.5000, 2.5000])
    """
    if delay.dim() != 1 or delay.shape[0] != x.shape[-1]:
        raise ValueError(f"delay must have shape ({x.shape[-1]},), got {tuple(delay.shape)}")
    _check_causal(delay)
    length = _history_length(float(delay.detach().max()) if delay.numel() else 0.0)
    if history is not None:
        length = history.shape[0]
        if float(delay.detach().max()) > length:
            raise ValueError(f"a delay of {float(delay.detach().max())} steps needs a history of "
                             f"{_history_length(float(delay.detach().max()))} steps, got {length}")
    steps, batch, channels = x.shape
    xpad = _padded(x, history, length)
    whole, frac = _split(delay)
    # row of x(t − k) in xpad is t + length − k; x(t − k − 1) one row earlier (clamped where f = 0)
    row = torch.arange(steps, device=x.device)[:, None] + length - whole[None, :]  # [T, C]
    now = xpad.gather(0, row[:, None, :].expand(steps, batch, channels))
    before = xpad.gather(0, (row - 1).clamp(min=0)[:, None, :].expand(steps, batch, channels))
    y = (1.0 - frac) * now + frac * before
    return y, xpad[xpad.shape[0] - length:]


class _SynapsesByShift:
    """The synapses sorted by whole delay ``k``, so that the ones a shift ``s`` uses (``k = s`` with
    share ``1 − f``, ``k = s − 1`` with share ``f``) are two slices of one index: building ``W_s``
    costs O(synapses with that shift), not O(in × out), and all shifts together O(in × out)."""

    def __init__(self, delay: Tensor) -> None:
        whole, frac = _split(delay.detach())
        self.frac = frac.flatten()
        flat = whole.flatten()
        self.order = torch.argsort(flat)
        counts = torch.bincount(flat, minlength=1)
        self.start = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).tolist()  # k occupies [start[k], start[k+1])
        self.max_whole = len(counts) - 1
        # shifts with any weight: every k, and k + 1 where some synapse with that k has f > 0
        fractional = torch.bincount(flat[self.frac > 0], minlength=len(counts))
        self.shifts = sorted({k for k, n in enumerate(counts.tolist()) if n}
                             | {k + 1 for k, n in enumerate(fractional.tolist()) if n})

    def at(self, k: int) -> Tensor:
        """Flat indices of the synapses with whole delay ``k``."""
        if k < 0 or k > self.max_whole:
            return self.order[:0]
        return self.order[self.start[k]:self.start[k + 1]]

    def matrix(self, weight: Tensor, s: int, buffer: Tensor) -> Tensor:
        """``W_s = w ⊙ ((1 − f)·[k = s] + f·[k + 1 = s])`` as a dense ``[out, in]`` matrix, written
        into ``buffer`` (reused across shifts: one allocation of in × out per call, not one per shift)."""
        flat_w = weight.flatten()
        ws = buffer.view(-1).zero_()
        now, before = self.at(s), self.at(s - 1)
        ws[now] = flat_w[now] * (1.0 - self.frac[now])
        ws[before] = flat_w[before] * self.frac[before]
        return ws.view_as(weight)


class _DelayedMatmul(torch.autograd.Function):
    """``out[t] = Σ_s x(t − s) @ W_sᵀ`` with ``W_s = w ⊙ ((1 − f)·[k = s] + f·[k + 1 = s])``.

    Saves only ``xpad``, ``w``, ``d`` and the synapses' order by delay; each ``W_s`` is rebuilt in the backward pass, so memory
    stays ``O(T·B·I + I·O)`` whatever the delays. Input steps where every value is zero (common
    for spike trains) are skipped.
    """

    @staticmethod
    def forward(ctx, xpad: Tensor, weight: Tensor, delay: Tensor, steps: int) -> Tensor:  # type: ignore[override]
        length = xpad.shape[0] - steps
        synapses = _SynapsesByShift(delay)
        out = xpad.new_zeros((steps, xpad.shape[1], weight.shape[0]))
        active = xpad.flatten(1).ne(0).any(1).nonzero().squeeze(1)  # input steps with any event
        buffer = torch.empty_like(weight)
        for s in synapses.shifts:
            t_out = active + s - length  # an input at padded row τ arrives at t = τ − length + s
            keep = (t_out >= 0) & (t_out < steps)
            if keep.any():
                out.index_add_(0, t_out[keep], xpad[active[keep]] @ synapses.matrix(weight, s, buffer).t())
        ctx.save_for_backward(xpad, weight, delay)
        ctx.steps = steps
        ctx.synapses = synapses  # the sort by delay (O(in × out) indices), reused by the backward pass
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        xpad, weight, delay = ctx.saved_tensors
        steps = ctx.steps
        length = xpad.shape[0] - steps
        synapses = ctx.synapses
        need_x, need_w, need_d = ctx.needs_input_grad[:3]
        grad_x = torch.zeros_like(xpad) if need_x else None
        grad_w = torch.zeros_like(weight).flatten() if need_w else None
        grad_d = torch.zeros_like(delay).flatten() if need_d else None
        flat_w, frac = weight.flatten(), synapses.frac
        active = xpad.flatten(1).ne(0).any(1).nonzero().squeeze(1)
        g2 = grad_out.flatten(1)  # [T, B·O] view for row selection
        buffer = torch.empty_like(weight)
        for s in synapses.shifts:
            if grad_x is not None:  # rows τ = t + length − s of xpad feed out[t]
                grad_x[length - s:length - s + steps] += grad_out @ synapses.matrix(weight, s, buffer)
            if grad_w is None and grad_d is None:
                continue
            t_out = active + s - length
            keep = (t_out >= 0) & (t_out < steps)
            if not keep.any():
                continue
            x_rows = xpad[active[keep]].flatten(0, 1)  # [n·B, I]; silent steps add nothing to ∂L/∂W_s
            g_rows = g2[t_out[keep]].reshape(-1, weight.shape[0])  # [n·B, O]
            grad_ws = (g_rows.t() @ x_rows).flatten()  # ∂L/∂W_s
            now, before = synapses.at(s), synapses.at(s - 1)
            if grad_w is not None:
                grad_w[now] += grad_ws[now] * (1.0 - frac[now])
                grad_w[before] += grad_ws[before] * frac[before]
            if grad_d is not None:  # ∂W_s/∂d = −w at k = s, +w at k + 1 = s
                grad_d[now] -= grad_ws[now] * flat_w[now]
                grad_d[before] += grad_ws[before] * flat_w[before]
        return (grad_x, None if grad_w is None else grad_w.view_as(weight),
                None if grad_d is None else grad_d.view_as(delay), None)


def delayed_linear(x: Tensor, weight: Tensor, delay: Tensor, history: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``out_j(t) = Σ_i w_ij · x_i(t − d_ij)`` for ``x [T, B, I]``, ``weight``/``delay`` ``[O, I]``.

    Delays must already lie in ``[0, ∞)``; fractional ones interpolate linearly (module docstring).
    ``history`` holds the ``⌈max d⌉`` steps before ``x`` (zeros when None). Returns
    ``(out [T, B, O], new_history)``.

    Example::

        >>> x = torch.eye(3).reshape(3, 1, 3)                  # channel i spikes at t = i
        >>> w, d = torch.ones(1, 3), torch.tensor([[2.0, 1.0, 0.0]])
        >>> delayed_linear(x, w, d)[0].flatten()               # every spike arrives at t = 2
        tensor([0., 0., 3.])
    """
    if weight.shape != delay.shape or weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"weight {tuple(weight.shape)} and delay {tuple(delay.shape)} must both be "
                         f"(out_features, {x.shape[-1]})")
    _check_causal(delay)
    needed = _history_length(float(delay.detach().max()) if delay.numel() else 0.0)
    length = needed if history is None else history.shape[0]
    if needed > length:
        raise ValueError(f"delays up to {float(delay.detach().max())} steps need a history of {needed} steps, got {length}")
    xpad = _padded(x, history, length)
    out = _DelayedMatmul.apply(xpad, weight, delay, x.shape[0])
    return out, xpad[xpad.shape[0] - length:]


class _DelayBase(nn.Module):
    """What both delay layers share: the range, the projection and the readable delays."""

    delay: nn.Parameter

    def __init__(self, max_delay: float, init: tuple[float, float], batch_first: bool) -> None:
        super().__init__()
        self.max_delay = _check_max_delay(max_delay)
        low, high = (float(v) for v in init)
        if not 0.0 <= low <= high:
            raise ValueError(f"delay init range must satisfy 0 <= low <= high, got {init}")
        self.init_range = (low, high)
        self.history_length = _history_length(self.max_delay)
        self.batch_first = batch_first

    def reset_delays(self) -> None:
        """Draw delays from ``U(low, high)`` (Beyond Weights: ``U(0, 4)``), clipped to ``max_delay``."""
        with torch.no_grad():
            self.delay.uniform_(*self.init_range).clamp_(0.0, self.max_delay)

    def project_(self) -> None:
        """Clamp the stored delays into ``[0, max_delay]`` in place (done by every forward pass)."""
        with torch.no_grad():
            d = self.delay
            if bool(((d < 0) | (d > self.max_delay)).any()):
                d.clamp_(0.0, self.max_delay)

    @property
    def delays(self) -> Tensor:
        """The delays in time steps (a detached copy, clamped to ``[0, max_delay]``)."""
        return self.delay.detach().clamp(0.0, self.max_delay).clone()

    def _time_major(self, x: Tensor) -> Tensor:
        return x.transpose(0, 1) if self.batch_first else x

    def initial_history(self, batch_size: int, channels: int, *, device=None, dtype=None) -> Tensor:
        """Silence before the first step: zeros ``[⌈max_delay⌉, batch, channels]``."""
        device = device if device is not None else self.delay.device
        dtype = dtype if dtype is not None else self.delay.dtype
        return torch.zeros(self.history_length, batch_size, channels, device=device, dtype=dtype)


class Delay(_DelayBase):
    r"""Learnable per-channel (axonal) delays: ``y_i(t) = x_i(t − d_i)``, ``d_i ∈ [0, D_max]``.

    Fractional delays interpolate linearly between whole-step shifts; the delay gradient is the
    negative time-derivative of the shifted input (SCIENCE.md §4.3; module docstring).

    Args:
        size: channels.
        max_delay: ``D_max`` in time steps.
        init: delays start ``U(init[0], init[1])`` (Beyond Weights: ``U(0, 4)``).
        batch_first: input/output ``[B, T, C]`` instead of ``[T, B, C]``.

    Shape:
        ``forward(x, history=None) -> (y, history)``: ``x`` ``[T, B, C]``; ``history``
        ``[⌈D_max⌉, B, C]``, the last input steps (silence when None), so chunks of a sequence
        give the same output as the whole.

    Example::

        >>> layer = Delay(2, max_delay=8.0)
        >>> with torch.no_grad():
        ...     _ = layer.delay.copy_(torch.tensor([0.0, 3.0]))
        >>> y, history = layer(torch.ones(5, 1, 2))
        >>> y[:, 0].t().detach()
        tensor([[1., 1., 1., 1., 1.],
                [0., 0., 0., 1., 1.]])
        >>> layer.delays, history.shape
        (tensor([0., 3.]), torch.Size([8, 1, 2]))
    """

    def __init__(self, size: int, max_delay: float, *, init: tuple[float, float] = (0.0, 4.0),
                 batch_first: bool = False) -> None:
        super().__init__(max_delay, init, batch_first)
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.size = size
        self.delay = nn.Parameter(torch.empty(size))
        self.reset_delays()

    def forward(self, x: Tensor, history: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(x, self.size)
        self.project_()
        xs = self._time_major(x)
        if history is None:
            history = self.initial_history(xs.shape[1], self.size, device=xs.device, dtype=xs.dtype)
        y, history = delay_shift(xs, self.delay, history)
        return self._time_major(y), history

    def extra_repr(self) -> str:
        return f"{self.size}, max_delay={self.max_delay}"


class DelayedLinear(_DelayBase):
    r"""Dense connection with a learnable delay per synapse: ``out_j(t) = Σ_i w_ij·x_i(t − d_ij) + b_j``.

    The delayed dense layer of "Beyond Weights" (SCIENCE.md §4.3), computed without an
    ``in × out × D_max`` kernel (module docstring). The weight follows the mask convention of
    :mod:`ranvier.sparse.masks` (a ``mask`` buffer, if set, multiplies ``weight``).

    Args:
        in_features, out_features: sizes.
        max_delay: ``D_max`` in time steps.
        bias: add a learnable bias.
        init: delays start ``U(init[0], init[1])``.
        batch_first: input/output ``[B, T, ·]``.

    Shape:
        ``forward(x, history=None) -> (out, history)``: ``x`` ``[T, B, in]`` → ``[T, B, out]``;
        ``history`` ``[⌈D_max⌉, B, in]``.

    Example::

        >>> layer = DelayedLinear(3, 2, max_delay=4.0)
        >>> out, _ = layer(torch.randn(6, 5, 3))
        >>> out.shape, layer.delays.shape
        (torch.Size([6, 5, 2]), torch.Size([2, 3]))
        >>> bool(((layer.delays >= 0) & (layer.delays <= 4)).all())
        True
    """

    def __init__(self, in_features: int, out_features: int, max_delay: float, *, bias: bool = False,
                 init: tuple[float, float] = (0.0, 4.0), batch_first: bool = False) -> None:
        super().__init__(max_delay, init, batch_first)
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"in_features and out_features must be positive, got {in_features}, {out_features}")
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.delay = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        with torch.no_grad():  # nn.Linear's default: U(−1/√in, 1/√in)
            bound = 1.0 / math.sqrt(in_features)
            self.weight.uniform_(-bound, bound)
        self.reset_delays()

    def forward(self, x: Tensor, history: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(x, self.in_features)
        self.project_()
        xs = self._time_major(x)
        if history is None:
            history = self.initial_history(xs.shape[1], self.in_features, device=xs.device, dtype=xs.dtype)
        out, history = delayed_linear(xs, effective_weight(self, "weight"), self.delay, history)
        if self.bias is not None:
            out = out + self.bias
        return self._time_major(out), history

    def connection_weights(self) -> dict[str, Tensor]:
        """``{"weight": W ⊙ M}`` for :func:`ranvier.metrics.connection_weights` (delays are not connections)."""
        return {"weight": effective_weight(self, "weight").detach()}

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, max_delay={self.max_delay}, bias={self.bias is not None}"
