"""Numba loops for the LIF/ALIF layer: the whole sequence forward and its backward.

These are the compiled halves of :class:`ranvier.kernels.lif.SpikingRecurrentFunction`; read
:func:`ranvier.neurons.common.integrate_and_fire` and :func:`ranvier.neurons.alif.alif_step` for
the update they implement (the pure-torch reference they are tested against).

Layout: ``currents``/``z``/``psi`` are ``[T, B, H]`` C-contiguous; ``WT`` is the (masked)
recurrent weight transposed, ``WT[j] = W[:, j]``, so that "add the input of presynaptic unit j"
and "gradient to presynaptic unit j" both read one contiguous row. Each call handles the samples
``bs <= b < be``, so that two threads can run disjoint batch slices (samples are independent;
only the weight gradient is shared, and each thread gets its own accumulator).

Where sparsity is used:
- forward, ``I_t + W z_{t−1}``: only rows ``WT[j]`` of units that spiked at ``t − 1`` are added;
- backward, gradient to ``z_{t−1}``: ``Σ_i δ_i W[i, j]`` is computed only for units ``j`` whose
  pseudo-derivative at ``t − 1`` is non-zero (everything else would be multiplied by 0);
- backward, ``dW += δ_tᵀ z_{t−1}``: only rows of presynaptic units that spiked.

The first two switch, step by step, to one GEMM over the thread's batch slice (MKL, through
``gemm``) when more than ``dense_min`` of the slice's units are active: a GEMM does 5-7× the
multiply-adds per second of the gathers and dot products, so from about 15-20 % active the
dense product is the faster one (``benchmarks/gemm_breakeven.py``). ``dense_min > 1`` never
switches.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._blas import gemm_acc, gemm_scratch

PIECEWISE_LINEAR = 0
FAST_SIGMOID = 1

# flags[...] indices
ADAPTIVE, RESET_BY_ADAPTIVE, NORMALIZE_BY_ADAPTIVE, SPIKE_FROM_PREVIOUS, SURROGATE, HAS_REC, DETACH_RESET = range(7)
# consts[...] indices (in the tensors' dtype)
DT, SUR_A, SUR_B, N_REF = range(4)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dot(a, b):
    """Plain dot product; ``reassoc`` lets LLVM vectorise the reduction (like BLAS does)."""
    s = a.dtype.type(0.0)
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


@njit(cache=True, nogil=True, fastmath={"contract"})
def _add_rows(acc, rows, weights, idx, count, width):
    """``acc[:width] += Σ_k weights[j] · rows[j, :width]`` over ``j = idx[k]``, ``k < count``.

    Four rows per pass over ``acc``: a pass per row does one load and one store of ``acc`` per
    multiply-add and is bound by them; four rows share them (docs/kernels.md, "Dense steps")."""
    k = 0
    while k + 4 <= count:
        j0, j1, j2, j3 = idx[k], idx[k + 1], idx[k + 2], idx[k + 3]
        w0, w1, w2, w3 = weights[j0], weights[j1], weights[j2], weights[j3]
        r0, r1, r2, r3 = rows[j0], rows[j1], rows[j2], rows[j3]
        for h in range(width):
            acc[h] += w0 * r0[h] + w1 * r1[h] + w2 * r2[h] + w3 * r3[h]
        k += 4
    while k < count:
        w = weights[idx[k]]
        r = rows[idx[k]]
        for h in range(width):
            acc[h] += w * r[h]
        k += 1


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dot_rows(vec, rows, idx, count, width, out):
    """``out[j] += vec[:width] · rows[j, :width]`` for ``j = idx[k]``, ``k < count``; four rows
    per pass, so that each load of ``vec`` serves four multiply-adds."""
    zero = vec.dtype.type(0.0)
    k = 0
    while k + 4 <= count:
        j0, j1, j2, j3 = idx[k], idx[k + 1], idx[k + 2], idx[k + 3]
        r0, r1, r2, r3 = rows[j0], rows[j1], rows[j2], rows[j3]
        s0 = s1 = s2 = s3 = zero
        for h in range(width):
            v = vec[h]
            s0 += v * r0[h]
            s1 += v * r1[h]
            s2 += v * r2[h]
            s3 += v * r3[h]
        out[j0] += s0
        out[j1] += s1
        out[j2] += s2
        out[j3] += s3
        k += 4
    while k < count:
        r = rows[idx[k]]
        s = zero
        for h in range(width):
            s += vec[h] * r[h]
        out[idx[k]] += s
        k += 1


@njit(cache=True, nogil=True)
def _nonzero(src, idx):
    """Write the indices of the non-zero entries of ``src`` to ``idx``; return their count
    (branch-free, so that a 20 %-active spike vector costs no mispredictions)."""
    count = 0
    for h in range(src.shape[0]):
        idx[count] = h
        count += src[h] != 0
    return count


@njit(cache=True, nogil=True, error_model="numpy")
def lif_forward(I, WT, v0, z0, b0, r0, alpha, gain_in, thr, rho, gain_b, beta, consts, flags,
                z_out, psi_out, x_out, A_out, vT, bT, rT, spike_count, gemm, dense_min, bs, be):
    """Run samples ``bs..be−1`` over all steps; write spikes, pseudo-derivatives and (ALIF) the
    surrogate argument and adaptive threshold of every step, the final state, and each sample's
    number of spikes over the sequence to ``spike_count[b]``.

    The element-wise update is split into branch-free passes over the units so that LLVM
    vectorises them; which array plays ``A``, ``R``, ``N`` and ``v_s`` is chosen once per step.
    """
    T, _, H = I.shape
    n = be - bs
    adaptive = flags[ADAPTIVE] != 0
    reset_adapt = adaptive and flags[RESET_BY_ADAPTIVE] != 0
    norm_adapt = adaptive and flags[NORMALIZE_BY_ADAPTIVE] != 0
    from_prev = flags[SPIKE_FROM_PREVIOUS] != 0
    kind = flags[SURROGATE]
    has_rec = flags[HAS_REC] != 0
    dt = consts[DT]
    sa = consts[SUR_A]
    sb = consts[SUR_B]
    n_ref = consts[N_REF]
    # constants in the tensors' dtype: a literal would promote float32 arithmetic to float64
    zero = consts.dtype.type(0.0)
    one = consts.dtype.type(1.0)
    spike_value = one / dt
    cur = np.empty((n, H), I.dtype)
    v = np.empty((n, H), I.dtype)
    b = np.empty((n, H), I.dtype)
    r = np.empty((n, H), I.dtype)
    for i in range(n):
        v[i] = v0[bs + i]
        b[i] = b0[bs + i]
        r[i] = r0[bs + i]
        spike_count[bs + i] = 0
    vn = np.empty(H, I.dtype)
    idx = np.empty(H, np.int64)
    a_t = np.empty(H, I.dtype)
    x = np.empty(H, I.dtype)
    scratch = gemm_scratch(I)
    active = 0  # spikes in the slice at t − 1
    for i in range(n):
        for h in range(H):
            active += z0[bs + i, h] != 0
    for t in range(T):
        for i in range(n):
            cur[i] = I[t, bs + i]
        if has_rec and active > dense_min * n * H:
            gemm_acc(gemm, z0[bs:be] if t == 0 else z_out[t - 1, bs:be], WT, cur, False, scratch)
        elif has_rec:
            # Gather: only rows of units that spiked at t − 1 are added.
            for i in range(n):
                zp = z0[bs + i] if t == 0 else z_out[t - 1, bs + i]
                _add_rows(cur[i], WT, zp, idx, _nonzero(zp, idx), H)
        active = 0
        for i in range(n):
            bi = bs + i
            zp = z0[bi] if t == 0 else z_out[t - 1, bi]
            vi = v[i]
            ci = cur[i]
            if adaptive:
                bi_ = b[i]
                for h in range(H):
                    bn = rho[h] * bi_[h] + gain_b[h] * zp[h]
                    bi_[h] = bn
                    a_t[h] = thr[h] + beta[h] * bn
            A = a_t if adaptive else thr
            R = A if reset_adapt else thr
            N = A if norm_adapt else thr
            for h in range(H):
                vn[h] = alpha[h] * vi[h] + gain_in[h] * ci[h]
            for h in range(H):
                vn[h] = vn[h] - zp[h] * (R[h] * dt)
            vs = vi if from_prev else vn
            zo = z_out[t, bi]
            po = psi_out[t % psi_out.shape[0], bi]  # one-step buffer when nothing is stored
            for h in range(H):
                xh = (vs[h] - A[h]) / N[h]
                x[h] = xh
                zo[h] = spike_value if xh > 0 else zero
            if kind == PIECEWISE_LINEAR:
                for h in range(H):
                    a = one - abs(x[h]) / sb
                    po[h] = sa * (a if a > 0 else zero)
            else:
                for h in range(H):
                    d = one + sa * abs(x[h])
                    po[h] = one / (d * d)
            if n_ref > 0:
                ri = r[i]
                for h in range(H):
                    blocked = ri[h] > 0
                    fire = zo[h] != 0 and not blocked
                    zo[h] = spike_value if fire else zero
                    po[h] = zero if blocked else po[h]
                    ri[h] = n_ref if fire else max(ri[h] - one, zero)
            if adaptive:
                x_out[t % x_out.shape[0], bi] = x
                A_out[t % A_out.shape[0], bi] = a_t
            fired = 0
            for h in range(H):
                fired += zo[h] != 0
            spike_count[bi] += fired
            active += fired
            vi[:] = vn
    for i in range(n):
        vT[bs + i] = v[i]
        bT[bs + i] = b[i]
        rT[bs + i] = r[i]


@njit(cache=True, nogil=True, error_model="numpy")
def lif_backward(gz, gvT, gbT, WT, W, z0, z_out, psi, x_s, A_s, alpha, gain_in, thr, rho, gain_b, beta,
                 consts, flags, need_z0, sparse_dw, gemm, dense_min, dI, dWT, dv0, dz0, db0, bs, be):
    """Backpropagate through samples ``bs..be−1``: ``dI`` (gradient of the currents), ``dWT``
    (this thread's accumulator of the transposed recurrent-weight gradient, only if
    ``sparse_dw``; otherwise the caller computes it as one GEMM from ``dI``) and the gradients of
    the initial ``v``, ``z`` (only if ``need_z0``) and ``b``."""
    T, _, H = z_out.shape  # not gz: that is one all-zero step when the spikes get no gradient
    n = be - bs
    adaptive = flags[ADAPTIVE] != 0
    reset_adapt = adaptive and flags[RESET_BY_ADAPTIVE] != 0
    norm_adapt = adaptive and flags[NORMALIZE_BY_ADAPTIVE] != 0
    from_prev = flags[SPIKE_FROM_PREVIOUS] != 0
    has_rec = flags[HAS_REC] != 0
    detach = flags[DETACH_RESET] != 0
    dt = consts[DT]
    zero = consts.dtype.type(0.0)
    dv = np.empty((n, H), gz.dtype)
    db = np.empty((n, H), gz.dtype)
    dz = np.zeros((n, H), gz.dtype)
    dcur = np.empty((n, H), gz.dtype)
    for i in range(n):
        dv[i] = gvT[bs + i]
        db[i] = gbT[bs + i]
    idx = np.empty(H, np.int64)
    all_units = np.arange(H)
    scratch = gemm_scratch(dv)
    dvs = np.empty(H, gz.dtype)
    dvn = np.empty(H, gz.dtype)
    dA = np.empty(H, gz.dtype)
    for t in range(T - 1, -1, -1):
        for i in range(n):
            bi = bs + i
            zp = z0[bi] if t == 0 else z_out[t - 1, bi]
            g = gz[t % gz.shape[0], bi]  # gz has one all-zero step when the spikes get no gradient
            p = psi[t, bi]
            dzi = dz[i]
            dvi = dv[i]
            N = A_s[t, bi] if norm_adapt else thr
            for h in range(H):
                dvs[h] = (g[h] + dzi[h]) / dt * p[h] / N[h]
            if from_prev:
                dvn[:] = dvi
            else:
                for h in range(H):
                    dvn[h] = dvi[h] + dvs[h]
            dci = dcur[i]
            for h in range(H):
                dci[h] = gain_in[h] * dvn[h]
            if detach:
                dzi[:] = zero
            else:
                R = A_s[t, bi] if reset_adapt else thr
                for h in range(H):
                    dzi[h] = -(R[h] * dt) * dvn[h]
            if adaptive:
                for h in range(H):
                    dA[h] = -dvs[h]  # x = (v_s − A)/N
                if norm_adapt:
                    xs = x_s[t, bi]
                    for h in range(H):
                        dA[h] -= dvs[h] * xs[h]  # N = A: ∂x/∂N = −x/A
                if reset_adapt:
                    for h in range(H):
                        dA[h] -= zp[h] * dt * dvn[h]  # v −= z_{t−1}·A·dt
                dbi = db[i]
                for h in range(H):
                    dbt = dbi[h] + beta[h] * dA[h]
                    dbi[h] = rho[h] * dbt
                    dzi[h] += gain_b[h] * dbt
            if from_prev:
                for h in range(H):
                    dvi[h] = alpha[h] * dvn[h] + dvs[h]
            else:
                for h in range(H):
                    dvi[h] = alpha[h] * dvn[h]
            dI[t, bi] = dci
        if has_rec:
            # Sparse BPTT: z_{t−1}[j] is only read through ψ_{t−1}[j], so its gradient is needed
            # only where that pseudo-derivative is non-zero; the dense product also fills the
            # other entries, which step t − 1 multiplies by that zero.
            flowing = n * H if t == 0 else 0
            if t > 0:
                for i in range(n):
                    pp = psi[t - 1, bs + i]
                    for h in range(H):
                        flowing += pp[h] != 0
            dense = (t > 0 or need_z0) and flowing > dense_min * n * H
            if dense:
                gemm_acc(gemm, dcur, W, dz, False, scratch)  # dz += dcur W
            for i in range(n):
                bi = bs + i
                dci = dcur[i]
                dzi = dz[i]
                if not dense and t > 0:
                    _dot_rows(dci, WT, idx, _nonzero(psi[t - 1, bi], idx), H, dzi)
                elif not dense and need_z0:
                    _dot_rows(dci, WT, all_units, H, H, dzi)
                if not sparse_dw:
                    continue
                # Weight gradient: only rows of presynaptic units that spiked.
                zp = z0[bi] if t == 0 else z_out[t - 1, bi]
                for k in range(_nonzero(zp, idx)):
                    j = idx[k]
                    zj = zp[j]
                    drow = dWT[j]
                    for h in range(H):
                        drow[h] += zj * dci[h]
    for i in range(n):
        dv0[bs + i] = dv[i]
        dz0[bs + i] = dz[i]
        db0[bs + i] = db[i]
