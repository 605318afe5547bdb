"""ranvier: activity-sparse and parameter-sparse recurrent networks in PyTorch."""
from .core import FastSigmoid as FastSigmoid
from .core import PiecewiseLinear as PiecewiseLinear
from .core import Surrogate as Surrogate
from .core import apply_reset as apply_reset
from .core import detach_state as detach_state
from .core import scan as scan
from .core import spike as spike
from .neurons import ALIF as ALIF
from .neurons import EGRU as EGRU
from .neurons import EPROP_CONVENTION as EPROP_CONVENTION
from .neurons import EGRUCell as EGRUCell
from .neurons import EGRUState as EGRUState
from .neurons import egru_step as egru_step
from .neurons import LIF as LIF
from .neurons import LSNN_CONVENTION as LSNN_CONVENTION
from .neurons import ALIFState as ALIFState
from .neurons import Convention as Convention
from .neurons import LeakyReadout as LeakyReadout
from .neurons import LIFState as LIFState
from .neurons import alif_step as alif_step
from .neurons import exp_filter as exp_filter
from .neurons import firing_rate_loss as firing_rate_loss
from .neurons import lif_step as lif_step
from .layers.delay import Delay as Delay  # issue 8
from .layers.delay import DelayedLinear as DelayedLinear
from .neurons.delayed_recurrent import DelayedALIF as DelayedALIF
from .neurons.delayed_recurrent import DelayedLIF as DelayedLIF
from .neurons.delayed_recurrent import DelayedState as DelayedState

__version__ = "0.1.0"
