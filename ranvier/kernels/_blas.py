"""GEMM from inside the compiled loops: the MKL that torch's x86 wheels link and export.

A recurrent step multiplies a batch slice by the recurrent weight (``[n, H] @ [H, H]``, or with
the EGRU's three gates ``[n, H] @ [H, 3H]``). MKL's single-threaded ``sgemm`` does that at 45-70
GMAC/s on the CI machine, 5-7× the rate of numba's row gathers and dot products
(``benchmarks/gemm_breakeven.py``). So when enough units are active the loops call
:func:`gemm_acc` instead. The function pointer is an argument, not a global, so that numba can
cache the compiled loops (an address baked into machine code would not survive a new process).

Where torch has no MKL (other platforms, other builds) :data:`AVAILABLE` is ``False`` and the
loops keep their sparse gathers and dot products for every density; they are tested both ways.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np
import torch
from numba import njit

__all__ = ["AVAILABLE", "gemm_for", "gemm_acc", "gemm_scratch", "local_blas_threads"]

# Fortran ?gemm_(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc): every argument by
# reference.
GEMM_SIGNATURE = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 13)


def _load():
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        lib = ctypes.CDLL(path)  # already loaded by ``import torch``: this only gets a handle
        sgemm, dgemm, set_local = lib.sgemm_, lib.dgemm_, lib.MKL_Set_Num_Threads_Local
    except (OSError, AttributeError):
        return None
    address = lambda f: ctypes.cast(f, ctypes.c_void_p).value  # noqa: E731
    set_local.restype, set_local.argtypes = ctypes.c_int, [ctypes.c_int]
    return GEMM_SIGNATURE(address(sgemm)), GEMM_SIGNATURE(address(dgemm)), set_local


def _never_called(*_args):  # pragma: no cover - the loops do not call GEMM when unavailable
    raise RuntimeError("BLAS is not available")


_FOUND = _load()
AVAILABLE = _FOUND is not None
# (a typed placeholder keeps the compiled loops' signature the same without MKL)
_PLACEHOLDER = GEMM_SIGNATURE(_never_called)
_SGEMM, _DGEMM, _SET_LOCAL = _FOUND if AVAILABLE else (_PLACEHOLDER, _PLACEHOLDER, None)


def gemm_for(dtype) -> ctypes._CFuncPtr:
    """The ``?gemm_`` for a numpy or torch float dtype (a placeholder when :data:`AVAILABLE` is False)."""
    return _DGEMM if dtype in (np.float64, torch.float64) else _SGEMM


def local_blas_threads(n: int) -> int:
    """Set MKL's thread count for the calling thread only and return the previous setting
    (0: the global one). Each kernel thread runs its own batch slice, so its GEMMs must not
    start more threads. A no-op returning 0 without MKL."""
    return _SET_LOCAL(n) if _SET_LOCAL is not None else 0


@njit(cache=True, nogil=True)
def gemm_scratch(like):
    """The by-reference scalars of a GEMM call on arrays of ``like``'s dtype: ``(ints [m, n, k,
    ldb], floats [α, β], chars "NT")``, allocated once per loop rather than per call."""
    return (np.empty(4, np.int32), np.ones(2, like.dtype), np.array([ord("N"), ord("T")], np.uint8))


@njit(cache=True, nogil=True)
def gemm_acc(gemm, a, b, c, b_transposed, scratch):
    """``c += a @ b`` for row-major C-contiguous 2-D arrays ``a [n, K]`` and ``c [n, M]``, where
    ``b`` is ``[K, M]``, or, with ``b_transposed``, ``[M, K]`` holding ``bᵀ``.

    BLAS is column-major, where a row-major ``X`` reads as ``Xᵀ``: so this computes
    ``cᵀ += op(b)ᵀ aᵀ`` with ``m = M``, ``n = n``, ``k = K``."""
    ints, floats, chars = scratch
    ints[0] = c.shape[1]
    ints[1] = a.shape[0]
    ints[2] = a.shape[1]
    ints[3] = b.shape[1]  # b's leading dimension in the column-major view: its row length
    floats[0] = 1.0
    floats[1] = 1.0
    trans_b = chars[1:] if b_transposed else chars[:1]
    gemm(trans_b.ctypes, chars[:1].ctypes, ints[0:].ctypes, ints[1:].ctypes, ints[2:].ctypes, floats[0:].ctypes,
         b.ctypes, ints[3:].ctypes, a.ctypes, ints[2:].ctypes, floats[1:].ctypes, c.ctypes, ints[0:].ctypes)
