"""LIF and ALIF layers whose recurrent synapses have learnable delays (SCIENCE.md §4, §1.2).

Every presynaptic neuron ``i`` of the recurrent connection gets a real-valued axonal delay
``d_i ∈ [0, D_max]`` on top of the one-step recurrence of :class:`~ranvier.LIF` /
:class:`~ranvier.ALIF`::

    I_t = W_in x_t + W_rec z̃(t − 1 − d) (+ bias),    z̃_i(t − 1 − d_i) = (1 − f_i)·z_i(t − 1 − k_i) + f_i·z_i(t − 2 − k_i)

with ``k_i = ⌊d_i⌋``, ``f_i = d_i − k_i`` (the linear-interpolation shift of
:mod:`ranvier.layers.delay`, so the delay gradient is the negative time-derivative of the shifted
spike train, §4.3). ``d = 0`` is exactly the plain layer. The LSNN code has fixed random recurrent
delays of 1..n_delay steps (§1.2); here they are learnt.

The state is explicit: :class:`DelayedState` holds the neuron's state and the spikes of the last
``⌈D_max⌉ + 1`` steps (oldest first), so a sequence cut into chunks gives the same result as in
one piece.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor, nn

from ..core.scan import scan
from ..layers.delay import _check_max_delay, _split
from ..layers.recurrent import check_input
from ..sparse.masks import effective_weight
from .alif import ALIF
from .lif import LIF

__all__ = ["DelayedState", "DelayedLIF", "DelayedALIF"]


class DelayedState(NamedTuple):
    neuron: Any  # LIFState / ALIFState, every field [B, H]
    history: tuple[Tensor, ...]  # ⌈D_max⌉ + 1 spike tensors [B, H] of the last steps, oldest first (history[-1] = z_{t−1})


class _RecurrentDelays:
    """Mixin over :class:`~ranvier.LIF` / :class:`~ranvier.ALIF`: per-neuron recurrent delays.

    It runs its own time loop (``forward``/``trajectory``) so that it does not depend on how the
    plain layers implement theirs.
    """

    recurrent_delay: nn.Parameter

    def _init_delays(self, max_delay: float, init: tuple[float, float]) -> None:
        if self.recurrent_weight is None:
            raise ValueError("recurrent delays need recurrent=True")
        self.max_delay = _check_max_delay(max_delay)
        self.history_length = math.ceil(self.max_delay) + 1
        low, high = (float(v) for v in init)
        if not 0.0 <= low <= high:
            raise ValueError(f"delay init range must satisfy 0 <= low <= high, got {init}")
        self.recurrent_delay = nn.Parameter(torch.empty(self.hidden_size).uniform_(low, high).clamp_(0.0, self.max_delay))

    @property
    def delays(self) -> Tensor:
        """Recurrent delays per presynaptic neuron, in time steps (beyond the one-step recurrence)."""
        return self.recurrent_delay.detach().clamp(0.0, self.max_delay).clone()

    def project_(self) -> None:
        """Clamp the stored delays into ``[0, max_delay]`` in place (done by every forward pass)."""
        with torch.no_grad():
            d = self.recurrent_delay
            if bool(((d < 0) | (d > self.max_delay)).any()):
                d.clamp_(0.0, self.max_delay)

    # -- state -----------------------------------------------------------------------------
    def initial_state(self, batch_size: int, *, device: Any = None, dtype: torch.dtype | None = None) -> DelayedState:
        neuron = super().initial_state(batch_size, device=device, dtype=dtype)  # type: ignore[misc]
        return DelayedState(neuron, (torch.zeros_like(neuron[0]),) * self.history_length)

    def check_state(self, state: DelayedState, batch_size: int) -> None:
        if not isinstance(state, DelayedState):
            raise TypeError(f"state must be a DelayedState, got {type(state).__name__}")
        super().check_state(state.neuron, batch_size)  # type: ignore[misc]
        want = (batch_size, self.hidden_size)
        if not isinstance(state.history, tuple) or len(state.history) != self.history_length or any(
                tuple(z.shape) != want for z in state.history):
            raise ValueError(f"state.history must be a tuple of {self.history_length} spike tensors of shape {want} "
                             "(⌈max_delay⌉ + 1 steps, oldest first); pass state=None to start from zeros")

    # -- running ---------------------------------------------------------------------------
    def _delayed_step(self, record: bool = False) -> Callable[[Tensor, DelayedState], tuple[Any, DelayedState]]:
        w_rec_t = effective_weight(self, "recurrent_weight").t()
        neuron_step = self.make_neuron_step()  # type: ignore[attr-defined]
        whole, frac = _split(self.recurrent_delay)
        # z̃(t − 1 − d) = Σ_s c_s ⊙ z(t − 1 − s) with c_s = (1 − f)·[k = s] + f·[k + 1 = s]: a few
        # small multiply-adds per step over the shifts in use, no per-step copy of the history
        shifts = sorted({int(k) for k in whole.tolist()} | {int(k) + 1 for k in whole[frac.detach() > 0].tolist()})
        zero = frac.new_zeros(())
        coefs = [torch.where(whole == s, 1.0 - frac, zero) + torch.where(whole + 1 == s, frac, zero) for s in shifts]

        def step(input_current: Tensor, state: DelayedState) -> tuple[Any, DelayedState]:
            history = state.history
            delayed = coefs[0] * history[-1 - shifts[0]]
            for s, c in zip(shifts[1:], coefs[1:]):
                delayed = torch.addcmul(delayed, c, history[-1 - s])
            z, neuron = neuron_step(torch.addmm(input_current, delayed, w_rec_t), state.neuron)
            return ((z, neuron) if record else z), DelayedState(neuron, (*history[1:], z))

        return step

    def _currents(self, x: Tensor, state: DelayedState | None) -> tuple[Tensor, DelayedState]:
        check_input(x, self.input_size)  # type: ignore[attr-defined]
        self.project_()
        xs = x.transpose(0, 1) if self.batch_first else x  # type: ignore[attr-defined]
        if state is None:
            state = self.initial_state(xs.shape[1], device=xs.device, dtype=xs.dtype)
        else:
            self.check_state(state, xs.shape[1])
        currents = xs @ effective_weight(self, "input_weight").t()
        if self.bias is not None:  # type: ignore[attr-defined]
            currents = currents + self.bias  # type: ignore[attr-defined]
        return currents, state

    def forward(self, x: Tensor, state: DelayedState | None = None) -> tuple[Tensor, DelayedState]:
        """Run a sequence ``x [T, B, I]``; returns ``(z [T, B, H], DelayedState)``."""
        currents, state = self._currents(x, state)
        z, state = scan(self._delayed_step(), currents, state)
        return (z.transpose(0, 1) if self.batch_first else z), state  # type: ignore[attr-defined]

    def trajectory(self, x: Tensor, state: DelayedState | None = None) -> tuple[Tensor, NamedTuple]:
        """``(z, neuron states stacked over time)``, as :meth:`~ranvier.LIF.trajectory` (no history)."""
        currents, state = self._currents(x, state)
        (z, neuron), _ = scan(self._delayed_step(record=True), currents, state)
        if self.batch_first:  # type: ignore[attr-defined]
            z = z.transpose(0, 1)
            neuron = type(neuron)(*(s.transpose(0, 1) for s in neuron))
        return z, neuron

    def extra_repr(self) -> str:
        return super().extra_repr() + f", max_delay={self.max_delay}"  # type: ignore[misc]


class DelayedLIF(_RecurrentDelays, LIF):
    r"""A recurrent LIF layer with a learnable delay per presynaptic neuron on the recurrent synapses.

    ``I_t = W_in x_t + W_rec z̃(t − 1 − d)`` then :func:`~ranvier.lif_step` (module docstring).
    Takes every argument of :class:`~ranvier.LIF` plus ``max_delay`` (``D_max``, steps) and
    ``delay_init`` (delays start ``U(low, high)``, clipped to ``D_max``).

    Example::

        >>> layer = DelayedLIF(3, 8, max_delay=10.0, delay_init=(0.0, 10.0))
        >>> z, state = layer(torch.randn(5, 2, 3))
        >>> z.shape, len(state.history), layer.delays.shape
        (torch.Size([5, 2, 8]), 11, torch.Size([8]))
    """

    def __init__(self, input_size: int, hidden_size: int, *, max_delay: float,
                 delay_init: tuple[float, float] = (0.0, 4.0), **kwargs: Any) -> None:
        super().__init__(input_size, hidden_size, **kwargs)
        self._init_delays(max_delay, delay_init)


class DelayedALIF(_RecurrentDelays, ALIF):
    r"""A recurrent ALIF layer with a learnable delay per presynaptic neuron on the recurrent synapses.

    As :class:`DelayedLIF`, with the neuron of :class:`~ranvier.ALIF`.

    Example::

        >>> layer = DelayedALIF(3, 8, max_delay=4.0, beta=1.8)
        >>> z, state = layer(torch.randn(5, 2, 3))
        >>> state.neuron.b.shape
        torch.Size([2, 8])
    """

    def __init__(self, input_size: int, hidden_size: int, *, max_delay: float,
                 delay_init: tuple[float, float] = (0.0, 4.0), **kwargs: Any) -> None:
        super().__init__(input_size, hidden_size, **kwargs)
        self._init_delays(max_delay, delay_init)
