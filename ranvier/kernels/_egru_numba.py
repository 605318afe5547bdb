"""Numba loops for one EGRU layer: the whole sequence forward and its backward.

The compiled halves of :class:`ranvier.kernels.egru.EGRUFunction`; read
:func:`ranvier.neurons.egru.egru_step` for the update (the pure-torch reference they are tested
against). Gate chunks are ``[z, r, g]``; ``RT`` is the (masked, dropped-out) recurrent weight
transposed, ``RT[j] = R[:, j]`` (``3H`` long), so the input of presynaptic unit ``j`` and the
gradient to it read one contiguous row.

Sparsity: the recurrent input ``R y_{t−1}`` adds only the rows of units with an event
(``y_{t−1}[j] ≠ 0``); the gradient to ``y_{t−1}[j]`` is computed only where it can go anywhere,
i.e. where ``o_{t−1}[j] = 1`` or the pseudo-derivative at ``t − 1`` is non-zero.
The weight gradient ``Σ_t δRh_tᵀ y_{t−1}`` is one GEMM in torch from the stored ``δRh``.

With the reset gate after the matmul, both products switch step by step to one GEMM over the
thread's batch slice (MKL, through ``gemm``) when more than ``dense_min`` of the slice's units
have an event (forward) or pass a gradient (backward), as in ``_lif_numba.py``.

Both loops also run a few steps per call (``t0``, ``t1``) with their state in caller-owned
arrays: for wide layers without MKL, :mod:`ranvier.kernels.egru` calls them one step at a time
and does the recurrent products (``R y_{t−1}`` forward, ``δRh_t R`` backward) as torch matmuls
in between.
In float32 (``flags[FAST]``) the gates use the vectorised :func:`~ranvier.kernels._fastexp.exp_f32`.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._blas import gemm_acc, gemm_scratch
from ._fastexp import exp_f32
from ._lif_numba import FAST_SIGMOID, PIECEWISE_LINEAR, _add_rows, _dot, _dot_rows, _nonzero  # noqa: F401

# flags[...] indices; FAST (float32 only): σ and tanh through the vectorised exp_f32
RESET_EVENT, GATE_BEFORE, HAS_BIAS, ZONEOUT, SURROGATE, FAST = range(6)
ZONEOUT_NONE, ZONEOUT_MASK, ZONEOUT_EVAL = 0, 1, 2
# consts[...] indices
SUR_A, SUR_B, ZONEOUT_P, TRACE_W = range(4)


# Every constant in these loops is ``one``/``zero`` in the arrays' dtype: an integer or float
# literal would promote float32 arithmetic to float64 (numba follows NumPy's rules), which halves
# the vector lanes and adds conversions.


@njit(cache=True, nogil=True, inline="always")
def lerp(start, end, weight, one):
    """torch.lerp's scalar formula (ATen Lerp.h): two forms, exact at weight 0 and 1, for
    accuracy on either side of 1/2 (|w| < 1/2 written as 2|w| < 1). Both are computed and one
    is selected, so that a loop of lerps stays branch-free (vector lanes). ``one`` is 1 in the
    dtype of the arguments. Shared with the event-driven engine."""
    near_start = start + weight * (end - start)
    near_end = end - (end - start) * (one - weight)
    return near_start if abs(weight) + abs(weight) < one else near_end


@njit(cache=True, nogil=True, inline="always")
def _pseudo(margin, kind, sa, sb, one):
    if kind == PIECEWISE_LINEAR:
        a = one - abs(margin) / sb
        return sa * (a if a > 0 else one - one)
    d = one + sa * abs(margin)
    return one / (d * d)


@njit(cache=True, nogil=True, error_model="numpy")
def egru_forward(P, RT, bR, thr, y0, zmask, consts, flags, rh_ext,
                 y_out, chat_out, zg_out, rg_out, g_out, rhg_out, c, tr, gemm, dense_min, t0, t1, bs, be):
    """Samples ``bs..be−1``, steps ``t0..t1−1``. Stores the gates ``z, r, g``, the recurrent
    candidate input ``Rh_g`` (reset gate after the matmul), ``ĉ`` and the events ``y``.

    ``c`` and ``tr`` ``[B, H]`` hold the state and trace; they start as ``c_0``, ``trace_0`` and
    are updated in place, so a sequence can be run a few steps per call. ``rh_ext`` ``[B, 3H]``,
    when not empty, is the recurrent input ``R y_{t−1} + b_R`` of the single step ``t0``, already
    computed (a BLAS matmul in torch); otherwise it is gathered here from the events."""
    _, _, H3 = P.shape
    H = H3 // 3
    n = be - bs
    event = flags[RESET_EVENT] != 0
    before = flags[GATE_BEFORE] != 0
    has_bias = flags[HAS_BIAS] != 0
    zone = flags[ZONEOUT]
    kind = flags[SURROGATE]
    fast = flags[FAST] != 0
    sa, sb, p_zone, w_tr = consts[SUR_A], consts[SUR_B], consts[ZONEOUT_P], consts[TRACE_W]
    zero = consts.dtype.type(0.0)
    one = consts.dtype.type(1.0)
    external = rh_ext.shape[0] > 0
    bits = np.empty(H, np.int32)
    rh_all = np.empty((n, H3), P.dtype)  # R y_{t−1} + b_R of every sample in the slice
    ry = np.empty(H, P.dtype)
    idx = np.empty(H, np.int64)
    scratch = gemm_scratch(P)
    count = 0
    for t in range(t0, t1):
        yp_all = y0[bs:be] if t == 0 else y_out[t - 1, bs:be]
        dense = False
        if not external and not before:
            active = 0
            for i in range(n):
                for h in range(H):
                    active += yp_all[i, h] != 0
            dense = active > dense_min * n * H
            if dense:
                for i in range(n):
                    if has_bias:
                        rh_all[i] = bR
                    else:
                        rh_all[i] = zero
                gemm_acc(gemm, yp_all, RT, rh_all, False, scratch)
        for i in range(n):
            bi = bs + i
            yp = yp_all[i]
            pt = P[t, bi]
            ci = c[bi]
            rh = rh_all[i]
            if external:
                rh[:] = rh_ext[bi]
            elif not dense:
                if has_bias:
                    rh[:] = bR
                else:
                    rh[:] = zero
                count = _nonzero(yp, idx)
                # gather: only units with an event at t − 1 (reset gate before: z and r inputs)
                _add_rows(rh, RT, yp, idx, count, 2 * H if before else H3)
            ts = t % zg_out.shape[0]  # one-step buffers when nothing is stored for a backward
            zg = zg_out[ts, bi]
            rg = rg_out[ts, bi]
            g = g_out[ts, bi]
            if fast:  # the same formulas, with the vectorised float32 exp
                for h in range(H):
                    zg[h] = -(pt[h] + rh[h])
                    rg[h] = -(pt[H + h] + rh[H + h])
                exp_f32(zg, H, bits)
                exp_f32(rg, H, bits)
                for h in range(H):
                    zg[h] = one / (one + zg[h])
                    rg[h] = one / (one + rg[h])
            else:
                for h in range(H):
                    zg[h] = one / (one + np.exp(-(pt[h] + rh[h])))
                    rg[h] = one / (one + np.exp(-(pt[H + h] + rh[H + h])))
            if before:
                for h in range(H):
                    ry[h] = rg[h] * yp[h]
                for k in range(count):  # (r ⊙ y) is non-zero only where y is
                    j = idx[k]
                    ryj = ry[j]
                    row = RT[j]
                    for h in range(H):
                        rh[2 * H + h] += ryj * row[2 * H + h]
                for h in range(H):
                    g[h] = pt[2 * H + h] + rh[2 * H + h]
            else:
                rhg = rhg_out[ts, bi]
                for h in range(H):
                    rhg[h] = rh[2 * H + h]
                    g[h] = pt[2 * H + h] + rg[h] * rh[2 * H + h]
            if fast:  # tanh(a) = 1 − 2/(e^{2a} + 1)
                for h in range(H):
                    g[h] = g[h] + g[h]
                exp_f32(g, H, bits)
                for h in range(H):
                    g[h] = one - (one + one) / (g[h] + one)
            else:
                for h in range(H):
                    g[h] = np.tanh(g[h])
            ch = chat_out[t % chat_out.shape[0], bi]
            yo = y_out[t, bi]
            tri = tr[bi]
            if zone == ZONEOUT_NONE and not event:  # the usual case, without branches in the loop
                for h in range(H):
                    v = lerp(g[h], ci[h], zg[h], one)
                    ch[h] = v
                    fire = (v - thr[h]) > 0
                    yo[h] = v if fire else zero
                    ci[h] = v - thr[h] if fire else v - zero * thr[h]
                    tri[h] = lerp(tri[h], yo[h], w_tr, one)
                continue
            for h in range(H):
                v = lerp(g[h], ci[h], zg[h], one)
                if zone == ZONEOUT_MASK:
                    v = lerp(ci[h], v, zmask[t, bi, h], one)
                elif zone == ZONEOUT_EVAL:
                    v = lerp(v, ci[h], p_zone, one)
                if event:
                    v = v - yp[h]
                ch[h] = v
                fire = (v - thr[h]) > 0
                yo[h] = v if fire else zero
                if event:
                    ci[h] = v
                else:
                    ci[h] = v - thr[h] if fire else v - zero * thr[h]
                tri[h] = lerp(tri[h], yo[h], w_tr, one)


@njit(cache=True, nogil=True, error_model="numpy")
def egru_backward(gy, gch, RT, R, thr, c0, y0, zmask, y_out, chat, zg_s, rg_s, g_s, rhg_s, consts, flags,
                  need_y0, recurrent_grad, gemm, dense_min, dP, dRh, dthr, dc, dyc, dtr, t0, t1, bs, be):
    """Backpropagate samples ``bs..be−1`` through steps ``t1−1`` down to ``t0``. Writes ``dP``
    (projection), ``dRh`` (gradient of ``Rh = R y_{t−1} + b_R``; for reset gate before, its g
    part is the gradient of ``R_g (r ⊙ y_{t−1})``) and this thread's ``dthr``.

    ``dc``, ``dyc``, ``dtr`` ``[B, H]`` carry the gradients w.r.t. ``c_t``, ``y_t`` and the
    trace from step ``t + 1`` (zeros, zeros and ``∂L/∂trace_T`` at the start); after step 0
    they hold the initial-state gradients. ``gy`` or ``gch`` is one all-zero step when that
    output gets no gradient. Without ``recurrent_grad`` (reset gate after only),
    the gradient to ``y_{t−1}`` through ``R`` is left to the caller (``dRh_t R``, one matmul)."""
    _, _, H = gy.shape
    n = be - bs
    event = flags[RESET_EVENT] != 0
    before = flags[GATE_BEFORE] != 0
    zone = flags[ZONEOUT]
    kind = flags[SURROGATE]
    sa, sb, p_zone, w_tr = consts[SUR_A], consts[SUR_B], consts[ZONEOUT_P], consts[TRACE_W]
    zero = consts.dtype.type(0.0)
    one = consts.dtype.type(1.0)
    dry = np.empty(H, gy.dtype)
    idx = np.empty(H, np.int64)
    all_units = np.arange(H)
    cprev = np.empty(H, gy.dtype)
    dchv = np.empty(H, gy.dtype)  # ∂L/∂ĉ_t of one sample (the usual case's passes)
    scratch = gemm_scratch(gy)
    for t in range(t1 - 1, t0 - 1, -1):
        # The gradient to y_{t−1} through R (below) can flow only where o or ψ at t − 1 is non-zero;
        # when enough units pass it, one GEMM for the slice replaces the per-unit dot products
        # (it also fills the other entries, which step t − 1 multiplies by zero).
        dense = False
        if recurrent_grad and not before and (t > 0 or need_y0):
            flowing = n * H
            if t > 0:
                flowing = 0
                for i in range(n):
                    chp = chat[t - 1, bs + i]
                    for h in range(H):
                        mp = chp[h] - thr[h]
                        flowing += (mp > 0) | (_pseudo(mp, kind, sa, sb, one) != 0)  # (no branch)
            dense = flowing > dense_min * n * H
        for i in range(n):
            bi = bs + i
            yp = y0[bi] if t == 0 else y_out[t - 1, bi]
            if t == 0:
                cprev[:] = c0[bi]
            else:
                chp = chat[t - 1, bi]
                for h in range(H):
                    fire_p = (chp[h] - thr[h]) > 0
                    if event:
                        cprev[h] = chp[h]
                    else:
                        cprev[h] = chp[h] - thr[h] if fire_p else chp[h] - zero * thr[h]
            ch = chat[t, bi]
            zg = zg_s[t, bi]
            rg = rg_s[t, bi]
            g = g_s[t, bi]
            dci = dc[bi]
            dyi = dyc[bi]
            dtri = dtr[bi]
            dp = dP[t, bi]
            drh = dRh[t, bi]
            # ∂L/∂ĉ_t in a first pass of its own (branch-free: vector lanes); y_t feeds the
            # output, step t + 1 and the trace
            gyi = gy[t % gy.shape[0], bi]
            gchi = gch[t % gch.shape[0], bi]
            for h in range(H):
                dt_h = dtri[h]
                dy = gyi[h] + dyi[h] + dt_h * w_tr
                dtri[h] = dt_h * (one - w_tr)
                margin = ch[h] - thr[h]
                o = one if margin > 0 else zero
                dch = gchi[h] + o * dy
                do = ch[h] * dy
                dch += dci[h]
                if not event:  # c_t = ĉ_t − o_t ϑ
                    do -= thr[h] * dci[h]
                    dthr[h] -= o * dci[h]
                dm = do * _pseudo(margin, kind, sa, sb, one)
                dch += dm
                dthr[h] -= dm
                dchv[h] = dch
            if zone == ZONEOUT_NONE and not event and not before:
                # The usual case in passes that each touch few arrays (faster than one pass:
                # fewer streams to keep in cache at once); the same arithmetic as the general
                # loop below.
                for h in range(H):
                    z = zg[h]
                    da_z = dchv[h] * (cprev[h] - g[h]) * (one - z) * z
                    dp[h] = da_z
                    drh[h] = da_z
                rhg = rhg_s[t, bi]
                for h in range(H):
                    r = rg[h]
                    da_g = dchv[h] * (one - zg[h]) * (one - g[h] * g[h])
                    dp[2 * H + h] = da_g
                    drh[2 * H + h] = da_g * r
                    da_r = da_g * rhg[h] * (one - r) * r
                    dp[H + h] = da_r
                    drh[H + h] = da_r
                for h in range(H):
                    dci[h] = dchv[h] * zg[h]
                    dyi[h] = zero
            else:
                for h in range(H):
                    dch = dchv[h]
                    dyp = zero
                    if event:
                        dyp = -dch  # ĉ −= y_{t−1}
                    dcp = zero
                    if zone == ZONEOUT_MASK:
                        m = zmask[t, bi, h]
                        dcp += dch * (one - m)
                        dch = dch * m
                    elif zone == ZONEOUT_EVAL:
                        dcp += dch * p_zone
                        dch = dch * (one - p_zone)
                    # ĉ = lerp(g, c_{t−1}, z)
                    z = zg[h]
                    dgv = dch * (one - z)
                    dcp += dch * z
                    dz = dch * (cprev[h] - g[h])
                    da_g = dgv * (one - g[h] * g[h])
                    if before:
                        dr = zero  # filled below from the recurrent product
                        drh[2 * H + h] = da_g
                    else:
                        dr = da_g * rhg_s[t, bi, h]
                        drh[2 * H + h] = da_g * rg[h]
                    da_z = dz * (one - z) * z
                    dp[h] = da_z
                    drh[h] = da_z
                    dp[2 * H + h] = da_g
                    if not before:
                        r = rg[h]
                        da_r = dr * (one - r) * r
                        dp[H + h] = da_r
                        drh[H + h] = da_r
                    dci[h] = dcp
                    dyi[h] = dyp
            if before:
                # d(r ⊙ y)[j] = Σ_k da_g[k] R_g[k, j]: needed for dr where y ≠ 0 and for dy where
                # the gradient to y_{t−1} can flow (o or ψ non-zero at t − 1)
                if t > 0:
                    chp = chat[t - 1, bi]
                    count = 0
                    for h in range(H):
                        mp = chp[h] - thr[h]
                        idx[count] = h
                        count += (mp > 0) | (_pseudo(mp, kind, sa, sb, one) != 0)
                else:
                    count = H
                    for h in range(H):
                        idx[h] = h
                dry[:] = zero
                for k in range(count):
                    j = idx[k]
                    dry[j] = _dot(drh[2 * H:], RT[j, 2 * H:])
                for h in range(H):
                    r = rg[h]
                    da_r = dry[h] * yp[h] * (one - r) * r
                    dp[H + h] = da_r
                    drh[H + h] = da_r
                    dyi[h] += dry[h] * r
            # gradient to y_{t−1} through the recurrent matmul, only where it can flow (when
            # dense, one GEMM for the slice after this loop instead)
            width = 2 * H if before else 3 * H
            if recurrent_grad and not dense and t > 0:
                chp = chat[t - 1, bi]
                count = 0
                for h in range(H):
                    mp = chp[h] - thr[h]
                    idx[count] = h
                    count += (mp > 0) | (_pseudo(mp, kind, sa, sb, one) != 0)
                _dot_rows(drh, RT, idx, count, width, dyi)
            elif recurrent_grad and not dense and need_y0:
                _dot_rows(drh, RT, all_units, H, width, dyi)
        if dense:  # dy_{t−1} += dRh_t R
            gemm_acc(gemm, dRh[t, bs:be], R, dyc[bs:be], False, scratch)
