"""Leaky integrate-and-fire neuron (LSNN-official ``LIF``; SCIENCE.md §1.2 with β = 0)."""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ..core.surrogate import PiecewiseLinear, Surrogate
from ..layers.recurrent import SpikingRecurrent
from ._params import per_neuron
from .common import LSNN_CONVENTION, Convention, integrate_and_fire

__all__ = ["LIFState", "lif_step", "LIF"]


class LIFState(NamedTuple):
    v: Tensor  # [B, H] membrane potential
    z: Tensor  # [B, H] last spikes (0 or 1/dt)
    refractory: Tensor  # [B, H] refractory steps left


def lif_step(
    current: Tensor,
    state: LIFState,
    *,
    alpha: Tensor,
    threshold: Tensor,
    surrogate: Surrogate = PiecewiseLinear(),
    convention: Convention = LSNN_CONVENTION,
    n_refractory: int = 0,
    dt: float = 1.0,
    detach_reset: bool = False,
) -> tuple[Tensor, LIFState]:
    """One LIF step (LSNN convention by default)::

        v_t = α·v_{t−1} + (1 − α)·I_t − z_{t−1}·v_th·dt
        z_t = H((v_{t−1} − v_th)/v_th)/dt          (0 during the refractory period)

    Returns ``(z_t, LIFState(v_t, z_t, refractory_t))``.
    """
    z, v, refractory = integrate_and_fire(
        current, state.v, state.z, state.refractory, threshold,
        alpha=alpha, base_threshold=threshold, surrogate=surrogate, convention=convention,
        n_refractory=n_refractory, dt=dt, detach_reset=detach_reset,
    )
    return z, LIFState(v, z, refractory)


class LIF(SpikingRecurrent):
    r"""A recurrent layer of LIF neurons.

    ``I_t = W_in x_t + W_rec z_{t−1}`` then :func:`lif_step`. With the default LSNN convention::

        α = exp(−dt/τ_m)
        v_t = α·v_{t−1} + (1 − α)·I_t − z_{t−1}·v_th·dt
        z_t = H((v_{t−1} − v_th)/v_th)/dt

    Args:
        input_size, hidden_size: feature sizes.
        tau_mem: membrane time constant τ_m (scalar or ``[hidden]``), in units of ``dt``.
        threshold: firing threshold v_th (scalar or ``[hidden]``).
        n_refractory: steps a neuron stays silent after a spike.
        surrogate: pseudo-derivative object (default LSNN triangle, γ = 0.3).
        convention: :data:`~ranvier.LSNN_CONVENTION` or :data:`~ranvier.EPROP_CONVENTION` (or any mix).
        recurrent, self_connections, bias, batch_first: wiring and layout options.
        backend: ``"auto"``, ``"kernel"`` or ``"reference"`` (see :class:`~ranvier.layers.SpikingRecurrent`).
        detach_reset: stop gradients through the reset term.

    Shape:
        input ``[T, B, I]`` (``[B, T, I]`` with ``batch_first``); output spikes ``[T, B, H]``.

    Example::

        >>> layer = LIF(3, 8)
        >>> z, state = layer(torch.randn(5, 2, 3))
        >>> z.shape, state.v.shape
        (torch.Size([5, 2, 8]), torch.Size([2, 8]))
    """

    State = LIFState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        tau_mem: float | Tensor = 20.0,
        threshold: float | Tensor = 0.03,
        n_refractory: int = 0,
        dt: float = 1.0,
        surrogate: Surrogate = PiecewiseLinear(),
        convention: Convention = LSNN_CONVENTION,
        detach_reset: bool = False,
        recurrent: bool = True,
        self_connections: bool = False,
        bias: bool = False,
        batch_first: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__(input_size, hidden_size, recurrent=recurrent, self_connections=self_connections,
                         bias=bias, batch_first=batch_first, backend=backend)
        self.register_buffer("tau_mem", per_neuron(tau_mem, hidden_size, "tau_mem"))
        self.register_buffer("threshold", per_neuron(threshold, hidden_size, "threshold"))
        self.n_refractory = int(n_refractory)
        self.dt = float(dt)
        self.surrogate = surrogate
        self.convention = convention
        self.detach_reset = detach_reset

    def make_neuron_step(self) -> Callable[[Tensor, LIFState], tuple[Tensor, LIFState]]:
        return functools.partial(
            lif_step, alpha=torch.exp(-self.dt / self.tau_mem), threshold=self.threshold,
            surrogate=self.surrogate, convention=self.convention, n_refractory=self.n_refractory,
            dt=self.dt, detach_reset=self.detach_reset,
        )
