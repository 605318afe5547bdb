"""Fused whole-sequence LIF/ALIF layer: one autograd node for all time steps.

:class:`SpikingRecurrentFunction` runs the recurrent part of :class:`~ranvier.LIF` /
:class:`~ranvier.ALIF` (everything after the input projection) in compiled loops
(``_lif_numba.py``) and backpropagates through it with a hand-written, sparse backward. It stores
only the spikes and the pseudo-derivative of every step (ALIF also the adaptive threshold and the
surrogate argument), not the autograd graph of ~30 ops per step.

The modules call it through :func:`select` and :func:`run` from ``SpikingRecurrent.forward``;
the pure-torch path (``backend="reference"``) is what the kernel is tested against.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..core.surrogate import PiecewiseLinear
from ..layers.recurrent import SpikingRecurrent
from ..neurons.alif import ALIF, ALIFState
from ..neurons.lif import LIF, LIFState
from ..sparse.masks import effective_weight
from . import _blas, unsupported_input, wants_kernel
from . import _lif_numba as nb
from ._threads import num_chunks, run_chunks

__all__ = ["unsupported_reason", "select", "run", "SpikingRecurrentFunction"]

# The recurrent-weight gradient Σ_t δ_tᵀ z_{t−1} is accumulated row by row over the spiking
# presynaptic units when fewer than this fraction of them spike; above it one BLAS GEMM over all
# steps is faster (BLAS does ~10x the FLOP/s of the row loop on this CPU; see docs/kernels.md).
SPARSE_WEIGHT_GRAD_MAX_ACTIVITY = 0.05

# Above this fraction of active units (spiking, forward; non-zero pseudo-derivative, backward) a
# step's recurrent product is one GEMM over the thread's batch slice instead of row gathers or
# dot products (see _blas.py). The loops, four rows per pass, match the GEMM at 22-25 % active
# units (benchmarks/gemm_breakeven.py). Without MKL it never switches.
GEMM_MIN_ACTIVITY = 0.25


def _gemm_min_activity() -> float:
    return GEMM_MIN_ACTIVITY if _blas.AVAILABLE else 2.0


class _Constants(NamedTuple):
    """Per-neuron constants and switches of one call, as numpy arrays in the tensors' dtype."""

    alpha: np.ndarray
    gain_in: np.ndarray
    thr: np.ndarray
    rho: np.ndarray
    gain_b: np.ndarray
    beta: np.ndarray
    consts: np.ndarray  # [dt, surrogate a, surrogate b, n_refractory]
    flags: np.ndarray  # see _lif_numba.ADAPTIVE ...


def unsupported_reason(layer: SpikingRecurrent, currents: Tensor, state: NamedTuple) -> str | None:
    """Why the fused kernel cannot run this call, or ``None`` when it can."""
    cls = type(layer)
    known = ALIF if isinstance(layer, ALIF) else LIF if isinstance(layer, LIF) else None
    if known is None:
        return f"{cls.__name__} is not LIF or ALIF"
    # A subclass that changes the dynamics (its own step or recurrent wiring) is not what the
    # kernel computes.
    for method in ("make_neuron_step", "_recurrent_step", "forward"):
        if getattr(cls, method) is not getattr(known, method):
            return f"{cls.__name__} overrides {method}"
    if layer.convention.reset != "subtract":
        return f"convention.reset={layer.convention.reset!r} (the kernel implements the subtractive reset)"
    shared = unsupported_input(currents, layer.surrogate)
    if shared is not None:
        return shared
    for name in ("tau_mem", "threshold", "tau_adapt", "beta"):
        value = getattr(layer, name, None)
        if isinstance(value, Tensor) and (value.requires_grad or value.dtype != currents.dtype or value.device.type != "cpu"):
            return f"{name} requires grad or has another dtype/device than the input"
    if layer.recurrent_weight is not None and layer.recurrent_weight.dtype != currents.dtype:
        return "recurrent_weight has another dtype than the input"
    for name, value in zip(state._fields, state):
        if value.dtype != currents.dtype or value.device.type != "cpu":
            return f"state.{name} has dtype {value.dtype} on {value.device}, not {currents.dtype} on cpu"
    if layer.n_refractory > 0 and state.refractory.requires_grad:
        return "a state.refractory that requires grad"
    return None


def select(layer: SpikingRecurrent, currents: Tensor, state: NamedTuple) -> bool:
    """Whether the layer's forward should use the kernel (see :func:`ranvier.kernels.wants_kernel`)."""
    return wants_kernel(layer.backend, None if layer.backend == "reference" else unsupported_reason(layer, currents, state))


