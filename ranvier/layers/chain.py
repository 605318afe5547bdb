"""A feed-forward stack of time-major layers (what :func:`ranvier.export.from_nir` returns)."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["Chain"]


class Chain(nn.Module):
    """Apply layers in order to a time-major sequence ``x [T, B, I] → y [T, B, O]``.

    Recurrent layers (LIF, ALIF, …) return ``(output, final_state)``; a chain hands the output to
    the next layer and keeps the state. Stateless layers (``nn.Linear``, ``LeakyReadout``) return
    a tensor and get ``None`` as their state. ``forward`` returns ``(y, states)`` with one entry
    per layer in ``states``, and takes such a tuple to continue a sequence.

    Example::

        >>> import torch
        >>> from ranvier import LIF, LeakyReadout
        >>> net = Chain(LIF(3, 8), LeakyReadout(8, 2))
        >>> y, states = net(torch.randn(5, 4, 3))
        >>> y.shape, len(states)
        (torch.Size([5, 4, 2]), 2)
    """

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        if not layers:
            raise ValueError("a Chain needs at least one layer")
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, states: tuple[Any, ...] | None = None) -> tuple[Tensor, tuple[Any, ...]]:
        if states is not None and len(states) != len(self.layers):
            raise ValueError(f"states has {len(states)} entries but the chain has {len(self.layers)} layers")
        finals = []
        for index, layer in enumerate(self.layers):
            state = None if states is None else states[index]
            if state is None:
                out = layer(x)
            else:
                out = layer(x, state)
            if isinstance(out, tuple):
                x, state = out
            else:
                x, state = out, None
            finals.append(state)
        return x, tuple(finals)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> nn.Module:
        return self.layers[index]
