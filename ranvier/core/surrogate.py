"""Pseudo-derivatives for the Heaviside spike function.

The forward pass is always ``H(x) = 1[x > 0]`` (so ``H(0) = 0``, as in the LSNN and EvNN code).
The backward pass replaces ``dH/dx`` by a surrogate. Each surrogate is a frozen dataclass that
keeps its backward as a pure function (``derivative``), so tests and fused kernels can call the
very same formula, and its ``primitive`` -- a smooth function whose autograd derivative equals
``derivative`` -- so the backward can be checked against autograd.

Surrogates are chosen by object, never by string: ``ALIF(..., surrogate=FastSigmoid(slope=25))``.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Surrogate", "PiecewiseLinear", "FastSigmoid", "spike"]


@dataclass(frozen=True)
class Surrogate(abc.ABC):
    """Base class: subclasses define ``derivative(x)`` and ``primitive(x)``."""

    @abc.abstractmethod
    def derivative(self, x: Tensor) -> Tensor:
        """The pseudo-derivative ``dH/dx`` used in the backward pass."""

    @abc.abstractmethod
    def primitive(self, x: Tensor) -> Tensor:
        """A function whose derivative is ``derivative`` (for testing against autograd)."""

    def __call__(self, x: Tensor) -> Tensor:
        return spike(x, self)


@dataclass(frozen=True)
class PiecewiseLinear(Surrogate):
    """LSNN / EGRU triangle: ``dH/dx ≈ gamma · max(0, 1 − |x| / width)``.

    ``gamma`` is the LSNN "dampening factor" (0.3 in LSNN-official; EvNN uses 0.7).
    Support is ``|x| < width``; EvNN's ``pseudo_derivative_support`` ε is ``1 / width``.
    """

    gamma: float = 0.3
    width: float = 1.0

    def derivative(self, x: Tensor) -> Tensor:
        return self.gamma * torch.clamp(1.0 - x.abs() / self.width, min=0.0)

    def primitive(self, x: Tensor) -> Tensor:
        # Integral of the triangle, clipped outside the support: a smooth-enough ramp from 0 to
        # gamma·width whose derivative is exactly `derivative` (almost everywhere).
        u = torch.clamp(x / self.width, -1.0, 1.0)
        return self.gamma * self.width * (u - u * u.abs() / 2 + 0.5)


@dataclass(frozen=True)
class FastSigmoid(Surrogate):
    """SuperSpike (Zenke & Ganguli 2018) fast sigmoid: ``dH/dx ≈ 1 / (1 + slope·|x|)²``."""

    slope: float = 10.0

    def derivative(self, x: Tensor) -> Tensor:
        return 1.0 / (1.0 + self.slope * x.abs()) ** 2

    def primitive(self, x: Tensor) -> Tensor:
        return x / (1.0 + self.slope * x.abs())


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, surrogate: Surrogate) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.derivative(x), None


def spike(x: Tensor, surrogate: Surrogate) -> Tensor:
    """Heaviside step ``1[x > 0]`` whose gradient is ``surrogate.derivative(x)``."""
    return _Spike.apply(x, surrogate)