def _constants(layer: SpikingRecurrent, dtype: torch.dtype) -> _Constants:
    conv = layer.convention
    adaptive = isinstance(layer, ALIF)
    # The same expressions as make_neuron_step / integrate_and_fire, so float64 results agree bit
    # for bit where the arithmetic is the same.
    alpha = torch.exp(-layer.dt / layer.tau_mem)
    gain_in = (1.0 - alpha) if conv.scale_input else torch.ones_like(alpha)
    if adaptive:
        rho = torch.exp(-layer.dt / layer.tau_adapt)
        gain_b = (1.0 - rho) if conv.adapt_one_minus_rho else torch.ones_like(rho)
        beta = layer.beta
    else:
        rho = gain_b = beta = torch.zeros_like(alpha)
    s = layer.surrogate
    if isinstance(s, PiecewiseLinear):
        kind, sa, sb = nb.PIECEWISE_LINEAR, s.gamma, s.width
    else:
        kind, sa, sb = nb.FAST_SIGMOID, s.slope, 0.0
    npd = np.float64 if dtype == torch.float64 else np.float32
    flags = np.zeros(7, dtype=np.int64)
    flags[nb.ADAPTIVE] = adaptive
    flags[nb.RESET_BY_ADAPTIVE] = conv.reset_by_adaptive
    flags[nb.NORMALIZE_BY_ADAPTIVE] = conv.normalize_by_adaptive
    flags[nb.SPIKE_FROM_PREVIOUS] = conv.spike_from_previous
    flags[nb.SURROGATE] = kind
    flags[nb.HAS_REC] = layer.recurrent_weight is not None
    flags[nb.DETACH_RESET] = layer.detach_reset
    arr = lambda t: t.detach().to(dtype).contiguous().numpy()  # noqa: E731
    return _Constants(arr(alpha), arr(gain_in), arr(layer.threshold), arr(rho), arr(gain_b), arr(beta),
                      np.array([layer.dt, sa, sb, layer.n_refractory], dtype=npd), flags)


