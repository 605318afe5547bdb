"""Where the fused kernels switch from sparse loops to a GEMM: the recurrent product of one step.

The LIF/ALIF and EGRU kernels compute a step's recurrent product for a thread's batch slice either
sample by sample, using only the active units (forward: add the rows of ``Wᵀ`` of units with a
spike or event; backward: one dot product per unit whose gradient can flow), or as one GEMM over
the slice (MKL's single-threaded ``sgemm``, called from inside the compiled loop). This script
times both, single-threaded, on random float32 data at several activities, for the slice shapes
of ``benchmarks/speed.py`` (2 threads: shape A gives slices of 32 samples with H = 128, shape B
slices of 16 with H = 512; the EGRU's product is three gates wide). The kernels switch to the
GEMM above ``GEMM_MIN_ACTIVITY`` (``ranvier/kernels/lif.py``, ``egru.py``).

    python benchmarks/gemm_breakeven.py
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from common import write_results
from numba import njit

from ranvier.kernels import _blas
from ranvier.kernels._lif_numba import _add_rows, _dot_rows, _nonzero
from ranvier.kernels.lif import GEMM_MIN_ACTIVITY

# (slice rows n, presynaptic units H, product width): LIF A, EGRU A, LIF B, EGRU B
SHAPES = ((32, 128, 128), (32, 128, 384), (16, 512, 512), (16, 512, 1536))
ACTIVITIES = (0.05, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0)
MACS_PER_TIMING = 3e8  # repeats chosen so that each timing does about this many dense MACs


@njit(cache=True, nogil=True)
def gather(y, wt, out, repeats):
    """Forward form: ``out[i] += Σ_j y[i, j] Wᵀ[j]`` over the non-zero ``y[i, j]`` only (the
    kernels' own ``_add_rows``)."""
    idx = np.empty(y.shape[1], np.int64)
    for _ in range(repeats):
        for i in range(y.shape[0]):
            _add_rows(out[i], wt, y[i], idx, _nonzero(y[i], idx), wt.shape[1])


@njit(cache=True, nogil=True)
def dots(delta, wt, out, flowing, repeats):
    """Backward form: ``out[i, j] += δ[i] · Wᵀ[j]`` where ``flowing[i, j] ≠ 0`` only (the
    kernels' own ``_dot_rows``)."""
    idx = np.empty(wt.shape[0], np.int64)
    for _ in range(repeats):
        for i in range(delta.shape[0]):
            _dot_rows(delta[i], wt, idx, _nonzero(flowing[i], idx), wt.shape[1], out[i])


@njit(cache=True, nogil=True)
def gemm(fn, a, b, out, repeats):
    scratch = _blas.gemm_scratch(a)
    for _ in range(repeats):
        _blas.gemm_acc(fn, a, b, out, False, scratch)


def median_ms(run, times: int = 5) -> float:
    run()
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def main() -> None:
    if not _blas.AVAILABLE:
        raise SystemExit("MKL's sgemm_ was not found in torch's library: the kernels use their loops only")
    torch.set_num_threads(1)
    _blas.local_blas_threads(1)
    rng = np.random.default_rng(0)
    fn = _blas.gemm_for(np.float32)
    rows = []
    for n, hidden, width in SHAPES:
        repeats = max(1, int(MACS_PER_TIMING / (n * hidden * width)))
        wt = rng.standard_normal((hidden, width)).astype(np.float32)  # rows per presynaptic unit
        w = np.ascontiguousarray(wt.T)  # the backward's operand
        out_f, out_b = np.zeros((n, width), np.float32), np.zeros((n, hidden), np.float32)
        delta = rng.standard_normal((n, width)).astype(np.float32)
        dense_f = median_ms(lambda: gemm(fn, np.ones((n, hidden), np.float32), wt, out_f, repeats))  # noqa: B023
        dense_b = median_ms(lambda: gemm(fn, delta, w, out_b, repeats))  # noqa: B023
        for activity in ACTIVITIES:
            mask = (rng.random((n, hidden)) < activity).astype(np.float32)
            sparse_f = median_ms(lambda: gather(mask, wt, out_f, repeats))  # noqa: B023
            sparse_b = median_ms(lambda: dots(delta, wt, out_b, mask, repeats))  # noqa: B023
            row = {"n": n, "H": hidden, "width": width, "activity": activity,
                   "gemm_gmacs": n * hidden * width * repeats / dense_f / 1e6,
                   "forward_loop_over_gemm": sparse_f / dense_f, "backward_loop_over_gemm": sparse_b / dense_b}
            rows.append(row)
            print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    print(f"(the kernels switch to the GEMM above {GEMM_MIN_ACTIVITY:.0%} activity; a ratio > 1 means the GEMM is faster)")
    write_results("gemm_breakeven", rows, [])


if __name__ == "__main__":
    main()
