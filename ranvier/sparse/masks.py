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

import torch
from torch import Tensor, nn

__all__ = ["mask_name", "get_mask", "effective_weight", "set_mask", "weight_density", "register_missing_masks",
           "maskable_weights"]


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


def weight_density(module: nn.Module, param_name: str) -> float:
    """Fraction of unmasked entries of ``module.<param_name>`` (1.0 when it has no mask)."""
    mask = get_mask(module, param_name)
    return 1.0 if mask is None else float((mask != 0).float().mean())


def register_missing_masks(model: nn.Module, state: dict[str, Tensor]) -> list[str]:
    """Create the mask buffers that ``state`` holds but ``model`` lacks, before loading ``state``.

    A mask installed after construction (by :func:`set_mask`, pruning or rewiring) is a buffer
    a freshly built model does not have, so ``load_state_dict`` would reject it. For every key
    ``<module>.<stem>mask<suffix>`` of ``state`` that ``model`` lacks and whose module has the
    weight ``<stem>weight<suffix>``, an all-ones mask is registered (the load then fills it).
    Returns the keys it created.
    """
    existing = set(model.state_dict().keys())
    created = []
    for key in state:
        if key in existing:
            continue
        module_path, _, attr = key.rpartition(".")
        if "mask" not in attr:
            continue
        try:
            module = model.get_submodule(module_path) if module_path else model
        except AttributeError:
            continue  # load_state_dict will report the unexpected key
        weight_name = attr.replace("mask", "weight", 1)
        weight = getattr(module, weight_name, None)
        if isinstance(weight, Tensor) and mask_name(weight_name) == attr:
            set_mask(module, weight_name, torch.ones_like(weight))
            created.append(key)
    return created


def maskable_weights(model: nn.Module, *, readout: bool = False) -> dict[str, tuple[nn.Module, str]]:
    """The weights of ``model`` whose layers compute with :func:`effective_weight`, by qualified name.

    ``{"core.input_weight": (module, "input_weight"), ...}`` for LIF/ALIF (input and recurrent
    weights), EGRU / EGRUCell kernels and :class:`~ranvier.layers.MaskedLinear`; the readouts'
    ``linear.weight`` too when ``readout=True``. Layers that ignore masks (torch ``nn.GRU``,
    ``nn.LSTM``, a plain ``nn.Linear``, embeddings) are not listed: masking them would not hold.
    """
    from ..layers.masked import MaskedLinear
    from ..layers.recurrent import SpikingRecurrent
    from ..neurons.egru import EGRU, EGRUCell
    from ..neurons.readout import LeakyReadout

    found: dict[str, tuple[nn.Module, str]] = {}
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(module, SpikingRecurrent):
            names = ["input_weight"] + (["recurrent_weight"] if module.recurrent_weight is not None else [])
        elif isinstance(module, EGRU):
            names = [f"weight_{kind}_l{k}" for k in range(module.num_layers) for kind in ("ih", "hh")]
        elif isinstance(module, EGRUCell):
            names = ["weight_ih", "weight_hh"]
        elif isinstance(module, MaskedLinear):
            names = ["weight"]
        elif isinstance(module, LeakyReadout) and readout:
            found[f"{prefix}linear.weight"] = (module.linear, "weight")
            continue
        else:
            continue
        for name in names:
            found[prefix + name] = (module, name)
    return found
