"""The training loop's hook: wrap the optimiser in DEEP R or gradual pruning as the config asks."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .masks import maskable_weights
from .prune import GradualPruning
from .rewiring import DeepR, SoftDeepR, dale_signs

__all__ = ["sparsify_optimizer", "recurrent_dale_signs"]


def _is_recurrent(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return leaf == "recurrent_weight" or leaf.startswith("weight_hh_l")


def recurrent_dale_signs(weights: dict[str, Any], excitatory: float) -> list[Any]:
    """Dale's law for ``--dale``: every recurrent weight (``recurrent_weight``, ``weight_hh_l*``)
    gets one sign per presynaptic unit (its columns; for an EGRU the same sign in all three gates),
    ``+1`` for a random ``excitatory`` fraction. Input weights keep the signs of their initial
    values (``None`` entries)."""
    if not 0.0 < excitatory <= 1.0:
        raise ValueError(f"--dale is the fraction of excitatory units, in (0, 1]; got {excitatory}")
    return [dale_signs(getattr(module, param).shape[1], excitatory) if _is_recurrent(name) else None
            for name, (module, param) in weights.items()]


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
        signs = recurrent_dale_signs(weights, cfg.dale) if cfg.dale > 0 else None
        if cfg.rewiring_mode == "soft":
            theta_min = cfg.rewiring_theta_min if cfg.rewiring_theta_min < 0 else -3.0 * cfg.rewiring_l1
            if theta_min >= 0:
                raise ValueError("soft DEEP R needs --rewiring-theta-min < 0 (or --rewiring-l1 > 0 for its default)")
            return SoftDeepR(optimizer, weights, l1=cfg.rewiring_l1, temperature=cfg.rewiring_temperature,
                             theta_min=theta_min, connectivity=cfg.rewiring, signs=signs)
        if cfg.rewiring_mode != "hard":
            raise ValueError(f"--rewiring-mode must be hard or soft, got {cfg.rewiring_mode!r}")
        return DeepR(optimizer, weights, cfg.rewiring, l1=cfg.rewiring_l1, temperature=cfg.rewiring_temperature,
                     budget=cfg.rewiring_budget, signs=signs)
    return GradualPruning(optimizer, weights, cfg.prune, start=cfg.prune_start, end=cfg.prune_end,
                          every=cfg.prune_every, scope=cfg.prune_scope)
