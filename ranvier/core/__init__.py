"""Core building blocks shared by every model: the time loop, pseudo-derivatives, reset."""
from .reset import apply_reset as apply_reset
from .scan import detach_state as detach_state
from .scan import scan as scan
from .scan import stack_tree as stack_tree
from .surrogate import FastSigmoid as FastSigmoid
from .surrogate import PiecewiseLinear as PiecewiseLinear
from .surrogate import Surrogate as Surrogate
from .surrogate import spike as spike
