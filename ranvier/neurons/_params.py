"""Per-neuron constants: a scalar or a ``[hidden]`` vector becomes a ``[hidden]`` buffer."""
from __future__ import annotations

import torch
from torch import Tensor


def per_neuron(value: float | Tensor, hidden_size: int, name: str) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.get_default_dtype()).clone()
    if t.dim() == 0:
        return t.expand(hidden_size).clone()
    if tuple(t.shape) != (hidden_size,):
        raise ValueError(f"{name} must be a scalar or have shape ({hidden_size},), got {tuple(t.shape)}")
    return t
