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
"""
from __future__ import annotations

import numpy as np
from numba import njit

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


@njit(cache=True, nogil=True)
def lif_forward(I, WT, v0, z0, b0, r0, alpha, gain_in, thr, rho, gain_b, beta, consts, flags,
                z_out, psi_out, x_out, A_out, vT, bT, rT, bs, be):
    """Run samples ``bs..be−1`` over all steps; write spikes, pseudo-derivatives and (ALIF) the
    surrogate argument and adaptive threshold of every step, and the final state."""
    T, _, H = I.shape
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
    zero = dt * 0
    one = zero + 1
    spike_value = one / dt
    cur = np.empty(H, I.dtype)
    v = np.empty(H, I.dtype)
    b = np.empty(H, I.dtype)
    r = np.empty(H, I.dtype)
    for bi in range(bs, be):
        v[:] = v0[bi]
        b[:] = b0[bi]
        r[:] = r0[bi]
        for t in range(T):
            zprev = z0[bi] if t == 0 else z_out[t - 1, bi]
            cur[:] = I[t, bi]
            if has_rec:
                for j in range(H):
                    zj = zprev[j]
                    if zj != 0:  # gather: only units that spiked contribute
                        row = WT[j]
                        for h in range(H):
                            cur[h] += zj * row[h]
            for h in range(H):
                if adaptive:
                    bn = rho[h] * b[h] + gain_b[h] * zprev[h]
                    b[h] = bn
                    A = thr[h] + beta[h] * bn
                else:
                    A = thr[h]
                vn = alpha[h] * v[h] + gain_in[h] * cur[h]
                R = A if reset_adapt else thr[h]
                vn = vn - zprev[h] * (R * dt)
                vs = v[h] if from_prev else vn
                N = A if norm_adapt else thr[h]
                x = (vs - A) / N
                fire = x > 0
                blocked = False
                if n_ref > 0:
                    blocked = r[h] > 0
                    if blocked:
                        fire = False
                    r[h] = n_ref if fire else max(r[h] - one, zero)
                z_out[t, bi, h] = spike_value if fire else zero
                if blocked:
                    psi_out[t, bi, h] = zero
                elif kind == PIECEWISE_LINEAR:
                    a = one - abs(x) / sb
                    psi_out[t, bi, h] = sa * (a if a > 0 else zero)
                else:
                    d = one + sa * abs(x)
                    psi_out[t, bi, h] = one / (d * d)
                if adaptive:
                    x_out[t, bi, h] = x
                    A_out[t, bi, h] = A
                v[h] = vn
        vT[bi] = v
        bT[bi] = b
        rT[bi] = r


@njit(cache=True, nogil=True)
def lif_backward(gz, gvT, gbT, WT, z0, z_out, psi, x_s, A_s, alpha, gain_in, thr, rho, gain_b, beta,
                 consts, flags, need_z0, dI, dWT, dv0, dz0, db0, bs, be):
    """Backpropagate through samples ``bs..be−1``: ``dI`` (gradient of the currents), ``dWT``
    (this thread's accumulator of the transposed recurrent-weight gradient) and the gradients of
    the initial ``v``, ``z`` (only if ``need_z0``) and ``b``."""
    T, _, H = gz.shape
    adaptive = flags[ADAPTIVE] != 0
    reset_adapt = adaptive and flags[RESET_BY_ADAPTIVE] != 0
    norm_adapt = adaptive and flags[NORMALIZE_BY_ADAPTIVE] != 0
    from_prev = flags[SPIKE_FROM_PREVIOUS] != 0
    has_rec = flags[HAS_REC] != 0
    detach = flags[DETACH_RESET] != 0
    dt = consts[DT]
    zero = dt * 0
    dv = np.empty(H, gz.dtype)
    dz = np.empty(H, gz.dtype)
    db = np.empty(H, gz.dtype)
    dcur = np.empty(H, gz.dtype)
    for bi in range(bs, be):
        dv[:] = gvT[bi]
        db[:] = gbT[bi]
        dz[:] = zero
        for t in range(T - 1, -1, -1):
            zprev = z0[bi] if t == 0 else z_out[t - 1, bi]
            for h in range(H):
                dx = (gz[t, bi, h] + dz[h]) / dt * psi[t, bi, h]
                N = A_s[t, bi, h] if norm_adapt else thr[h]
                dvs = dx / N
                dvn = dv[h] if from_prev else dv[h] + dvs
                dcur[h] = gain_in[h] * dvn
                dzp = zero
                if adaptive:
                    A = A_s[t, bi, h]
                    dA = -dvs  # x = (v_s − A)/N
                    if norm_adapt:
                        dA -= dvs * x_s[t, bi, h]  # N = A: −(v_s − A)/A² = −x/A
                    if reset_adapt:
                        dA -= zprev[h] * dt * dvn  # v −= z_{t−1}·A·dt
                    if not detach:
                        dzp = -((A if reset_adapt else thr[h]) * dt) * dvn
                    dbt = db[h] + beta[h] * dA
                    db[h] = rho[h] * dbt
                    dzp += gain_b[h] * dbt
                elif not detach:
                    dzp = -(thr[h] * dt) * dvn
                dv[h] = alpha[h] * dvn + (dvs if from_prev else zero)
                dz[h] = dzp
            dI[t, bi] = dcur
            if has_rec:
                if t > 0:
                    psi_prev = psi[t - 1, bi]
                    for j in range(H):
                        if psi_prev[j] != 0:  # sparse BPTT: z_{t−1}[j] is only read through ψ_{t−1}[j]
                            dz[j] += _dot(dcur, WT[j])
                elif need_z0:
                    for j in range(H):
                        dz[j] += _dot(dcur, WT[j])
                for j in range(H):
                    zj = zprev[j]
                    if zj != 0:  # weight gradient: only presynaptic units that spiked
                        row = dWT[j]
                        for h in range(H):
                            row[h] += zj * dcur[h]
        dv0[bi] = dv
        dz0[bi] = dz
        db0[bi] = db
