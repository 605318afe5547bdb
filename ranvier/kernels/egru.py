"""Fused whole-sequence EGRU layer: one autograd node per layer for all time steps.

:class:`EGRUFunction` runs the recurrent part of one :class:`~ranvier.EGRU` layer (everything
after the input projection) in compiled loops (``_egru_numba.py``) with a hand-written backward
that skips the recurrent product for units whose gradient cannot flow (no event and a zero
pseudo-derivative). Dropout between layers, DropConnect on ``W_hh``, masks and the threshold
parameterisation stay in torch around it, so their gradients come from autograd.
``EGRU._run`` calls :func:`select` and :func:`run_layer`, also for ``trajectory()``: the state of
every step is rebuilt in torch from the kernel's ĉ and y.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..core.surrogate import PiecewiseLinear
from ..neurons.egru import EGRU, TRACE_DECAY, EGRUState
from . import _blas, unsupported_input, wants_kernel
from . import _egru_numba as nb
from ._threads import num_chunks, run_chunks

__all__ = ["unsupported_reason", "select", "run_layer", "EGRUFunction"]


def unsupported_reason(layer: EGRU, x: Tensor, state: object) -> str | None:
    """Why the fused kernel cannot run this call, or ``None`` when it can."""
    if type(layer)._run is not EGRU._run or type(layer)._layer_step is not EGRU._layer_step:
        return f"{type(layer).__name__} overrides the EGRU update"
    shared = unsupported_input(x, layer.surrogate)
    if shared is not None:
        return shared
    if not layer._event_gating:
        return "_event_gating=False (the plain-GRU test mode)"
    for p in layer.parameters():
        if p.dtype != x.dtype or p.device.type != "cpu":
            return "parameters with another dtype/device than the input"
    return None


def select(layer: EGRU, x: Tensor, state: object) -> bool:
    """Whether the layer's forward should use the kernel (see :func:`ranvier.kernels.wants_kernel`)."""
    return wants_kernel(layer.backend, None if layer.backend == "reference" else unsupported_reason(layer, x, state))


# Above this fraction of units with an event (forward) or a flowing gradient (backward) a step's
# recurrent product is one GEMM over the thread's batch slice instead of row gathers or dot
# products (see _blas.py); never without MKL, nor with the reset gate before the matmul. In
# isolation the loops match the GEMM at about 25 % (benchmarks/gemm_breakeven.py); inside the
# kernel, where the GEMM's operands compete with the gates' arrays for cache, the forward's loops
# were still faster at 30 % (T=70, B=16 per thread, H=512: 24 against 28 ms).
GEMM_MIN_ACTIVITY = 0.3

# Without MKL in reach of the loops, from this width on the recurrent product runs as one torch
# matmul per step (on all of torch's threads) between two compiled calls for the elementwise part:
# at H = 512 the loop's per-sample gathers and dot products cannot keep up with a GEMM
# (benchmarks/egru_step.py, training step at T=70, B=32, H=512 with 2 threads: this path 150 ms,
# the reference 177 ms, the gathering loop 272 ms in speed.py). With MKL the loop's own GEMMs do
# better still (benchmarks/notes.md, "BLAS inside the kernels"), so this path is only the
# fallback. Reset gate "before" always uses the loop.
STEPWISE_MIN_HIDDEN: int | None = None if _blas.AVAILABLE else 256


# The recurrent-weight gradient Σ_t δRh_tᵀ y_{t−1} has a zero column for every unit that had no
# event in the whole batch and sequence. At high activity sparsity most silent units are the same
# ones throughout (units whose threshold lies above their range), so when at most this fraction of
# units fired the GEMM runs over the columns of the fired ones only. It costs a pass over the
# events and a copy of their fired columns, so it pays up to about 70 % fired
# (benchmarks/weight_grad_compaction.py).
COMPACT_MAX_FIRING = 0.6


def event_weight_grad(d_out: Tensor, events: Tensor, fired: Tensor | None = None) -> Tensor:
    """``d_outᵀ @ events`` (``[N, M]``, ``[N, H]`` → ``[M, H]``), skipping the columns of
    ``events`` that are zero in every row when few enough units fired. ``fired``: the indices of
    the other columns, when the caller already has them."""
    hidden = events.shape[1]
    if fired is None:
        fired = events.any(0).nonzero().squeeze(1)
    if fired.numel() > COMPACT_MAX_FIRING * hidden:
        return d_out.t() @ events
    rows = events.index_select(1, fired).t() @ d_out  # [fired, M]: MKL's faster layout here
    # (written into a contiguous [M, H], like the weight, so that autograd need not copy it)
    return torch.zeros(d_out.shape[1], hidden, dtype=d_out.dtype).index_copy_(1, fired, rows.t())


def _gemm_args(dtype: torch.dtype) -> tuple:
    return _blas.gemm_for(dtype), (GEMM_MIN_ACTIVITY if _blas.AVAILABLE else 2.0)


