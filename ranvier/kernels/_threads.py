"""Run a nogil numba loop over disjoint batch slices in a few threads.

The slices run on torch's own OpenMP threads when torch's OpenMP runtime can be found (libgomp,
which torch's Linux wheels link): ``GOMP_parallel`` starts a parallel region whose threads each
call back into Python and run their slices. Why not a thread pool of our own: after every torch
op, torch's OpenMP worker keeps spinning for a while (libgomp's default wait policy), so on a
2-core machine a pool thread of ours waits one to three milliseconds for a core before it starts
its slice, while the spinning worker would take the work at once (``docs/kernels.md``). Without
libgomp (other platforms and builds), and in a forked child, a ``ThreadPoolExecutor`` runs the
other slices.
"""
from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

from ._blas import local_blas_threads

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_PID = 0

# void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags)
_REGION_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _load_gomp():
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        # A handle to torch's library (already loaded); symbol lookup through it also searches its
        # dependencies, so this finds the OpenMP runtime torch itself runs on, not another copy.
        lib = ctypes.CDLL(path)
        parallel, thread_num, num_threads = lib.GOMP_parallel, lib.omp_get_thread_num, lib.omp_get_num_threads
    except (OSError, AttributeError):
        return None
    parallel.restype, parallel.argtypes = None, [_REGION_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    thread_num.restype = num_threads.restype = ctypes.c_int
    thread_num.argtypes = num_threads.argtypes = []
    return parallel, thread_num, num_threads


_GOMP = _load_gomp()
# libgomp is not fork-safe: in a forked child (a DataLoader worker, a multiprocessing pool) a
# parallel region can wait forever for the parent's threads, so a child uses the pool instead.
_GOMP_PID = os.getpid()
# Whether the slices run on torch's OpenMP threads (tests switch it off to cover the pool).
USE_OPENMP = _GOMP is not None


def _pool(n: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE, _POOL_PID
    if _POOL_PID != os.getpid():  # a forked child (e.g. a DataLoader worker) has no pool threads
        _POOL, _POOL_SIZE, _POOL_PID = None, 0, os.getpid()
    if _POOL is None or _POOL_SIZE < n:
        if _POOL is not None:
            _POOL.shutdown(wait=True)
        _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="ranvier-kernel")
        _POOL_SIZE = n
    return _POOL


def num_chunks(batch: int) -> int:
    """As many slices as torch's intra-op threads (``torch.set_num_threads``), at most one per
    sample and one per CPU."""
    return max(1, min(batch, torch.get_num_threads(), os.cpu_count() or 1))


def chunk_bounds(batch: int, chunks: int) -> list[tuple[int, int]]:
    edges = [batch * k // chunks for k in range(chunks + 1)]
    return [(edges[k], edges[k + 1]) for k in range(chunks)]


def run_chunks(fn: Callable[[int, int, int], None], batch: int, chunks: int) -> None:
    """Call ``fn(k, start, end)`` for each of ``chunks`` batch slices, in parallel (the numba
    loops release the GIL). With more than one slice, BLAS calls inside ``fn`` run
    single-threaded."""
    bounds = chunk_bounds(batch, chunks)
    if chunks == 1:
        fn(0, *bounds[0])
        return

    def one_blas_thread(k: int) -> None:
        # each slice has its own thread, so the GEMMs inside the loops must not start more
        previous = local_blas_threads(1)
        try:
            fn(k, *bounds[k])
        finally:
            local_blas_threads(previous)

    if USE_OPENMP and os.getpid() == _GOMP_PID:
        _run_in_openmp_region(one_blas_thread, chunks)
        return
    futures = [_pool(chunks - 1).submit(one_blas_thread, k) for k in range(1, chunks)]
    one_blas_thread(0)
    for f in futures:
        f.result()


def _run_in_openmp_region(one_chunk: Callable[[int], None], chunks: int) -> None:
    parallel, thread_num, num_threads = _GOMP
    errors: list[BaseException] = []

    def body(_data) -> None:
        # (ctypes takes the GIL for this callback; the numba loop releases it while it runs)
        try:
            # the runtime may start fewer threads than asked for: each takes every n-th slice
            for k in range(thread_num(), chunks, num_threads()):
                one_chunk(k)
        except BaseException as e:  # noqa: BLE001 - re-raised on the calling thread below
            errors.append(e)

    parallel(_REGION_BODY(body), None, chunks, 0)
    if errors:
        raise errors[0]
