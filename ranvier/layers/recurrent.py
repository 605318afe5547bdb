"""Recurrently wired spiking layer: input and recurrent weights around a neuron step."""
from __future__ import annotations

import abc
import math
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.scan import scan
from ..kernels import check_backend
from ..sparse.masks import effective_weight

__all__ = ["SpikingRecurrent", "check_input"]


def check_input(x: Tensor, input_size: int, name: str = "input") -> None:
    """Reject what would silently train on garbage: wrong rank/size, non-float, NaN/inf, empty."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{name} must have 3 dims (time, batch, features) or with batch_first (batch, time, features); got shape {tuple(x.shape)}")
    if x.shape[-1] != input_size:
        raise ValueError(f"{name} has {x.shape[-1]} features but the layer expects input_size={input_size}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): need at least one time step and one sample")
    # One reduction first: NaN and ±inf survive a sum (inf − inf is NaN), so a finite sum rules
    # them out in one pass instead of four (isfinite's abs, eq and ne, then all), which showed in
    # a training step's profile. Only a non-finite sum, which finite inputs can also give by
    # overflow, gets the exact element-wise check.
    if not torch.isfinite(x.detach().sum()) and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values")


class SpikingRecurrent(nn.Module, abc.ABC):
    """Base of :class:`~ranvier.LIF` and :class:`~ranvier.ALIF`.

    ``I_t = W_in x_t + W_rec z_{t−1} (+ bias)``; subclasses provide ``neuron_step(I_t, state)``
    and the NamedTuple ``State`` (whose field ``z`` holds the last spikes). The input projection
    of the whole sequence is one matmul; only the recurrent part runs step by step.
    Self-connections (the diagonal of ``W_rec``) are masked out unless ``self_connections=True``,
    as the LSNN code does ("disconnect autapse").
    ``backend``: ``"auto"`` (the fused CPU kernel of :mod:`ranvier.kernels` when it supports the
    call, else the step loop), ``"kernel"`` (raise if unsupported) or ``"reference"`` (the step loop).
    """

    State: type[NamedTuple]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        recurrent: bool = True,
        self_connections: bool = False,
        bias: bool = False,
        batch_first: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"input_size and hidden_size must be positive, got {input_size}, {hidden_size}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.batch_first = batch_first
        self.backend = check_backend(backend)  # issue 5: "auto" | "kernel" | "reference"
        self.input_weight = nn.Parameter(torch.empty(hidden_size, input_size))
        self.recurrent_weight = nn.Parameter(torch.empty(hidden_size, hidden_size)) if recurrent else None
        mask = torch.ones(hidden_size, hidden_size)
        if not self_connections:
            mask.fill_diagonal_(0.0)
        self.register_buffer("recurrent_mask", mask if recurrent else None)
        self.bias = nn.Parameter(torch.zeros(hidden_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # LSNN-official: W ~ N(0, 1)/sqrt(fan_in) for both matrices.
        with torch.no_grad():
            self.input_weight.normal_(0.0, 1.0 / math.sqrt(self.input_size))
            if self.recurrent_weight is not None:
                self.recurrent_weight.normal_(0.0, 1.0 / math.sqrt(self.hidden_size))
                self.recurrent_weight.mul_(self.recurrent_mask)

    # -- state -----------------------------------------------------------------------------
    def initial_state(self, batch_size: int, *, device: Any = None, dtype: torch.dtype | None = None) -> NamedTuple:
        """All-zero state for ``batch_size`` samples (what ``state=None`` means)."""
        device = device if device is not None else self.input_weight.device
        dtype = dtype if dtype is not None else self.input_weight.dtype
        zeros = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return self.State(*([zeros] * len(self.State._fields)))

    def check_state(self, state: NamedTuple, batch_size: int) -> None:
        """Raise if ``state`` is not this layer's State with every field ``[batch, hidden]``."""
        if not isinstance(state, self.State):
            raise TypeError(f"state must be a {self.State.__name__}, got {type(state).__name__}")
        want = (batch_size, self.hidden_size)
        for name, value in zip(state._fields, state):
            if tuple(value.shape) != want:
                raise ValueError(f"state.{name} has shape {tuple(value.shape)} but must be {want} (batch, hidden_size); "
                                 "pass state=None to start from zeros")

    # -- running ---------------------------------------------------------------------------
    @abc.abstractmethod
    def make_neuron_step(self) -> Callable[[Tensor, NamedTuple], tuple[Tensor, NamedTuple]]:
        """Return ``step(current [B, H], state) -> (z, state)`` with the per-neuron constants
        (decays etc.) computed once, so a sequence does not recompute them every step."""

    def _recurrent_step(self) -> Callable[[Tensor, NamedTuple], tuple[Tensor, NamedTuple]]:
        w_rec_t = None if self.recurrent_weight is None else effective_weight(self, "recurrent_weight").t()
        neuron_step = self.make_neuron_step()

        def step(input_current: Tensor, state: NamedTuple) -> tuple[Tensor, NamedTuple]:
            current = input_current if w_rec_t is None else torch.addmm(input_current, state.z, w_rec_t)
            return neuron_step(current, state)

        return step

    def _prepare(self, x: Tensor, state: NamedTuple | None) -> tuple[Tensor, NamedTuple]:
        check_input(x, self.input_size)
        xs = x.transpose(0, 1) if self.batch_first else x  # [T, B, I]
        if state is None:
            state = self.initial_state(xs.shape[1], device=xs.device, dtype=xs.dtype)
        else:
            self.check_state(state, xs.shape[1])
        # [T, B, H]: one matmul for the whole sequence, the bias added inside it (no second pass
        # over a T·B·H tensor, forward or backward)
        currents = F.linear(xs, effective_weight(self, "input_weight"), self.bias)
        return currents, state

    def forward(self, x: Tensor, state: NamedTuple | None = None) -> tuple[Tensor, NamedTuple]:
        """Run a sequence. ``x``: ``[T, B, I]`` (``[B, T, I]`` with ``batch_first``).

        Returns ``(z, final_state)``, ``z`` the spikes ``[T, B, H]`` (``[B, T, H]``).
        On CPU the fused kernel (:mod:`ranvier.kernels`) runs the time loop unless
        ``backend="reference"``; both compute the same function and gradients.
        """
        currents, state = self._prepare(x, state)
        from ..kernels import lif as kernel  # lazy: numba loads on first use, not on import

        if kernel.select(self, currents, state):
            z, state = kernel.run(self, currents, state)
        else:
            z, state = scan(self._recurrent_step(), currents, state)
        return (z.transpose(0, 1) if self.batch_first else z), state

    def trajectory(self, x: Tensor, state: NamedTuple | None = None) -> tuple[Tensor, NamedTuple]:
        """Like :meth:`forward` but returns ``(z, states)``, every state field stacked over time.
        Always runs the reference step loop (the kernel does not keep every state)."""
        currents, state = self._prepare(x, state)
        (z, states), _ = scan(self._recurrent_step(), currents, state, record=True)
        if self.batch_first:
            z = z.transpose(0, 1)
            states = type(states)(*(s.transpose(0, 1) for s in states))
        return z, states

    def cell(self, x_t: Tensor, state: NamedTuple | None = None) -> tuple[Tensor, NamedTuple]:
        """One time step on a raw input ``x_t`` ``[B, I]``: ``z_t, state = layer.cell(x_t, state)``."""
        z, state = self.forward(x_t.unsqueeze(1 if self.batch_first else 0), state)
        return z.squeeze(1 if self.batch_first else 0), state

    def extra_repr(self) -> str:
        backend = "" if self.backend == "auto" else f", backend={self.backend!r}"
        return f"{self.input_size}, {self.hidden_size}, recurrent={self.recurrent_weight is not None}, batch_first={self.batch_first}{backend}"
