"""Neurons: one functional step per neuron at the top of each file, a thin module below it."""
from .alif import ALIF as ALIF
from .alif import ALIFState as ALIFState
from .alif import alif_step as alif_step
from .egru import EGRU as EGRU
from .egru import EGRUCell as EGRUCell
from .egru import EGRUState as EGRUState
from .egru import egru_step as egru_step
from .common import EPROP_CONVENTION as EPROP_CONVENTION
from .common import LSNN_CONVENTION as LSNN_CONVENTION
from .common import Convention as Convention
from .lif import LIF as LIF
from .lif import LIFState as LIFState
from .lif import lif_step as lif_step
from .readout import LeakyReadout as LeakyReadout
from .readout import exp_filter as exp_filter
from .readout import firing_rate_loss as firing_rate_loss
