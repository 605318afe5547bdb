"""numba kernels of the event-driven runtime: one function per layer kind, state explicit.

An input arrives as an *event list*: ``idx[:n]`` (indices of the inputs that are non-zero this
step) and ``val[:n]`` (their values). A kernel reads only the weight columns of those inputs
(:class:`~ranvier.engine.graph.Weights` keeps them contiguous), updates its units in place, and
writes its own event list, which the next layer reads now and the layer itself reads at the next
step (its recurrence). Nothing here allocates.

Each kernel repeats the arithmetic of the torch step it mirrors operation by operation, in the
same order (sums are accumulated first and the bias added after, as ``addmm`` does), so that in
float64 the only differences left are the order of the terms inside a matrix product and, for
EGRU, the libraries behind ``exp``/``tanh`` (see docs/engine.md).
"""
from __future__ import annotations

import math

from numba import njit, prange

from ..kernels._egru_numba import lerp as _lerp
from ..kernels._fastexp import exp_f32 as _exp_f32

__all__ = ["dense_events", "accumulate", "linear_step", "spiking_step", "egru_step", "readout_step", "nll"]


@njit(cache=True)
def dense_events(x, idx, val):  # pragma: no cover - compiled
    """The event list of a dense vector: its non-zero entries. Returns their number, or −1 if
    ``x`` holds a NaN or an infinity."""
    n = 0
    for i in range(x.shape[0]):
        if not math.isfinite(x[i]):
            return -1
        if x[i] != 0.0:
            idx[n] = i
            val[n] = x[i]
            n += 1
    return n


@njit(cache=True)
def accumulate(out, lo, hi, dense_t, indptr, indices, data, idx, val, n):  # pragma: no cover - compiled
    """``out[r − lo] += Σ_k val[k]·W[r, idx[k]]`` for the output rows ``r ∈ [lo, hi)``.

    ``W`` is dense (``dense_t`` = Wᵀ, row ``j`` read contiguously) or CSR of Wᵀ (``indptr``
    non-empty): then only the non-zero entries of the active columns are touched. A call with
    ``lo = 0`` and ``hi = len(out)`` must cover all of W's rows (no row index ≥ ``hi``).
    """
    if indptr.shape[0] > 0:
        if lo == 0 and hi == out.shape[0]:  # all of W's rows (W has exactly hi rows): no range test
            for k in range(n):
                j = idx[k]
                v = val[k]
                for p in range(indptr[j], indptr[j + 1]):
                    out[indices[p]] += v * data[p]
            return
        for k in range(n):
            j = idx[k]
            v = val[k]
            for p in range(indptr[j], indptr[j + 1]):
                r = indices[p]
                if r >= lo and r < hi:
                    out[r - lo] += v * data[p]
    else:
        # Slices with indices from 0 let LLVM vectorise the row update (an index such as r − lo
        # could be negative, and numba's wraparound check for it blocks vectorisation: 3× slower).
        # Eight (then four) columns per pass: that many rows stream from memory at once, and the
        # accumulator is read and written an eighth as often. The terms of each sum are still
        # added one by one in the order of the event list.
        width = hi - lo
        target = out[:width]
        k = 0
        while k + 8 <= n:
            r0, r1 = dense_t[idx[k], lo:hi], dense_t[idx[k + 1], lo:hi]
            r2, r3 = dense_t[idx[k + 2], lo:hi], dense_t[idx[k + 3], lo:hi]
            r4, r5 = dense_t[idx[k + 4], lo:hi], dense_t[idx[k + 5], lo:hi]
            r6, r7 = dense_t[idx[k + 6], lo:hi], dense_t[idx[k + 7], lo:hi]
            v0, v1, v2, v3 = val[k], val[k + 1], val[k + 2], val[k + 3]
            v4, v5, v6, v7 = val[k + 4], val[k + 5], val[k + 6], val[k + 7]
            for r in range(width):
                first = (((target[r] + v0 * r0[r]) + v1 * r1[r]) + v2 * r2[r]) + v3 * r3[r]
                target[r] = (((first + v4 * r4[r]) + v5 * r5[r]) + v6 * r6[r]) + v7 * r7[r]
            k += 8
        while k + 4 <= n:
            row0, row1 = dense_t[idx[k], lo:hi], dense_t[idx[k + 1], lo:hi]
            row2, row3 = dense_t[idx[k + 2], lo:hi], dense_t[idx[k + 3], lo:hi]
            v0, v1, v2, v3 = val[k], val[k + 1], val[k + 2], val[k + 3]
            for r in range(width):
                target[r] = (((target[r] + v0 * row0[r]) + v1 * row1[r]) + v2 * row2[r]) + v3 * row3[r]
            k += 4
        while k < n:
            row = dense_t[idx[k], lo:hi]
            v = val[k]
            for r in range(width):
                target[r] += v * row[r]
            k += 1


