"""Sequence classifier: one recurrent layer, a leaky readout, and a decision over the last steps."""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from ..core.surrogate import PiecewiseLinear
from ..layers.recurrent import check_input
from ..neurons.alif import ALIF
from ..neurons.common import EPROP_CONVENTION, LSNN_CONVENTION
from ..neurons.egru import EGRU
from ..neurons.lif import LIF
from ..neurons.readout import LeakyReadout

__all__ = ["SequenceClassifier", "build_classifier"]


class SequenceClassifier(nn.Module):
    """``x [B, T, I] → recurrent layer → LeakyReadout → logits``.

    ``forward`` returns ``(logits [B, classes], activity [T, B, H])``: the logits are the mean of
    the readout over the last ``readout_steps`` steps (all steps when 0); ``activity`` is the
    layer's output (spikes for LIF/ALIF, graded events for EGRU, hidden states for GRU/LSTM), kept
    for the regulariser and the sparsity report.
    """

    def __init__(self, core: nn.Module, readout: LeakyReadout, *, spiking: bool, readout_steps: int = 1,
                 repeat: int = 1) -> None:
        super().__init__()
        self.core = core
        self.readout = readout
        self.spiking = spiking
        self.readout_steps = readout_steps
        self.repeat = repeat

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_input(x, self.core.input_size)
        xs = x.transpose(0, 1)  # [T, B, I]: the core runs time-major
        if self.repeat > 1:
            xs = xs.repeat_interleave(self.repeat, dim=0)  # [T·repeat, B, I]
        activity, _ = self.core(xs)  # [T', B, H]
        y = self.readout(activity)  # [T', B, O]
        k = self.readout_steps if self.readout_steps > 0 else y.shape[0]
        return y[-k:].mean(0), activity


def build_classifier(cfg, n_inputs: int, n_classes: int) -> SequenceClassifier:
    """Build the network named by ``cfg.model`` (see :class:`~ranvier.config.TrainConfig`)."""
    h = cfg.hidden_size
    surrogate = PiecewiseLinear(gamma=cfg.gamma)
    conventions = {"lsnn": LSNN_CONVENTION, "eprop": EPROP_CONVENTION}
    if cfg.convention not in conventions:
        raise ValueError(f"unknown convention {cfg.convention!r}; choose one of {', '.join(conventions)}")
    convention = dataclasses.replace(conventions[cfg.convention], reset=cfg.reset)  # issue 10: reset mode
    common = dict(tau_mem=_time_constants(cfg.tau_mem, cfg.tau_mem_max, h), threshold=cfg.threshold,
                  n_refractory=cfg.n_refractory, surrogate=surrogate, convention=convention)
    if cfg.model == "lif":
        core: nn.Module = LIF(n_inputs, h, **common)
    elif cfg.model in ("alif", "lsnn"):
        beta = torch.full((h,), cfg.beta)
        if cfg.model == "lsnn":
            n_adaptive = h // 2 if cfg.n_adaptive < 0 else cfg.n_adaptive
            if not 0 <= n_adaptive <= h:
                raise ValueError(f"n_adaptive={n_adaptive} must lie in [0, hidden_size={h}]")
            beta[: h - n_adaptive] = 0.0  # LSNN: the first units are regular LIF (β = 0)
        core = ALIF(n_inputs, h, tau_adapt=_time_constants(cfg.tau_adapt, cfg.tau_adapt_max, h), beta=beta, **common)
    elif cfg.model == "egru":
        core = _EGRUCore(EGRU(n_inputs, h, gamma=cfg.gamma, epsilon=cfg.epsilon, threshold_init=cfg.threshold_init,
                              threshold_mean=cfg.threshold_mean, zoneout=cfg.zoneout, dropconnect=cfg.dropconnect))
    elif cfg.model == "gru":
        core = _TorchRNN(nn.GRU(n_inputs, h))
    elif cfg.model == "lstm":
        core = _TorchRNN(nn.LSTM(n_inputs, h))
    else:
        raise ValueError(f"unknown model {cfg.model!r}")
    spiking = cfg.model in ("lif", "alif", "lsnn")
    if spiking and cfg.input_gain != 1.0:
        with torch.no_grad():
            core.input_weight.mul_(cfg.input_gain)
    readout = LeakyReadout(h, n_classes, tau_out=cfg.tau_out)
    return SequenceClassifier(core, readout, spiking=spiking, readout_steps=cfg.readout_steps, repeat=cfg.repeat)


def _time_constants(low: float, high: float, n: int) -> float | Tensor:
    """``low`` for every unit, or log-uniform in ``[low, high]`` when ``high > low``.

    Heterogeneous time constants give the layer a spread of memory lengths (Perez-Nieves et al.
    2021); on MNIST-1D they add about 4 points of accuracy (docs/benchmarks.md).
    """
    if high <= low:
        return low
    return torch.exp(torch.empty(n).uniform_(math.log(low), math.log(high)))


class _EGRUCore(nn.Module):
    """One EGRU layer; its activity is the graded event output ``y`` (zero where no event)."""

    def __init__(self, egru: EGRU) -> None:
        super().__init__()
        self.egru = egru
        self.input_size = egru.input_size
        self.hidden_size = egru.hidden_size

    def forward(self, x: Tensor, state=None):
        return self.egru(x, state)


class _TorchRNN(nn.Module):
    """torch.nn.GRU/LSTM with ranvier's ``(output, state)`` convention and ``input_size``."""

    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        self.rnn = rnn
        self.input_size = rnn.input_size
        self.hidden_size = rnn.hidden_size

    def forward(self, x: Tensor, state=None):
        return self.rnn(x, state)
