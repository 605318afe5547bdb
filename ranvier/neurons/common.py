"""What LIF and ALIF share: the convention switches and the integrate-and-fire update."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.reset import apply_reset
from ..core.surrogate import Surrogate

__all__ = ["Convention", "LSNN_CONVENTION", "EPROP_CONVENTION", "integrate_and_fire"]


@dataclass(frozen=True)
class Convention:
    """The five places where LSNN-official and the e-prop code disagree (SCIENCE.md §9.1).

    Attributes:
        scale_input: multiply the input current by ``(1 − α)`` (LSNN) or not (e-prop).
        reset_by_adaptive: subtract the adaptive threshold ``A_t`` on reset (LSNN) or the base
            threshold ``v_th`` (e-prop).
        normalize_by_adaptive: the surrogate argument is ``(v − A)/A`` (LSNN) or ``(v − A)/v_th``
            (e-prop).
        spike_from_previous: ``z_t`` is computed from ``v_{t−1}`` (LSNN) or from ``v_t`` (e-prop).
        adapt_one_minus_rho: ``b_t = ρ·b_{t−1} + (1 − ρ)·z_{t−1}`` (LSNN) or ``+ z_{t−1}`` (e-prop).
        reset: ``"subtract"`` (both codes: ``v − z·R``) or ``"zero"`` (hard reset to 0 after a
            spike: ``v_t = α·v_{t−1}·(1 − z_{t−1}·dt) + c·I_t``, the reset NIR's LIF expresses,
            with ``v_reset = 0``; docs/nir.md).
    """

    scale_input: bool = True
    reset_by_adaptive: bool = True
    normalize_by_adaptive: bool = True
    spike_from_previous: bool = True
    adapt_one_minus_rho: bool = True
    reset: str = "subtract"  # issue 10: "zero" is the hard reset that NIR (and snnTorch's NIR import) use

    def __post_init__(self) -> None:
        if self.reset not in ("subtract", "zero"):
            raise ValueError(f"Convention.reset must be 'subtract' or 'zero', got {self.reset!r}")


LSNN_CONVENTION = Convention()
EPROP_CONVENTION = Convention(
    scale_input=False,
    reset_by_adaptive=False,
    normalize_by_adaptive=False,
    spike_from_previous=False,
    adapt_one_minus_rho=False,
)


def integrate_and_fire(
    current: Tensor,
    v: Tensor,
    z: Tensor,
    refractory: Tensor,
    threshold: Tensor,
    *,
    alpha: Tensor,
    base_threshold: Tensor,
    surrogate: Surrogate,
    convention: Convention,
    n_refractory: int,
    dt: float,
    detach_reset: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """One membrane update and spike, shared by LIF (``threshold = v_th``) and ALIF (``A_t``).

    ``v_t = α·v_{t−1} + c·I_t − z_{t−1}·R·dt`` with ``c = 1 − α`` or 1 and ``R = A_t`` or ``v_th``
    (with ``convention.reset == "zero"``: ``v_t = α·v_{t−1}·(1 − z_{t−1}·dt) + c·I_t``);
    ``z_t = H((v_s − A_t)/N)/dt`` with ``v_s = v_{t−1}`` or ``v_t`` and ``N = A_t`` or ``v_th``;
    ``z_t = 0`` while the refractory counter is positive (it is set to ``n_refractory`` by a spike).

    Returns ``(z_t, v_t, refractory_t)``.
    """
    gain = (1.0 - alpha) if convention.scale_input else 1.0
    if convention.reset == "zero":
        # The unit restarts from rest: the spike wipes the decayed potential, the new input still counts.
        v_new = apply_reset(alpha * v, z * dt, 0.0, mode="zero", detach=detach_reset) + gain * current
    else:
        v_new = alpha * v + gain * current
        reset_amount = (threshold if convention.reset_by_adaptive else base_threshold) * dt
        v_new = apply_reset(v_new, z, reset_amount, mode="subtract", detach=detach_reset)
    v_source = v if convention.spike_from_previous else v_new
    norm = threshold if convention.normalize_by_adaptive else base_threshold
    z_new = surrogate((v_source - threshold) / norm)
    if n_refractory > 0:
        # A spike within the last n_refractory steps silences the unit (and its gradient).
        is_refractory = refractory > 0
        z_new = torch.where(is_refractory, torch.zeros_like(z_new), z_new)
        refractory = torch.where(z_new > 0, torch.full_like(refractory, float(n_refractory)), (refractory - 1).clamp(min=0))
    return z_new / dt, v_new, refractory