def _stepwise(hidden: int, flags: np.ndarray) -> bool:
    return STEPWISE_MIN_HIDDEN is not None and hidden >= STEPWISE_MIN_HIDDEN and not flags[nb.GATE_BEFORE]


class EGRUFunction(torch.autograd.Function):
    """``(proj [T,B,3H], W_hh [3H,H], b_hh or None, ϑ [H], c0, y0, trace0, zoneout mask or None)
    -> (y [T,B,H], ĉ [T,B,H], trace_T [B,H])``."""

    @staticmethod
    def forward(ctx, proj, w_hh, b_hh, thr, c0, y0, tr0, zmask, consts, flags, keep_chat=False):  # type: ignore[override]
        T, B, H3 = proj.shape
        H = H3 // 3
        dt = proj.dtype
        before = bool(flags[nb.GATE_BEFORE])
        w = w_hh.detach().contiguous()  # [3H, H]: the backward's GEMM operand (faster untransposed)
        rt = w.t().contiguous()  # [H, 3H]: rows per presynaptic unit, for the gathers
        bias = b_hh.detach().contiguous() if b_hh is not None else torch.zeros(H3, dtype=dt)
        # The gates and ĉ are kept for every step only if a backward can run (ĉ also gives the
        # final state, so it keeps at least its last step).
        steps = T if any(ctx.needs_input_grad[:7]) else 1
        y = torch.empty(T, B, H, dtype=dt)
        zg, rg, g = (torch.empty(steps, B, H, dtype=dt) for _ in range(3))
        chat = torch.empty(T if keep_chat else steps, B, H, dtype=dt)  # every step for a trajectory
        rhg = torch.empty((0, 0, 0) if before else (steps, B, H), dtype=dt)
        zm = zmask.contiguous() if zmask is not None else torch.empty(0, 0, 0, dtype=dt)
        thr_d = thr.detach().contiguous()
        c0d, y0d, tr0d = (s.detach().contiguous() for s in (c0, y0, tr0))
        c, tr_t = c0d.clone(), tr0d.clone()  # updated in place: the final trace is returned
        head = (proj.detach().contiguous().numpy(), rt.numpy(), bias.numpy(), thr_d.numpy(), y0d.numpy(), zm.numpy(),
                consts, flags)
        tail = (y.numpy(), chat.numpy(), zg.numpy(), rg.numpy(), g.numpy(), rhg.numpy(), c.numpy(), tr_t.numpy(),
                *_gemm_args(dt))
        if _stepwise(H, flags):
            rh = torch.empty(B, H3, dtype=dt)
            for t in range(T):
                torch.addmm(bias, y0d if t == 0 else y[t - 1], rt, out=rh)
                nb.egru_forward(*head, rh.numpy(), *tail, t, t + 1, 0, B)
        else:
            no_rh = np.empty((0, 0), dtype=head[0].dtype)
            run_chunks(lambda _, s, e: nb.egru_forward(*head, no_rh, *tail, 0, T, s, e), B, num_chunks(B))
        ctx.save_for_backward(rt, w, thr_d, c0d, y0d, zm, y, chat, zg, rg, g, rhg)
        ctx.consts, ctx.flags, ctx.has_bias = consts, flags, b_hh is not None
        return y, chat, tr_t

    @staticmethod
    def backward(ctx, gy, gch, gtr):  # type: ignore[override]
        rt, w, thr, c0, y0, zm, y, chat, zg, rg, g, rhg = ctx.saved_tensors
        T, B, H = y.shape
        dt = y.dtype
        need = ctx.needs_input_grad
        # (an output without a gradient, usually ĉ, gets one all-zero step, not a full zero array)
        gy = torch.zeros(1, B, H, dtype=dt) if gy is None else gy.contiguous()
        gch = torch.zeros(1, B, H, dtype=dt) if gch is None else gch.contiguous()
        d_tr = torch.zeros(B, H, dtype=dt) if gtr is None else gtr.detach().clone().contiguous()
        d_p, d_rh = torch.empty(T, B, 3 * H, dtype=dt), torch.empty(T, B, 3 * H, dtype=dt)
        d_c, d_y = torch.zeros(B, H, dtype=dt), torch.zeros(B, H, dtype=dt)  # end as ∂L/∂c_0, ∂L/∂y_0
        stepwise = _stepwise(H, ctx.flags)
        args = (gy.numpy(), gch.numpy(), rt.numpy(), w.numpy(), thr.numpy(), c0.numpy(), y0.numpy(), zm.numpy(),
                y.numpy(), chat.numpy(), zg.numpy(), rg.numpy(), g.numpy(), rhg.numpy(), ctx.consts, ctx.flags,
                bool(need[5]), not stepwise, *_gemm_args(dt), d_p.numpy(), d_rh.numpy())
        state = (d_c.numpy(), d_y.numpy(), d_tr.numpy())
        if stepwise:
            d_thr = torch.zeros(1, H, dtype=dt)
            dthr_n = d_thr.numpy()[0]
            for t in range(T - 1, -1, -1):
                nb.egru_backward(*args, dthr_n, *state, t, t + 1, 0, B)
                if t > 0 or need[5]:
                    # ∂L/∂y_{t−1} += dRh_t R for every unit: where y_{t−1} has no event and a zero
                    # pseudo-derivative the step below multiplies it by 0 (the loop skips those
                    # dot products instead; the results are the same)
                    d_y.addmm_(d_rh[t], w)
        else:
            chunks = num_chunks(B)
            d_thr = torch.zeros(chunks, H, dtype=dt)
            dthr_n = d_thr.numpy()
            run_chunks(lambda k, s, e: nb.egru_backward(*args, dthr_n[k], *state, 0, T, s, e), B, chunks)
        d_w = d_b = None
        if need[1]:
            if ctx.flags[nb.GATE_BEFORE]:
                y_prev = torch.cat([y0.unsqueeze(0), y[:-1]]).reshape(T * B, H)
                d_rh2 = d_rh.reshape(T * B, 3 * H)
                ry = rg.reshape(T * B, H) * y_prev
                fired = y_prev.any(0).nonzero().squeeze(1)  # (r ⊙ y is zero wherever y is: these cover both)
                d_w = torch.cat([event_weight_grad(d_rh2[:, : 2 * H], y_prev, fired),
                                 event_weight_grad(d_rh2[:, 2 * H:], ry, fired)])
            else:  # Σ_t dRh_tᵀ y_{t−1}, with y_{−1} = y0: two matmuls, no copy of the events
                d_w = event_weight_grad(d_rh[1:].reshape(-1, 3 * H), y[:-1].reshape(-1, H)) if T > 1 else None
                if d_w is None or y0.any():  # (the usual event-free y0 adds nothing)
                    d_w = d_rh[0].t() @ y0 if d_w is None else d_w.addmm_(d_rh[0].t(), y0)
        if ctx.has_bias and need[2]:
            d_b = d_rh.sum((0, 1))
        return (d_p if need[0] else None, d_w, d_b, d_thr.sum(0) if need[3] else None,
                d_c if need[4] else None, d_y if need[5] else None, d_tr if need[6] else None, None, None, None, None)


