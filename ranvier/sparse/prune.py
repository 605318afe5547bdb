"""Magnitude pruning: one-shot, or gradual with the cubic schedule of Zhu & Gupta (2017).

Pruning installs masks with :func:`~ranvier.sparse.set_mask`, so the state_dict keys stay those of
the dense model plus one mask buffer per pruned weight, the pruned weights are zero in the stored
tensor too, and every metric counts them as zero. Pruned connections never come back.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .masks import get_mask, set_mask
from .rewiring import OptimizerWrapper, Weights, _resolve

__all__ = ["magnitude_prune", "cubic_sparsity", "GradualPruning", "weight_sparsity"]


def weight_sparsity(weights: Weights) -> float:
    """Fraction of masked (or zero) entries over all the given weights, ``#{w ⊙ m = 0} / #{w}``."""
    zeros = total = 0
    for _, module, name in _resolve(weights):
        weight, mask = getattr(module, name), get_mask(module, name)
        effective = weight if mask is None else weight * mask
        zeros += int((effective == 0).sum())
        total += weight.numel()
    return zeros / total


def magnitude_prune(weights: Weights, sparsity: float, *, scope: str = "layer") -> None:
    """Mask the smallest-magnitude weights so that a fraction ``sparsity`` of entries is masked.

    ``scope="layer"``: every weight loses the same fraction (Zhu & Gupta); ``"global"``: one
    magnitude threshold over all the given weights. Entries that are already masked count toward
    the sparsity and stay masked; if a weight is already sparser than asked, nothing changes.
    Ties at the threshold are broken by position, so the count is exact.

    Example::

        >>> from ranvier.layers import MaskedLinear
        >>> layer = MaskedLinear(10, 10)
        >>> magnitude_prune({"w": (layer, "weight")}, 0.8)
        >>> int(layer.mask.sum()), int(torch.count_nonzero(layer.weight))
        (20, 20)
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    targets = _resolve(weights)
    scores = []
    for _, module, name in targets:
        weight, mask = getattr(module, name), get_mask(module, name)
        score = weight.detach().abs().flatten()
        if mask is not None:
            score = score.masked_fill(mask.flatten() == 0, -1.0)  # already pruned: ranked last
        scores.append(score)
    with torch.no_grad():
        if scope == "layer":
            for (_, module, name), score in zip(targets, scores):
                _keep_top(module, name, score, round((1.0 - sparsity) * score.numel()))
        else:
            flat = torch.cat(scores)
            keep = torch.zeros_like(flat, dtype=torch.bool)
            keep[_top(flat, round((1.0 - sparsity) * flat.numel()))] = True
            start = 0
            for (_, module, name), score in zip(targets, scores):
                part = keep[start:start + score.numel()]
                start += score.numel()
                _install(module, name, part)


def _top(score: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest scores among the unmasked ones (score ≥ 0)."""
    k = min(k, int((score >= 0).sum()))
    return torch.topk(score, k, sorted=False).indices if k > 0 else score.new_zeros(0, dtype=torch.long)


def _keep_top(module: Any, name: str, score: Tensor, k: int) -> None:
    keep = torch.zeros_like(score, dtype=torch.bool)
    keep[_top(score, k)] = True
    _install(module, name, keep)


def _install(module: Any, name: str, keep: Tensor) -> None:
    weight = getattr(module, name)
    set_mask(module, name, keep.view_as(weight))


def cubic_sparsity(step: int, final: float, *, start: int, end: int, initial: float = 0.0) -> float:
    """Zhu & Gupta's schedule ``s_t = s_f + (s_i − s_f)·(1 − (t − t_0)/(t_end − t_0))³``.

    ``initial`` before ``start``, ``final`` from ``end`` on; ``end <= start`` is one-shot pruning
    at ``start``. Sparsity rises fast at first, while there are many redundant weights, and
    slowly at the end.

    Example::

        >>> [round(cubic_sparsity(t, 0.8, start=0, end=100), 3) for t in (0, 50, 100, 200)]
        [0.0, 0.7, 0.8, 0.8]
    """
    if step < start:
        return initial
    if end <= start or step >= end:
        return final
    return final + (initial - final) * (1.0 - (step - start) / (end - start)) ** 3


class GradualPruning(OptimizerWrapper):
    """Magnitude pruning on the cubic schedule, as a wrapper around any torch optimiser.

    After ``t`` optimiser steps (``t = start``, every ``every`` steps after it, and ``t = end``),
    the weights are pruned to :func:`cubic_sparsity` ``(t)``; with ``end <= start`` this is
    one-shot pruning at ``start`` (``start = 0``: at construction, before training). After
    every step the masked entries are zeroed again, so an optimiser's momentum can never revive
    them. The step count is saved in the optimiser's state dict (checkpoints resume it).

    Args:
        optimizer: the wrapped optimiser.
        weights: the weights to prune (see :data:`~ranvier.sparse.rewiring.Weights`).
        sparsity: final fraction of masked entries.
        start, end, every: the schedule, in optimiser steps.
        scope: ``"layer"`` or ``"global"`` (see :func:`magnitude_prune`).

    Example::

        >>> from ranvier.layers import MaskedLinear
        >>> layer = MaskedLinear(10, 10)
        >>> opt = GradualPruning(torch.optim.SGD(layer.parameters(), lr=0.1), {"w": (layer, "weight")},
        ...                      0.9, start=0, end=4, every=2)
        >>> for _ in range(4):
        ...     layer(torch.randn(3, 10)).sum().backward(); opt.step(); opt.zero_grad()
        >>> int(layer.mask.sum())
        10
    """

    _extra_prefix = "prune_"

    def __init__(self, optimizer: torch.optim.Optimizer, weights: Weights, sparsity: float, *, start: int = 0,
                 end: int = 0, every: int = 100, scope: str = "layer") -> None:
        super().__init__(optimizer, weights)
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        if start < 0 or every < 1:
            raise ValueError(f"need start >= 0 and every >= 1, got start={start}, every={every}")
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
        self.sparsity, self.start, self.end, self.every, self.scope = sparsity, start, end, every, scope
        self.steps = 0
        self._prune_if_due()

    def due(self, step: int) -> bool:
        """Whether the weights are pruned after ``step`` optimiser steps."""
        if step == self.start:
            return True
        return self.start < step <= self.end and ((step - self.start) % self.every == 0 or step == self.end)

    def _prune_if_due(self) -> None:
        if self.due(self.steps):
            target = cubic_sparsity(self.steps, self.sparsity, start=self.start, end=self.end)
            magnitude_prune({n: (m, p) for n, m, p in self.targets}, target, scope=self.scope)

    def _after_step(self) -> None:
        for _, module, name in self.targets:
            mask = get_mask(module, name)
            if mask is not None:
                getattr(module, name).mul_(mask)
        self.steps += 1
        self._prune_if_due()

    def _extra_state(self) -> list[dict[str, Any]]:
        return [{"prune_steps": self.steps} for _ in self.targets]

    def _load_extra_state(self, extras: list[dict[str, Any]]) -> None:
        self.steps = int(extras[0]["prune_steps"])
