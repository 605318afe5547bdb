"""Readouts: exponentially filtered spikes and the leaky-integrator readout."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core.scan import scan
from ..sparse.masks import effective_weight

__all__ = ["exp_filter", "LeakyReadout", "firing_rate_loss"]


def exp_filter(x: Tensor, decay: float | Tensor, initial: Tensor | None = None) -> Tensor:
    """Low-pass filter along time (dim 0): ``x̄_t = d·x̄_{t−1} + (1 − d)·x_t``, ``x̄_{−1} = 0``.

    This is LSNN-official's ``exp_convolve``. ``x``: ``[T, ...]``; returns the same shape.
    """
    decay = torch.as_tensor(decay, dtype=x.dtype, device=x.device)
    state = torch.zeros_like(x[0]) if initial is None else initial

    def step(x_t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        s = decay * s + (1 - decay) * x_t
        return s, s

    out, _ = scan(step, x, state)
    return out


class LeakyReadout(nn.Module):
    """Leaky-integrator readout: ``y_t = κ·y_{t−1} + (1 − κ)·W z_t``, output ``y_t + b``.

    ``κ = exp(−dt/τ_out)``. Because the filter is linear it equals
    ``Linear(exp_filter(z, κ))``, which is how it is computed: one matmul, then the filter
    on the (smaller) output. With ``tau_out = 0`` it is a plain linear readout.

    Shape: ``z`` ``[T, B, H]`` (``[B, T, H]`` with ``batch_first``) → ``[T, B, O]``.
    """

    def __init__(self, input_size: int, output_size: int, *, tau_out: float = 20.0, dt: float = 1.0,
                 batch_first: bool = False) -> None:
        super().__init__()
        if tau_out < 0:
            raise ValueError(f"tau_out must be >= 0, got {tau_out}")
        self.linear = nn.Linear(input_size, output_size)
        self.decay = math.exp(-dt / tau_out) if tau_out > 0 else 0.0
        self.batch_first = batch_first

    def forward(self, z: Tensor) -> Tensor:
        zs = z.transpose(0, 1) if self.batch_first else z  # [T, B, H]
        y = zs @ effective_weight(self.linear, "weight").t()  # [T, B, O]
        if self.decay > 0:
            y = exp_filter(y, self.decay)
        y = y + self.linear.bias
        return y.transpose(0, 1) if self.batch_first else y


def firing_rate_loss(z: Tensor, target_rate: float = 0.01, dt: float = 1.0) -> Tensor:
    """LSNN firing-rate regulariser ``Σ_j (mean_{t,b} z_j/dt − target)²`` (spikes ``[T, B, H]``).

    ``target_rate`` is per time step (0.01 per 1-ms step = 10 Hz). Multiply by the weight
    (LSNN-official uses 0.1).
    """
    rate = z.mean(dim=(0, 1)) / dt  # [H]
    return ((rate - target_rate) ** 2).sum()
