"""Weight masks: the one convention every layer, metric, kernel and exporter follows.

A mask for the parameter ``<stem>weight<suffix>`` of a module is the buffer
``<stem>mask<suffix>`` on the same module, with the same shape and dtype, holding 0 or 1:
``weight`` → ``mask`` (readouts, :class:`~ranvier.layers.MaskedLinear`),
``recurrent_weight`` → ``recurrent_mask``, ``input_weight`` → ``input_mask`` (LIF/ALIF),
``weight_hh_l0`` → ``mask_hh_l0`` (EGRU). A layer computes with :func:`effective_weight`,
``W ⊙ M``, so a masked entry neither acts forward nor receives a gradient; the code that sets
a mask also zeroes the stored weight, so ``W`` itself is sparse too (what gets exported).
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["mask_name", "get_mask", "effective_weight", "set_mask"]


def mask_name(param_name: str) -> str:
    """``"weight_hh_l0"`` → ``"mask_hh_l0"``; the name must contain ``weight``."""
    if "weight" not in param_name:
        raise ValueError(f"only weights can be masked; {param_name!r} has no 'weight' in its name")
    return param_name.replace("weight", "mask", 1)


def get_mask(module: nn.Module, param_name: str) -> Tensor | None:
    """The mask buffer of ``module.<param_name>``, or ``None`` when it is dense."""
    mask = getattr(module, mask_name(param_name), None)
    return mask if isinstance(mask, Tensor) else None


def effective_weight(module: nn.Module, param_name: str) -> Tensor:
    """``W ⊙ M`` when ``module`` has a mask for ``param_name``, else ``W`` itself."""
    weight = getattr(module, param_name)
    mask = get_mask(module, param_name)
    return weight if mask is None else weight * mask


def set_mask(module: nn.Module, param_name: str, mask: Tensor) -> None:
    """Install (or replace) the mask of ``module.<param_name>`` and zero the masked weights."""
    weight = getattr(module, param_name)
    if not isinstance(weight, Tensor):
        raise TypeError(f"{type(module).__name__}.{param_name} is not a tensor")
    if tuple(mask.shape) != tuple(weight.shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match {param_name} {tuple(weight.shape)}")
    mask = (mask != 0).to(dtype=weight.dtype, device=weight.device)
    name = mask_name(param_name)
    if name in module._buffers:
        module._buffers[name] = mask
    else:
        module.register_buffer(name, mask)
    weight.data.mul_(mask)
