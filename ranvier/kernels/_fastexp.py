"""A vectorisable float32 exp for the compiled loops (engine and fused kernels).

libm's ``exp``/``expf`` is a scalar call per element, which stops LLVM from vectorising a loop
(numba's pip build has no vector math library). :func:`exp_f32` is plain arithmetic and bit
manipulation, so its loops run 8 or 16 lanes wide.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["exp_f32"]

# float32 exp as 2^k·p(r): k = round(x·log2 e), r = x − k·ln 2 (ln 2 split in two so that k·ln2_hi
# is exact), p the degree-7 Taylor polynomial of e^r on |r| ≤ ln 2 / 2 (error < 1e-7 relative,
# about one float32 ulp, like libm's expf). Unlike a libm call it is plain arithmetic, so LLVM
# vectorises the loops below: 16 lanes instead of one call per element.
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.1219444005469057e-4)
_EXP_MIN, _EXP_MAX = np.float32(-87.0), np.float32(88.0)
_TAYLOR = tuple(np.float32(1.0 / math.factorial(k)) for k in range(7, -1, -1))


@njit(cache=True, error_model="numpy")
def exp_f32(x, n, bits):  # pragma: no cover - compiled
    """``x[:n] = exp(x[:n])`` in float32 (see the constants above); ``bits`` int32 scratch ``[≥ n]``.
    Arguments are clamped to [−87, 88], where expf neither underflows to 0 nor overflows."""
    c7, c6, c5, c4, c3, c2, c1, c0 = _TAYLOR
    for i in range(n):
        v = min(max(x[i], _EXP_MIN), _EXP_MAX)
        k = np.floor(v * _LOG2E + np.float32(0.5))
        r = (v - k * _LN2_HI) - k * _LN2_LO
        x[i] = ((((((c7 * r + c6) * r + c5) * r + c4) * r + c3) * r + c2) * r + c1) * r + c0
        bits[i] = (np.int32(k) + np.int32(127)) << 23  # the float32 2^k
    scale = bits[:n].view(np.float32)
    for i in range(n):
        x[i] = x[i] * scale[i]
