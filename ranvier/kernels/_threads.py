"""Run a nogil numba loop over disjoint batch slices in a few threads."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

from ._blas import local_blas_threads

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_PID = 0


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
    """Call ``fn(k, start, end)`` for each of ``chunks`` batch slices; the first runs on the
    calling thread, the others in the pool (the numba loops release the GIL). With more than one
    slice, BLAS calls inside ``fn`` run single-threaded."""
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

    futures = [_pool(chunks - 1).submit(one_blas_thread, k) for k in range(1, chunks)]
    one_blas_thread(0)
    for f in futures:
        f.result()
