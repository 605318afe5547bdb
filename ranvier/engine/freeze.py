"""``freeze(model)``: a trained torch model → a numpy :class:`~ranvier.engine.Graph`.

Every weight is taken as the layer computes with it (``effective_weight``: W ⊙ mask), every
per-unit constant as the torch step derives it (``α = exp(−dt/τ)`` etc., computed by torch in the
graph's dtype), so the engine repeats the same arithmetic. Training-only parts (dropout,
DropConnect, zoneout masks, surrogate gradients) have no inference behaviour and are dropped;
eval-time zoneout is kept as its expectation.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from ..layers.recurrent import SpikingRecurrent
from ..models.classifier import SequenceClassifier
from ..models.language import LanguageModel
from ..neurons.alif import ALIF
from ..neurons.egru import EGRU
from ..neurons.lif import LIF
from ..neurons.readout import LeakyReadout
from ..sparse.masks import effective_weight
from .graph import (SPARSE_BELOW, DenseInput, Decoder, EGRULayer, Embedding, Graph, GraphError, Readout, SpikingLayer,
                    Weights)

__all__ = ["freeze"]

_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


def _weights(module: nn.Module, name: str, sparse_below: float) -> Weights:
    return Weights.from_matrix(_np(effective_weight(module, name)), sparse_below=sparse_below)


def _bias(t: torch.Tensor | None, dtype: np.dtype) -> np.ndarray:
    return np.zeros(0, dtype) if t is None else _np(t)


def _spiking_layer(layer: SpikingRecurrent, dtype: np.dtype, sparse_below: float) -> SpikingLayer:
    if not isinstance(layer, (LIF, ALIF)):
        raise GraphError(f"cannot freeze {type(layer).__name__}: the engine knows LIF and ALIF spiking layers")
    convention = layer.convention
    alpha = torch.exp(-layer.dt / layer.tau_mem)  # as make_neuron_step computes it
    input_gain = (1.0 - alpha) if convention.scale_input else torch.ones_like(alpha)
    empty = np.zeros(0, dtype)
    if isinstance(layer, ALIF):
        kind = "alif"
        rho = torch.exp(-layer.dt / layer.tau_adapt)
        adapt_gain = (1.0 - rho) if convention.adapt_one_minus_rho else torch.ones_like(rho)
        rho_np, gain_np, beta_np = _np(rho), _np(adapt_gain), _np(layer.beta)
    else:
        kind, rho_np, gain_np, beta_np = "lif", empty, empty, empty
    recurrent = None if layer.recurrent_weight is None else _weights(layer, "recurrent_weight", sparse_below)
    return SpikingLayer(
        kind=kind, input_weight=_weights(layer, "input_weight", sparse_below), recurrent_weight=recurrent,
        bias=_bias(layer.bias, dtype), alpha=_np(alpha), input_gain=_np(input_gain), threshold=_np(layer.threshold),
        rho=rho_np, adapt_gain=gain_np, beta=beta_np, reset_by_adaptive=convention.reset_by_adaptive,
        normalize_by_adaptive=convention.normalize_by_adaptive, spike_from_previous=convention.spike_from_previous,
        n_refractory=int(layer.n_refractory), dt=float(layer.dt), reset=getattr(convention, "reset", "subtract"),
    )


def _egru_layers(egru: EGRU, dtype: np.dtype, sparse_below: float) -> list[EGRULayer]:
    if not egru._event_gating:
        raise GraphError("cannot freeze an EGRU built with _event_gating=False (a dense GRU): the engine runs "
                         "event-gated layers only")
    thresholds = egru.threshold_values()
    layers = []
    for k in range(egru.num_layers):
        layers.append(EGRULayer(
            input_weight=_weights(egru, f"weight_ih_l{k}", sparse_below),
            recurrent_weight=_weights(egru, f"weight_hh_l{k}", sparse_below),
            input_bias=_bias(getattr(egru, f"bias_ih_l{k}"), dtype),
            recurrent_bias=_bias(getattr(egru, f"bias_hh_l{k}"), dtype),
            threshold=_np(thresholds[k]), reset=egru.reset, reset_gate=egru.reset_gate, zoneout=float(egru.zoneout),
        ))
    return layers


def _core_layers(core: nn.Module, dtype: np.dtype, sparse_below: float) -> list:
    if isinstance(core, SpikingRecurrent):
        return [_spiking_layer(core, dtype, sparse_below)]
    inner = getattr(core, "egru", core)  # the classifier wraps its EGRU
    if isinstance(inner, EGRU):
        return _egru_layers(inner, dtype, sparse_below)
    rnn = getattr(core, "rnn", core)
    if isinstance(rnn, (nn.GRU, nn.LSTM, nn.RNN)):
        raise GraphError(f"cannot freeze torch.nn.{type(rnn).__name__}: it is dense (every unit outputs every step), "
                         "so the event-driven engine has nothing to skip; it runs LIF, ALIF and EGRU layers")
    raise GraphError(f"cannot freeze {type(core).__name__}: the engine runs LIF, ALIF and EGRU layers")


def _readout(readout: LeakyReadout, steps: int, sparse_below: float) -> Readout:
    return Readout(weight=_weights(readout.linear, "weight", sparse_below), bias=_np(readout.linear.bias),
                   decay=float(readout.decay), readout_steps=int(steps))


def _language_model(model: LanguageModel, dtype: np.dtype, sparse_below: float) -> Graph:
    if model.kind != "egru":
        raise GraphError(f"cannot freeze a {model.kind.upper()} language model: the engine runs EGRU language models "
                         "(GRU and LSTM outputs are dense)")
    table = _np(model.embedding.weight)
    tied = model.decoder.weight is model.embedding.weight
    projection = None if model.projection is None else _weights(model.projection, "weight", sparse_below)
    head = Decoder(
        bias=_np(model.decoder.bias), tied=tied,
        weight=None if tied else _weights(model.decoder, "weight", sparse_below),
        projection=projection,
        projection_bias=np.zeros(0, dtype) if model.projection is None else _bias(model.projection.bias, dtype),
    )
    return Graph(Embedding(table), _egru_layers(model.rnn, dtype, sparse_below), head)


def freeze(model: nn.Module, *, dtype: Any = np.float64, sparse_below: float = SPARSE_BELOW) -> Graph:
    """Freeze ``model`` into a validated :class:`~ranvier.engine.Graph` of ``dtype`` arrays
    (float32 or float64, as a numpy or torch dtype).

    Accepts a :class:`~ranvier.models.classifier.SequenceClassifier` (LIF/ALIF/EGRU core), an
    EGRU :class:`~ranvier.models.language.LanguageModel`, or a bare ``LIF``/``ALIF``/``EGRU``
    layer. Constants are computed by torch in ``dtype`` (on a copy of the model), as the torch
    model in that dtype computes them. A weight matrix whose fraction of non-zero entries (after
    its mask) is at most ``sparse_below`` is stored as CSR, else densely.

    Example::

        >>> from ranvier import EGRU
        >>> from ranvier.engine import freeze
        >>> graph = freeze(EGRU(4, 8, num_layers=2))
        >>> graph.kind, len(graph.layers), graph.dtype
        ('stack', 2, dtype('float64'))
    """
    if isinstance(dtype, torch.dtype):
        dtype = {t: d for d, t in _TORCH_DTYPES.items()}.get(dtype, dtype)
    try:
        dtype = np.dtype(dtype)
    except TypeError as err:
        raise GraphError(f"dtype must be float32 or float64, got {dtype}") from err
    if dtype not in _TORCH_DTYPES:
        raise GraphError(f"dtype must be float32 or float64, got {dtype}")
    if not 0.0 <= sparse_below <= 1.0:
        raise GraphError(f"sparse_below must lie in [0, 1], got {sparse_below}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"freeze needs a torch.nn.Module, got {type(model).__name__}")
    model = copy.deepcopy(model).to(device="cpu", dtype=_TORCH_DTYPES[dtype]).eval()
    with torch.no_grad():
        if isinstance(model, LanguageModel):
            graph = _language_model(model, dtype, sparse_below)
        elif isinstance(model, SequenceClassifier):
            graph = Graph(DenseInput(model.core.input_size, repeat=int(model.repeat)),
                          _core_layers(model.core, dtype, sparse_below),
                          _readout(model.readout, model.readout_steps, sparse_below))
        else:
            layers = _core_layers(model, dtype, sparse_below)
            graph = Graph(DenseInput(layers[0].input_size), layers)
    return graph.validate()
