"""Event-driven runtime: run trained activity-sparse networks on CPU at the cost of their events.

``graph = freeze(model)`` turns a trained torch model (LIF/ALIF/EGRU layers, readouts, masks)
into a numpy-only :class:`Graph`; ``Session(graph)`` runs it one step at a time, reading only
the weight columns of the units that emitted an event. See docs/engine.md.
"""
from .freeze import freeze
from .graph import (Decoder, DenseInput, EGRULayer, Embedding, Graph, GraphError, Readout, SpikingLayer, Weights,
                    load_graph)
from .lm import generate, perplexity
from .run import RunResult, Session

__all__ = ["freeze", "Graph", "GraphError", "Weights", "DenseInput", "Embedding", "SpikingLayer", "EGRULayer",
           "Readout", "Decoder", "load_graph", "Session", "RunResult", "perplexity", "generate"]
