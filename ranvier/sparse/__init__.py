"""Parameter sparsity: weight masks (and, built on them, rewiring and pruning)."""
from .masks import effective_weight, get_mask, mask_name, set_mask

__all__ = ["effective_weight", "get_mask", "mask_name", "set_mask"]
