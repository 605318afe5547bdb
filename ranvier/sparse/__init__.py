"""Parameter sparsity: weight masks, DEEP R / soft DEEP R rewiring and magnitude pruning."""
from .masks import effective_weight, get_mask, mask_name, maskable_weights, register_missing_masks, set_mask
from .masks import weight_density
from .prune import GradualPruning, cubic_sparsity, magnitude_prune, weight_sparsity
from .rewiring import DeepR, OptimizerWrapper, SoftDeepR, dale_signs
from .training import sparsify_optimizer

__all__ = ["effective_weight", "get_mask", "mask_name", "maskable_weights", "register_missing_masks", "set_mask",
           "weight_density", "GradualPruning", "cubic_sparsity", "magnitude_prune", "weight_sparsity", "DeepR",
           "OptimizerWrapper", "SoftDeepR", "dale_signs", "sparsify_optimizer"]
