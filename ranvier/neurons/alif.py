"""Adaptive-threshold LIF neuron (LSNN ``ALIF``; SCIENCE.md §1.2, e-prop variant §7.2)."""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ..core.surrogate import PiecewiseLinear, Surrogate
from ..layers.recurrent import SpikingRecurrent
from ._params import per_neuron
from .common import LSNN_CONVENTION, Convention, integrate_and_fire

__all__ = ["ALIFState", "alif_step", "ALIF"]


class ALIFState(NamedTuple):
    v: Tensor  # [B, H] membrane potential
    z: Tensor  # [B, H] last spikes (0 or 1/dt)
    b: Tensor  # [B, H] threshold adaptation
    refractory: Tensor  # [B, H] refractory steps left


def alif_step(
    current: Tensor,
    state: ALIFState,
    *,
    alpha: Tensor,
    rho: Tensor,
    beta: Tensor,
    threshold: Tensor,
    surrogate: Surrogate = PiecewiseLinear(),
    convention: Convention = LSNN_CONVENTION,
    n_refractory: int = 0,
    dt: float = 1.0,
    detach_reset: bool = False,
) -> tuple[Tensor, ALIFState]:
    """One ALIF step (LSNN convention by default)::

        b_t = ρ·b_{t−1} + (1 − ρ)·z_{t−1}
        A_t = v_th + β·b_t
        v_t = α·v_{t−1} + (1 − α)·I_t − z_{t−1}·A_t·dt
        z_t = H((v_{t−1} − A_t)/A_t)/dt            (0 during the refractory period)

    β = 0 gives a LIF unit, so one layer can mix both (a per-neuron ``beta`` vector).
    Returns ``(z_t, ALIFState(v_t, z_t, b_t, refractory_t))``.
    """
    gain = (1.0 - rho) if convention.adapt_one_minus_rho else 1.0
    b = rho * state.b + gain * state.z
    adaptive_threshold = threshold + beta * b
    z, v, refractory = integrate_and_fire(
        current, state.v, state.z, state.refractory, adaptive_threshold,
        alpha=alpha, base_threshold=threshold, surrogate=surrogate, convention=convention,
        n_refractory=n_refractory, dt=dt, detach_reset=detach_reset,
    )
    return z, ALIFState(v, z, b, refractory)


class ALIF(SpikingRecurrent):
    r"""A recurrent layer of adaptive LIF neurons (an LSNN when ``beta`` mixes 0 and β > 0).

    ``I_t = W_in x_t + W_rec z_{t−1}`` then :func:`alif_step`. With the default LSNN convention::

        α = exp(−dt/τ_m),  ρ = exp(−dt/τ_a)
        b_t = ρ·b_{t−1} + (1 − ρ)·z_{t−1}
        A_t = v_th + β·b_t
        v_t = α·v_{t−1} + (1 − α)·I_t − z_{t−1}·A_t·dt
        z_t = H((v_{t−1} − A_t)/A_t)/dt

    Args:
        input_size, hidden_size: feature sizes.
        tau_mem, tau_adapt: τ_m and τ_a (scalars or ``[hidden]``), in units of ``dt``.
        beta: adaptation strength β (scalar or ``[hidden]``; 0 makes a unit plain LIF).
        threshold: base threshold v_th.
        n_refractory, dt, surrogate, convention, detach_reset, recurrent, self_connections,
        bias, batch_first, backend: as in :class:`~ranvier.LIF`.

    Example::

        >>> layer = ALIF(3, 8, beta=1.8, tau_adapt=200.0)
        >>> z, state = layer(torch.randn(5, 2, 3))
        >>> state.b.shape
        torch.Size([2, 8])
    """

    State = ALIFState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        tau_mem: float | Tensor = 20.0,
        tau_adapt: float | Tensor = 200.0,
        beta: float | Tensor = 1.8,
        threshold: float | Tensor = 0.01,
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
        self.register_buffer("tau_adapt", per_neuron(tau_adapt, hidden_size, "tau_adapt"))
        self.register_buffer("beta", per_neuron(beta, hidden_size, "beta"))
        self.register_buffer("threshold", per_neuron(threshold, hidden_size, "threshold"))
        self.n_refractory = int(n_refractory)
        self.dt = float(dt)
        self.surrogate = surrogate
        self.convention = convention
        self.detach_reset = detach_reset

    def make_neuron_step(self) -> Callable[[Tensor, ALIFState], tuple[Tensor, ALIFState]]:
        return functools.partial(
            alif_step, alpha=torch.exp(-self.dt / self.tau_mem), rho=torch.exp(-self.dt / self.tau_adapt),
            beta=self.beta, threshold=self.threshold, surrogate=self.surrogate, convention=self.convention,
            n_refractory=self.n_refractory, dt=self.dt, detach_reset=self.detach_reset,
        )