class SpikingRecurrentFunction(torch.autograd.Function):
    """``(currents [T,B,H], W_rec or None, v0, z0, b0, r0) -> (z [T,B,H], v_T, b_T, r_T)``.

    ``currents`` is ``W_in x_t (+ bias)`` for every step; ``W_rec`` the masked recurrent weight.
    Gradients flow to ``currents``, ``W_rec`` and the initial ``v``, ``z`` and ``b`` (not to the
    refractory counter, which is piecewise constant).
    """

    @staticmethod
    def forward(ctx, currents, w_rec, v0, z0, b0, r0, k: _Constants):  # type: ignore[override]
        T, B, H = currents.shape
        dtype = currents.dtype
        adaptive = bool(k.flags[nb.ADAPTIVE])
        cur = currents.detach().contiguous()
        # Wᵀ (rows per presynaptic unit) for the forward's gathers and GEMMs; W itself for the
        # backward's GEMM (MKL's small GEMMs are markedly faster with an untransposed operand)
        w = w_rec.detach().contiguous() if w_rec is not None else torch.zeros(1, 1, dtype=dtype)
        wt = w.t().contiguous()
        # What only the backward reads is kept for every step only if a backward can run; otherwise
        # the kernel writes it to a one-step buffer.
        steps = T if any(ctx.needs_input_grad[:5]) else 1
        z = torch.empty(T, B, H, dtype=dtype)
        psi = torch.empty(steps, B, H, dtype=dtype)
        # ALIF: the backward reads the surrogate argument x only when the threshold normalises
        # (x = (v − A)/A), and the threshold A when it normalises or resets; otherwise they too go
        # to one-step buffers (at sequential-MNIST length each full array is 26 MB to write).
        norm, reset = (adaptive and bool(k.flags[f]) for f in (nb.NORMALIZE_BY_ADAPTIVE, nb.RESET_BY_ADAPTIVE))
        x_s = torch.empty((steps if norm else 1, B, H) if adaptive else (0, 0, 0), dtype=dtype)
        a_s = torch.empty((steps if norm or reset else 1, B, H) if adaptive else (0, 0, 0), dtype=dtype)
        v_t, b_t, r_t = (torch.empty(B, H, dtype=dtype) for _ in range(3))
        v0n, z0n, b0n, r0n = (s.detach().contiguous().numpy() for s in (v0, z0, b0, r0))
        spike_count = np.zeros(B, dtype=np.int64)
        args = (cur.numpy(), wt.numpy(), v0n, z0n, b0n, r0n, *k[:6], k.consts, k.flags,
                z.numpy(), psi.numpy(), x_s.numpy(), a_s.numpy(), v_t.numpy(), b_t.numpy(), r_t.numpy(), spike_count,
                _blas.gemm_for(dtype), _gemm_min_activity())
        run_chunks(lambda _, s, e: nb.lif_forward(*args, s, e), B, num_chunks(B))
        ctx.save_for_backward(wt, w, z0.detach(), z, psi, x_s, a_s)
        ctx.k = k
        ctx.has_rec = w_rec is not None
        # The spikes that multiply W in the weight gradient: z_0 … z_{T−2} and the initial z
        # (counted here rather than by a pass over z in the backward).
        ctx.initial_spikes = int(z0.count_nonzero())
        ctx.presynaptic_spikes = int(spike_count.sum()) - int(z[-1].count_nonzero()) + ctx.initial_spikes
        # An output nobody uses (often the spike train, when the loss reads the final state) gets
        # None in the backward instead of a zero tensor of its full size.
        ctx.set_materialize_grads(False)
        # (one call: each call replaces the previous set)
        ctx.mark_non_differentiable(*((r_t,) if adaptive else (r_t, b_t)))
        return z, v_t, b_t, r_t

    @staticmethod
    def backward(ctx, gz, gv, gb, _gr):  # type: ignore[override]
        wt, w, z0, z, psi, x_s, a_s = ctx.saved_tensors
        k = ctx.k
        T, B, H = z.shape
        dtype = z.dtype
        gz = torch.zeros(1, B, H, dtype=dtype) if gz is None else gz.contiguous()
        gv = torch.zeros(B, H, dtype=dtype) if gv is None else gv.contiguous()
        gb = torch.zeros(B, H, dtype=dtype) if gb is None else gb.contiguous()
        need = ctx.needs_input_grad
        chunks = num_chunks(B)
        d_cur = torch.empty(T, B, H, dtype=dtype)
        want_dw = ctx.has_rec and need[1]
        # the spikes that multiply W at each step: z_{t−1}, with z_{−1} = z0
        sparse_dw = want_dw and ctx.presynaptic_spikes <= SPARSE_WEIGHT_GRAD_MAX_ACTIVITY * z.numel()
        hw = H if sparse_dw else 1  # one accumulator per thread's batch slice
        d_wt = torch.zeros(chunks, hw, hw, dtype=dtype)
        dv0, dz0, db0 = (torch.empty(B, H, dtype=dtype) for _ in range(3))
        args = (gz.numpy(), gv.numpy(), gb.numpy(), wt.numpy(), w.numpy(), z0.contiguous().numpy(), z.numpy(), psi.numpy(),
                x_s.numpy(), a_s.numpy(), *k[:6], k.consts, k.flags, bool(need[3]), sparse_dw, _blas.gemm_for(dtype),
                _gemm_min_activity())
        outs = (d_cur.numpy(), dv0.numpy(), dz0.numpy(), db0.numpy())
        dwt_n = d_wt.numpy()
        run_chunks(lambda c, s, e: nb.lif_backward(*args, outs[0], dwt_n[c], *outs[1:], s, e), B, chunks)
        if sparse_dw:
            d_w = d_wt.sum(0).t()
        elif want_dw:  # Σ_t δ_tᵀ z_{t−1} with z_{−1} = z0, without copying the spikes
            d_w = d_cur[1:].reshape(-1, H).t() @ z[:-1].reshape(-1, H) if T > 1 else None
            if ctx.initial_spikes or d_w is None:  # (the usual all-zero z0 adds nothing)
                d_w = d_cur[0].t() @ z0 if d_w is None else d_w.addmm_(d_cur[0].t(), z0)
        else:
            d_w = None
        return (d_cur if need[0] else None, d_w, dv0 if need[2] else None, dz0 if need[3] else None,
                db0 if need[4] else None, None, None)


def run(layer: SpikingRecurrent, currents: Tensor, state: NamedTuple) -> tuple[Tensor, NamedTuple]:
    """The kernel equivalent of ``scan(layer._recurrent_step(), currents, state)``."""
    w_rec = None if layer.recurrent_weight is None else effective_weight(layer, "recurrent_weight")
    k = _constants(layer, currents.dtype)
    b0 = state.b if isinstance(state, ALIFState) else torch.zeros_like(state.v)
    z, v_t, b_t, r_t = SpikingRecurrentFunction.apply(currents, w_rec, state.v, state.z, b0, state.refractory, k)
    z_t = z[-1]
    if isinstance(layer, ALIF):
        return z, ALIFState(v_t, z_t, b_t, r_t)
    return z, LIFState(v_t, z_t, r_t)
