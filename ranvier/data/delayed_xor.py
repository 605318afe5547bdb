"""Delayed XOR: two bits given as spike pulses a long gap apart; answer their XOR after the second.

A temporal task that needs memory over a gap longer than the membrane time constant, made to
show what learnable delays add (issue 8). Input channels (one-hot per bit)::

    channel a        pulse at steps [0, width)                   first bit a ∈ {0, 1}
    channel 2 + b    pulse at steps [width + gap, 2·width + gap)  second bit b ∈ {0, 1}
    then `recall` silent steps in which the answer a XOR b is read out

Background noise spikes (probability ``noise`` per channel and step) make every sample different.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["delayed_xor"]


def delayed_xor(n: int, gap: int, *, width: int = 2, recall: int = 5, noise: float = 0.0,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``n`` samples of delayed XOR: ``(x [n, 2·width + gap + recall, 4] float32, y [n] int64)``.

    Example::

        >>> x, y = delayed_xor(4, gap=3, width=1, recall=1, generator=torch.Generator().manual_seed(0))
        >>> x.shape, bool(((x[:, 0, :2].argmax(1) ^ x[:, 4, 2:].argmax(1)) == y).all())
        (torch.Size([4, 6, 4]), True)
    """
    if n <= 0 or gap < 0 or width <= 0 or recall <= 0 or not 0.0 <= noise < 1.0:
        raise ValueError(f"need n > 0, gap >= 0, width > 0, recall > 0, 0 <= noise < 1; got {n}, {gap}, {width}, {recall}, {noise}")
    bits = torch.randint(0, 2, (n, 2), generator=generator)
    steps = 2 * width + gap + recall
    x = (torch.rand(n, steps, 4, generator=generator) < noise).float()
    rows = torch.arange(n)
    x[rows[:, None], torch.arange(width)[None, :], bits[:, :1]] = 1.0
    x[rows[:, None], width + gap + torch.arange(width)[None, :], 2 + bits[:, 1:]] = 1.0
    return x, bits[:, 0] ^ bits[:, 1]
