"""The training loop's hook: wrap the optimiser in DEEP R or gradual pruning as the config asks."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .masks import maskable_weights
from .prune import GradualPruning
from .rewiring import DeepR

__all__ = ["sparsify_optimizer"]


def sparsify_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, cfg: Any) -> Any:
    """``optimizer`` wrapped in :class:`DeepR` (``cfg.rewiring > 0``) or :class:`GradualPruning`
    (``cfg.prune > 0``), acting on the model's recurrent-layer weights (LIF/ALIF input and recurrent
    weights, EGRU kernels; readouts, embeddings and decoders stay dense, as in LSNN and the EGRU
    papers); ``optimizer`` itself when both are 0."""
    if cfg.rewiring > 0 and cfg.prune > 0:
        raise ValueError("choose DEEP R (--rewiring) or pruning (--prune), not both")
    if cfg.rewiring <= 0 and cfg.prune <= 0:
        return optimizer
    weights = maskable_weights(model)
    if not weights:
        raise ValueError(f"--rewiring/--prune need a model whose layers honour weight masks (lif, alif, lsnn, egru); "
                         f"{cfg.model} is a torch RNN that ignores them")
    if cfg.rewiring > 0:
        if cfg.rewiring > 1:
            raise ValueError(f"--rewiring is the fraction of connections kept, in (0, 1]; got {cfg.rewiring}")
        return DeepR(optimizer, weights, cfg.rewiring, l1=cfg.rewiring_l1, temperature=cfg.rewiring_temperature,
                     budget=cfg.rewiring_budget)
    return GradualPruning(optimizer, weights, cfg.prune, start=cfg.prune_start, end=cfg.prune_end,
                          every=cfg.prune_every, scope=cfg.prune_scope)
