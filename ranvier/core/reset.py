"""The one membrane reset."""
from __future__ import annotations

from torch import Tensor

__all__ = ["apply_reset"]


def apply_reset(v: Tensor, z: Tensor, amount: Tensor | float, *, mode: str = "subtract", detach: bool = False) -> Tensor:
    """Reset membrane ``v`` where spike ``z`` is set.

    ``mode="subtract"``: ``v − z·amount`` (LSNN, e-prop: amount is the threshold).
    ``mode="zero"``:     ``v·(1 − z)``   (hard reset to 0; ``amount`` is ignored).
    ``detach=True`` stops the gradient through the reset path (a common BPTT stabiliser).
    """
    if detach:
        z = z.detach()
    if mode == "subtract":
        return v - z * amount
    if mode == "zero":
        return v * (1.0 - z)
    raise ValueError(f"unknown reset mode {mode!r}; expected 'subtract' or 'zero'")
