"""Fused whole-sequence CPU kernels (numba) with hand-written sparse backward passes.

The modules use them by default on CPU (``backend="auto"``); ``backend="reference"`` selects the
pure-torch step loop they are tested against, ``backend="kernel"`` insists on the kernel and
raises :class:`KernelUnsupportedError` naming what it does not support. See ``docs/kernels.md``.

Submodules are imported lazily by the layers (numba's import and cache loading cost about a
second, paid on the first forward that uses a kernel, not on ``import ranvier``).
"""
from __future__ import annotations

BACKENDS = ("auto", "kernel", "reference")


class KernelUnsupportedError(RuntimeError):
    """``backend="kernel"`` was asked for a configuration the fused kernel does not implement."""


def unsupported_input(x, surrogate) -> str | None:
    """The checks every kernel shares: CPU, float32/float64, a pseudo-derivative it knows."""
    import torch

    from ..core.surrogate import FastSigmoid, PiecewiseLinear

    if x.device.type != "cpu":
        return f"device {x.device} (the kernel is CPU-only)"
    if x.dtype not in (torch.float32, torch.float64):
        return f"dtype {x.dtype} (the kernel supports float32 and float64)"
    if type(surrogate) not in (PiecewiseLinear, FastSigmoid):
        return f"surrogate {type(surrogate).__name__} (the kernel knows PiecewiseLinear and FastSigmoid)"
    return None


def check_backend(backend: str) -> str:
    """Validate a ``backend=`` argument."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    return backend


def wants_kernel(backend: str, unsupported: str | None) -> bool:
    """The dispatch rule of every layer: ``unsupported`` is why the kernel cannot run the call
    (``None``: it can). "reference" never uses it, "auto" uses it when it can, "kernel" raises."""
    if backend == "reference":
        return False
    if unsupported is None:
        return True
    if backend == "kernel":
        raise KernelUnsupportedError(f"backend='kernel' does not support {unsupported}; use backend='auto' or 'reference'")
    return False


__all__ = ["BACKENDS", "KernelUnsupportedError", "check_backend", "unsupported_input", "wants_kernel"]
