"""``MaskedLinear``: a linear map whose weight is multiplied by a 0/1 mask buffer."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..sparse.masks import effective_weight, set_mask

__all__ = ["MaskedLinear"]


class MaskedLinear(nn.Linear):
    """``y = x (W ⊙ M)ᵀ + b``: :class:`torch.nn.Linear` with a connectivity mask.

    The mask is the buffer ``mask`` (same shape as ``weight``, 0 or 1), present from construction
    (all ones unless ``mask`` is given), so the state_dict keys are always ``weight``, ``bias``
    (when ``bias=True``) and ``mask``, whether the layer is ever pruned or rewired or not. Masked
    weights act nowhere and receive no gradient; :func:`~ranvier.sparse.set_mask` (which
    pruning and rewiring use) replaces the mask and zeroes the masked weights.

    Args:
        in_features, out_features, bias: as for :class:`torch.nn.Linear`.
        mask: optional initial mask ``[out_features, in_features]`` (non-zero = connected).

    Example::

        >>> layer = MaskedLinear(4, 2, mask=torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]]))
        >>> int(torch.count_nonzero(layer.weight))
        3
        >>> layer(torch.randn(5, 4)).shape
        torch.Size([5, 2])
        >>> sorted(layer.state_dict())
        ['bias', 'mask', 'weight']
    """

    mask: Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, mask: Tensor | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.register_buffer("mask", torch.ones_like(self.weight))
        if mask is not None:
            set_mask(self, "weight", mask)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, effective_weight(self, "weight"), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, density={float(self.mask.mean()):.3g}"
