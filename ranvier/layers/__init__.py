"""Layers that wire neurons together."""
from .masked import MaskedLinear as MaskedLinear
from .recurrent import SpikingRecurrent as SpikingRecurrent
from .recurrent import check_input as check_input
from .delay import Delay as Delay
from .delay import DelayedLinear as DelayedLinear
