"""Efficiency accounting: pure functions of module weights and recorded tensors.

NeuroBench 2.3.0 is the reference for the metrics it defines (footprint, connection sparsity,
activation sparsity, synaptic operations, membrane updates): ranvier reproduces its numbers
exactly (``tests/test_neurobench.py``) and extends them to recurrent, gated and masked layers,
backward sparsity, training cost and energy **estimates**. See ``docs/metrics.md``.
"""
from .activity import activation_sparsity as activation_sparsity
from .activity import activation_sparsity_by_layer as activation_sparsity_by_layer
from .activity import activation_sparsity_per_step as activation_sparsity_per_step
from .activity import alif_surrogate_input as alif_surrogate_input
from .activity import connection_sparsity as connection_sparsity
from .activity import connection_weights as connection_weights
from .activity import egru_backward_sparsity as egru_backward_sparsity
from .activity import footprint as footprint
from .activity import membrane_updates as membrane_updates
from .activity import parameter_count as parameter_count
from .activity import surrogate_backward_sparsity as surrogate_backward_sparsity
from .energy import PROFILES as PROFILES
from .energy import SPINNAKER2_EGRU_MEASUREMENTS as SPINNAKER2_EGRU_MEASUREMENTS
from .energy import EnergyEstimate as EnergyEstimate
from .energy import EnergyProfile as EnergyProfile
from .energy import compare_dense_event as compare_dense_event
from .energy import estimate_inference_energy as estimate_inference_energy
from .energy import estimate_training_energy as estimate_training_energy
from .energy import get_profile as get_profile
from .energy import spinnaker2_sanity_check as spinnaker2_sanity_check
from .synops import ElementwiseOps as ElementwiseOps
from .synops import SynOps as SynOps
from .synops import TrainingCost as TrainingCost
from .synops import egru_elementwise_ops as egru_elementwise_ops
from .synops import egru_synops as egru_synops
from .synops import is_spiking as is_spiking
from .synops import layer_synops as layer_synops
from .synops import linear_synops as linear_synops
from .synops import recurrent_synops as recurrent_synops
from .synops import training_cost as training_cost