def run_layer(layer: EGRU, proj: Tensor, zmask: Tensor | None, w_hh: Tensor, b_hh: Tensor | None, thr: Tensor,
              state: EGRUState, record: bool = False) -> tuple[Tensor, EGRUState]:
    """The kernel equivalent of ``scan(layer._layer_step(k, ...), proj, state, record=record)``
    for one layer: the final state, or with ``record`` the state after every step, each field
    ``[T, B, H]``."""
    s = layer.surrogate
    npd = np.float64 if proj.dtype == torch.float64 else np.float32
    if isinstance(s, PiecewiseLinear):
        kind, sa, sb = nb.PIECEWISE_LINEAR, s.gamma, s.width
    else:
        kind, sa, sb = nb.FAST_SIGMOID, s.slope, 0.0
    flags = np.zeros(6, dtype=np.int64)
    flags[nb.FAST] = proj.dtype == torch.float32  # float64 keeps libm's exp/tanh: equal to the reference to rounding
    flags[nb.RESET_EVENT] = layer.reset == "event"
    flags[nb.GATE_BEFORE] = layer.reset_gate == "before"
    flags[nb.HAS_BIAS] = b_hh is not None
    zoneout_eval = zmask is None and layer.zoneout > 0.0
    flags[nb.ZONEOUT] = nb.ZONEOUT_MASK if zmask is not None else nb.ZONEOUT_EVAL if zoneout_eval else nb.ZONEOUT_NONE
    flags[nb.SURROGATE] = kind
    consts = np.array([sa, sb, layer.zoneout, 1.0 - TRACE_DECAY], dtype=npd)
    y, chat, trace = EGRUFunction.apply(proj, w_hh, b_hh, thr, state.c, state.y, state.trace, zmask, consts, flags,
                                        record)
    # The state from ĉ with the reference's own ops, so that o, the margin and c carry
    # egru_step's values and gradients (a loss on o, such as an activity regulariser, reaches ĉ
    # and ϑ through the kernel's ĉ output; the kernel's own o feeds y, this o is the same
    # indicator with the same pseudo-derivative): every step with ``record``, else the last.
    c_hat = chat if record else chat[-1]
    margin = c_hat - thr
    o = s(margin)
    c = c_hat - o * thr if layer.reset == "threshold" else c_hat
    if not record:
        return y, EGRUState(c, y[-1], o, trace, margin)
    traces, tr = [], state.trace  # every step's trace, again with the reference's op
    for y_t in y.unbind(0):
        tr = torch.lerp(tr, y_t, 1.0 - TRACE_DECAY)
        traces.append(tr)
    return y, EGRUState(c, y, o, torch.stack(traces), margin)
