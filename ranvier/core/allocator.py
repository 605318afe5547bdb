"""Keep freed memory in the process, so that big per-step tensors do not page-fault every step.

A training step on a long sequence allocates and frees tens of MB per tensor (sequential MNIST:
each ``[784, 64, 128]`` float32 buffer is 26 MB). glibc hands blocks that large to the kernel
with ``munmap`` (or trims them from the top of the heap) as soon as they are freed, so the next
step maps them again and page-faults on every 4 KB page it writes. On the CI machine that was
10-33 % of a fused LIF/ALIF/EGRU training step at sequential-MNIST size (docs/kernels.md, the
table under "Benchmarks"). :func:`keep_freed_memory` tells glibc to take every block from the heap (no
``mmap``) and to (almost) never shrink the heap, so such blocks are reused. The peak resident
memory stays about the live set; what changes is that memory freed at the end of a step is not
returned to the system.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# (an int: 2 GiB − 1 of free space at the top of the heap before glibc gives it back)
_TRIM_THRESHOLD_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Ask glibc to serve every block from the heap and (almost) never shrink it; returns whether
    it agreed (``False`` off Linux or without glibc, where nothing changes). Threads other than
    the main one still get blocks larger than their 64 MiB arenas by ``mmap``, glibc's fallback."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.restype, mallopt.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_MAX))
