"""Learning rules besides BPTT: online e-prop (SCIENCE.md §7) and exact sparse RTRL (§5)."""
from .eprop import EProp as EProp
from .eprop import EPropState as EPropState
from .eprop import gradient_as_loss as gradient_as_loss
from .rtrl import ALIFRTRL as ALIFRTRL
from .rtrl import EGRURTRL as EGRURTRL
from .rtrl import RTRLStats as RTRLStats