@njit(cache=True, parallel=True)
def _accumulate_both_parallel(out_a, wa_t, wa_ptr, wa_ind, wa_dat, idx_a, val_a, n_a,
                              out_b, wb_t, wb_ptr, wb_ind, wb_dat, idx_b, val_b, n_b):  # pragma: no cover - compiled
    # Two independent products on two threads; each keeps its own order of terms, so the
    # result is bit-identical to the serial calls.
    for part in prange(2):
        if part == 0:
            accumulate(out_a, 0, out_a.shape[0], wa_t, wa_ptr, wa_ind, wa_dat, idx_a, val_a, n_a)
        else:
            accumulate(out_b, 0, out_b.shape[0], wb_t, wb_ptr, wb_ind, wb_dat, idx_b, val_b, n_b)


@njit(cache=True, parallel=True)
def _accumulate_both_halves_parallel(out_a, wa_t, idx_a, val_a, n_a, out_b, wb_t, idx_b, val_b, n_b,
                                     no_csr):  # pragma: no cover - compiled
    # Dense weights: each thread takes half of the output rows of both products, so the two
    # threads share the work evenly whatever the two event counts, and each reads half of every
    # active column. Every row keeps its order of terms: bit-identical to one thread.
    rows_a, rows_b = out_a.shape[0], out_b.shape[0]
    for part in prange(2):
        lo_a, hi_a = (0, rows_a // 2) if part == 0 else (rows_a // 2, rows_a)
        lo_b, hi_b = (0, rows_b // 2) if part == 0 else (rows_b // 2, rows_b)
        accumulate(out_a[lo_a:hi_a], lo_a, hi_a, wa_t, no_csr, no_csr, val_a[:0], idx_a, val_a, n_a)
        accumulate(out_b[lo_b:hi_b], lo_b, hi_b, wb_t, no_csr, no_csr, val_b[:0], idx_b, val_b, n_b)


@njit(cache=True)
def accumulate_both(threads, min_work, out_a, wa_t, wa_ptr, wa_ind, wa_dat, idx_a, val_a, n_a,
                    out_b, wb_t, wb_ptr, wb_ind, wb_dat, idx_b, val_b, n_b):  # pragma: no cover - compiled
    """``out_a += A x_a`` and ``out_b += B x_b`` over all rows, on two threads when ``threads ≥ 2``
    and the products have at least ``min_work`` active inputs × output rows in all (smaller ones
    do not pay for the hand-over to the second thread), else one after the other. Dense weights
    split the output rows in halves; CSR ones run the two products side by side, when the smaller
    has at least half of ``min_work`` (else the threads' shares are too uneven)."""
    work_a = n_a * out_a.shape[0]
    work_b = n_b * out_b.shape[0]
    dense = wa_ptr.shape[0] == 0 and wb_ptr.shape[0] == 0
    if threads >= 2 and dense and work_a + work_b >= min_work:
        _accumulate_both_halves_parallel(out_a, wa_t, idx_a, val_a, n_a, out_b, wb_t, idx_b, val_b, n_b, wa_ptr)
    elif threads >= 2 and not dense and 2 * min(work_a, work_b) >= min_work:
        _accumulate_both_parallel(out_a, wa_t, wa_ptr, wa_ind, wa_dat, idx_a, val_a, n_a,
                                  out_b, wb_t, wb_ptr, wb_ind, wb_dat, idx_b, val_b, n_b)
    else:
        accumulate(out_a, 0, out_a.shape[0], wa_t, wa_ptr, wa_ind, wa_dat, idx_a, val_a, n_a)
        accumulate(out_b, 0, out_b.shape[0], wb_t, wb_ptr, wb_ind, wb_dat, idx_b, val_b, n_b)


@njit(cache=True, parallel=True)
def _accumulate_halves_parallel(out, dense_t, indptr, indices, data, idx, val, n):  # pragma: no cover - compiled
    # The two halves of the output rows on two threads: every row sums its terms in the same
    # order as one thread would, so the result is bit-identical.
    rows = out.shape[0]
    if indptr.shape[0] > 0:  # CSR: no split (a half would take accumulate's all-rows path)
        accumulate(out, 0, rows, dense_t, indptr, indices, data, idx, val, n)
        return
    for part in prange(2):
        lo = part * (rows // 2)
        hi = rows // 2 if part == 0 else rows
        accumulate(out[lo:hi], lo, hi, dense_t, indptr, indices, data, idx, val, n)


@njit(cache=True)
def linear_step(out, dense_t, indptr, indices, data, bias, idx, val, n, threads, min_work):  # pragma: no cover - compiled
    """``out = W x + b`` for the event list of ``x`` (the sum first, then the bias, as addmm);
    the two halves of the rows on two threads when ``threads ≥ 2`` and ``n × rows ≥ min_work``."""
    out[:] = 0.0
    if threads >= 2 and n * out.shape[0] >= min_work:
        _accumulate_halves_parallel(out, dense_t, indptr, indices, data, idx, val, n)
    else:
        accumulate(out, 0, out.shape[0], dense_t, indptr, indices, data, idx, val, n)
    if bias.shape[0] > 0:
        for r in range(out.shape[0]):
            out[r] = out[r] + bias[r]


@njit(cache=True)
def spiking_step(in_idx, in_val, n_in,
                 win_t, win_ptr, win_ind, win_dat,
                 wrec_t, wrec_ptr, wrec_ind, wrec_dat,
                 bias, params, flags, consts,
                 state, ev_idx, ev_val, n_prev, current, recurrent_sum, threads, min_work):  # pragma: no cover - compiled
    """One LIF/ALIF step (``ranvier.neurons.common.integrate_and_fire``, ``alif_step``).

    ``params`` rows: α, input gain (1 − α or 1), v_th, ρ, adaptation gain (1 − ρ or 1), β.
    ``flags``: recurrent, adaptive, reset_by_adaptive, normalize_by_adaptive, spike_from_previous,
    reset to zero (else subtract).
    ``consts``: dt, the spike value 1/dt, n_refractory (in the layer's dtype).
    ``state`` rows: v, z (last spikes), b (adaptation), refractory steps left.
    Reads the layer's previous events ``ev_*[:n_prev]`` and overwrites them with the new ones;
    returns their number.
    """
    hidden = state.shape[1]
    recurrent, adaptive = flags[0], flags[1]
    reset_by_adaptive, normalize_by_adaptive, spike_from_previous, reset_zero = flags[2], flags[3], flags[4], flags[5]
    dt, spike_value, n_refractory = consts[0], consts[1], consts[2]
    current[:] = 0.0
    recurrent_sum[:] = 0.0
    if recurrent:  # W x and W_rec z_{t−1} at once (two threads when large)
        accumulate_both(threads, min_work, current, win_t, win_ptr, win_ind, win_dat, in_idx, in_val, n_in,
                        recurrent_sum, wrec_t, wrec_ptr, wrec_ind, wrec_dat, ev_idx, ev_val, n_prev)
    else:
        accumulate(current, 0, hidden, win_t, win_ptr, win_ind, win_dat, in_idx, in_val, n_in)
    if bias.shape[0] > 0:
        for i in range(hidden):
            current[i] = current[i] + bias[i]
    if recurrent:  # addmm(input_current, z_{t−1}, W_recᵀ): the recurrent sum, then added
        for i in range(hidden):
            current[i] = current[i] + recurrent_sum[i]
    alpha, gain, base, rho, adapt_gain, beta = params[0], params[1], params[2], params[3], params[4], params[5]
    v, z, b, refractory = state[0], state[1], state[2], state[3]
    n = 0
    for i in range(hidden):
        z_prev = z[i]
        threshold = base[i]
        if adaptive:
            b[i] = rho[i] * b[i] + adapt_gain[i] * z_prev
            threshold = base[i] + beta[i] * b[i]
        v_prev = v[i]
        if reset_zero:  # apply_reset(α·v, z·dt, mode="zero") + c·I: the spike wipes the decayed potential
            v_new = (alpha[i] * v_prev) * (1.0 - z_prev * dt) + gain[i] * current[i]
        else:
            v_new = alpha[i] * v_prev + gain[i] * current[i]
            reset_amount = (threshold if reset_by_adaptive else base[i]) * dt
            v_new = v_new - z_prev * reset_amount
        v_source = v_prev if spike_from_previous else v_new
        norm = threshold if normalize_by_adaptive else base[i]
        fired = (v_source - threshold) / norm > 0.0
        if n_refractory > 0:
            if refractory[i] > 0.0:
                fired = False
            refractory[i] = n_refractory if fired else max(refractory[i] - 1.0, 0.0)
        v[i] = v_new
        if fired:
            z[i] = spike_value
            ev_idx[n] = i
            ev_val[n] = spike_value
            n += 1
        else:
            z[i] = 0.0
    return n


@njit(cache=True, error_model="numpy")
def _exp_into(x, n, fast, bits):  # pragma: no cover - compiled
    """``x[:n] = exp(x[:n])``: the vectorised float32 exp when ``fast``, else libm's (float64
    sessions, so that they match torch to rounding)."""
    if fast:
        _exp_f32(x, n, bits)
    else:
        for i in range(n):
            x[i] = math.exp(x[i])


@njit(cache=True, error_model="numpy")
def egru_step(in_idx, in_val, n_in,
              wih_t, wih_ptr, wih_ind, wih_dat,
              whh_t, whh_ptr, whh_ind, whh_dat,
              bias_ih, bias_hh, threshold, flags, consts,
              state, ev_idx, ev_val, n_prev, wx, rh, gates, scaled, bits, threads, min_work):  # pragma: no cover - compiled
    """One EGRU step (:func:`ranvier.egru_step` at eval). ``flags``: reset is "event",
    reset_gate is "before", fast (float32 only: the vectorised exp for σ and tanh).
    ``consts`` ``[2]``: the eval-time zoneout expectation ``p``, and 1 (both in the layer's dtype).
    ``bias_ih``, ``bias_hh`` ``[3H]`` (zeros for a layer without biases: adding 0 changes no sum).
    ``state`` rows: c (after the reset), y (graded events), o (event indicator).
    ``wx``, ``rh`` ``[3H]``, ``gates`` ``[3H]`` (z, r, then the candidate g), ``scaled`` ``[H]``
    and ``bits`` (int32, ``[3H]``) are scratch. ``threads``, ``min_work``: when the input
    and recurrent products run side by side (:func:`accumulate_both`).

    σ(x) = 1/(1 + e^{−x}) as torch writes it; in float32 tanh(x) = 1 − 2/(e^{2x} + 1) (absolute
    error ~1e-7 near 0, where the relative error of this form grows), libm's tanh in float64.
    Every pass over the units is branch-free so that LLVM vectorises it (the options are tested
    once per pass, not per unit), and the bias additions are folded into the gates' first pass.
    The event list is compacted in a pass of its own."""
    hidden = threshold.shape[0]
    h2 = 2 * hidden
    reset_event, gate_before, fast = flags[0], flags[1], flags[2]
    p = consts[0]
    zero = p - p
    one = consts[1]
    two = one + one
    zoneout = p > zero
    wx[:] = 0.0
    rh[:] = 0.0
    candidate = rh[h2:]
    if gate_before:  # g = tanh(Wx_g + (r ⊙ y_{t−1}) W_gᵀ + b_g): z and r first
        accumulate(wx, 0, 3 * hidden, wih_t, wih_ptr, wih_ind, wih_dat, in_idx, in_val, n_in)
        accumulate(rh, 0, h2, whh_t, whh_ptr, whh_ind, whh_dat, ev_idx, ev_val, n_prev)
    else:  # W x and R y_{t−1} at once (two threads when large)
        accumulate_both(threads, min_work, wx, wih_t, wih_ptr, wih_ind, wih_dat, in_idx, in_val, n_in,
                        rh, whh_t, whh_ptr, whh_ind, whh_dat, ev_idx, ev_val, n_prev)
    for r in range(h2):  # −(Wx + b_W + R y + b_R) of z and r, for σ's exp (addmm: the sum, then the bias)
        gates[r] = -((wx[r] + bias_ih[r]) + (rh[r] + bias_hh[r]))
    _exp_into(gates, h2, fast, bits)
    for r in range(h2):
        gates[r] = one / (one + gates[r])
    if gate_before:
        for k in range(n_prev):
            scaled[k] = gates[hidden + ev_idx[k]] * ev_val[k]
        accumulate(candidate, h2, 3 * hidden, whh_t, whh_ptr, whh_ind, whh_dat, ev_idx, scaled, n_prev)
        for i in range(hidden):
            candidate[i] = (wx[h2 + i] + bias_ih[h2 + i]) + (candidate[i] + bias_hh[h2 + i])
    else:  # Rh_g = y_{t−1} R_gᵀ + b_R; Wx_g + r ⊙ Rh_g
        for i in range(hidden):
            candidate[i] = (wx[h2 + i] + bias_ih[h2 + i]) + gates[hidden + i] * (candidate[i] + bias_hh[h2 + i])
    g = gates[h2:]
    if fast:
        for i in range(hidden):
            g[i] = candidate[i] + candidate[i]
        _exp_f32(g, hidden, bits)
        for i in range(hidden):
            g[i] = one - two / (g[i] + one)
    else:
        for i in range(hidden):
            g[i] = math.tanh(candidate[i])
    c, y, o = state[0], state[1], state[2]
    # The update in passes of their own: merged into one pass with selects, it ran slower.
    for i in range(hidden):
        g[i] = _lerp(g[i], c[i], gates[i], one)  # ĉ = (1 − z)·g + z·c_{t−1}
    if zoneout:
        for i in range(hidden):
            g[i] = _lerp(g[i], c[i], p, one)
    if reset_event:
        for i in range(hidden):
            g[i] = g[i] - y[i]
    for i in range(hidden):
        c_hat = g[i]
        fire = c_hat - threshold[i] > zero
        o[i] = one if fire else zero
        y[i] = c_hat if fire else zero
        c[i] = c_hat - threshold[i] if fire else c_hat
    if reset_event:  # no threshold subtraction: the event was already taken off
        for i in range(hidden):
            c[i] = g[i]
    n = 0
    for i in range(hidden):  # branch-free compaction of the event list
        ev_idx[n] = i
        ev_val[n] = y[i]
        n += o[i] != 0.0
    return n


@njit(cache=True)
def readout_step(ev_idx, ev_val, n, w_t, w_ptr, w_ind, w_dat, bias, consts, filtered, summed, out):  # pragma: no cover - compiled
    """``LeakyReadout`` for one step: ``u = W z``; ``s = κ·s + (1 − κ)·u`` when κ > 0;
    ``out = s + b`` (``u + b`` without the filter). ``consts``: κ, 1 − κ."""
    summed[:] = 0.0
    accumulate(summed, 0, summed.shape[0], w_t, w_ptr, w_ind, w_dat, ev_idx, ev_val, n)
    decay, gain = consts[0], consts[1]
    for r in range(out.shape[0]):
        if decay > 0.0:
            filtered[r] = decay * filtered[r] + gain * summed[r]
            out[r] = filtered[r] + bias[r]
        else:
            out[r] = summed[r] + bias[r]


@njit(cache=True)
def nll(logits, target):  # pragma: no cover - compiled
    """``−log softmax(logits)[target]`` in float64: ``log Σ exp(x − max) + max − x_target``."""
    peak = logits[0]
    for i in range(logits.shape[0]):
        if logits[i] > peak:
            peak = logits[i]
    total = 0.0
    for i in range(logits.shape[0]):
        total += math.exp(float(logits[i]) - float(peak))
    return math.log(total) + float(peak) - float(logits[target])
