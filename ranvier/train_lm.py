"""Word-level language modelling job for :func:`ranvier.train.fit` (PTB, WikiText-2).

Truncated BPTT over ``batch_size`` parallel token streams: window ``k`` of an epoch is tokens
``[k·bptt, (k+1)·bptt)`` of every stream, and the recurrent state is carried (detached) from one
window to the next, and saved in checkpoints so that a resumed run continues exactly.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import TrainConfig
from .core.scan import detach_state
from .data.text import batchify, load_corpus
from .models.language import LanguageModel
from .neurons.egru import EGRUState, backward_sparsity
from .sparse.masks import weight_density
from .train import parameter_groups

__all__ = ["LanguageModelJob", "effective_macs_per_token"]

CORPORA = {"ptb": "ptb", "wikitext2": "wikitext2"}


def effective_macs_per_token(model: LanguageModel, densities: list[float]) -> dict[str, float]:
    """Forward multiply-accumulates per token, dense and effective (SCIENCE.md §3.5, §8).

    ``densities[k]`` is the fraction of non-zero outputs of layer ``k`` (1 − activity sparsity;
    1 for GRU/LSTM). A matmul's MACs are scaled by the density of its input, as in the EGRU
    papers: layer ``k`` costs ``G·H·(I_k·d_in + H·d_k)`` with ``G`` gates (3 for GRU/EGRU, 4 for
    LSTM), ``d_in`` = 1 for the embedding and ``d_{k−1}`` above it; the projection (if any) costs
    ``E·H·d_last`` and the decoder ``V·E`` (dense input after a projection) or ``V·H·d_last``.
    Elementwise gate arithmetic is not counted (it is O(H), against O(H²) for the matmuls).
    A masked (pruned or rewired) recurrent weight costs only its unmasked fraction ``w``, so the
    two savings multiply: ``G·H·(I_k·d_in·w_ih + H·d_k·w_hh)`` (issue 7; like the density scaling
    itself, this is the expected count when the active inputs are independent of which weights are
    kept; ``ranvier report`` counts the exact pairs).
    """
    gates = 4 if model.kind == "lstm" else 3
    E = model.embedding.embedding_dim
    V = model.embedding.num_embeddings
    H = model.rnn.hidden_size
    dense = effective = 0.0
    for k, d in enumerate(densities):
        d_in = 1.0 if k == 0 else densities[k - 1]
        I = E if k == 0 else H
        dense += gates * H * (I + H)
        w_ih, w_hh = weight_density(model.rnn, f"weight_ih_l{k}"), weight_density(model.rnn, f"weight_hh_l{k}")
        effective += gates * H * (I * d_in * w_ih + H * d * w_hh)
    last = densities[-1]
    if model.projection is not None:
        dense += E * H + V * E
        effective += E * H * last + V * E
    else:
        dense += V * H
        effective += V * H * last
    return {"dense_macs_per_token": dense, "effective_macs_per_token": effective}


class LanguageModelJob:
    """What :func:`ranvier.train.fit` needs to train a language model."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        corpus = load_corpus(CORPORA[cfg.task], cfg.data_dir or None, cfg.download)
        self.vocab_size = len(corpus.vocab)
        self.train_data = batchify(corpus.train, cfg.batch_size).to(cfg.device)  # [T, B]
        self.valid_data = batchify(corpus.valid, cfg.eval_batch_size).to(cfg.device)
        self.test_data = batchify(corpus.test, cfg.eval_batch_size).to(cfg.device)
        egru_options = dict(dropconnect=cfg.dropconnect, zoneout=cfg.zoneout, gamma=cfg.gamma, epsilon=cfg.epsilon,
                            threshold_init=cfg.threshold_init, threshold_mean=cfg.threshold_mean)
        self.model = LanguageModel(cfg.model, self.vocab_size, cfg.embedding_size or cfg.hidden_size, cfg.hidden_size,
                                   cfg.num_layers, dropout=cfg.dropout, dropout_embedding=cfg.dropout_embedding,
                                   dropout_input=cfg.dropout_input,
                                   egru_options=egru_options if cfg.model == "egru" else None).to(cfg.device)
        self.steps_per_epoch = math.ceil((len(self.train_data) - 1) / cfg.bptt)
        self.state: Any = None

    # -- optimisation ----------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        return parameter_groups(self.model, self.cfg)

    def loss(self, step: int) -> tuple[Tensor, dict[str, float]]:
        cfg = self.cfg
        position = step % self.steps_per_epoch
        if position == 0:
            self.state = None  # a new epoch starts every stream from rest
        start = position * cfg.bptt
        length = min(cfg.bptt, len(self.train_data) - 1 - start)
        inputs = self.train_data[start:start + length]
        targets = self.train_data[start + 1:start + 1 + length]
        logits, state, record = self.model(inputs, detach_state(self.state))
        self.state = state
        loss = F.cross_entropy(logits.reshape(-1, self.vocab_size), targets.reshape(-1))
        stats = {"loss": loss.item(), "ppl": math.exp(min(loss.item(), 50.0))}
        if record is not None:
            rates = [s.o.mean() for s in record]
            stats["act"] = sum(r.item() for r in rates) / len(rates)
            if cfg.rate_reg > 0:
                # EvNN's activity regulariser: c_AR·(mean(o) − target)² per layer
                loss = loss + cfg.rate_reg * sum((r - cfg.target_rate) ** 2 for r in rates)
        return loss, stats

    # -- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def _perplexity(self, data: Tensor, limit: int = 0) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        state, total_loss, tokens = None, 0.0, 0
        active: list[float] = []
        window: list[float] = []
        cells: list[int] = []
        stop = len(data) - 1 if limit <= 0 else min(len(data) - 1, limit)
        for start in range(0, stop, self.cfg.bptt):
            length = min(self.cfg.bptt, stop - start)
            logits, state, record = self.model(data[start:start + length], state)
            total_loss += F.cross_entropy(logits.reshape(-1, self.vocab_size),
                                          data[start + 1:start + 1 + length].reshape(-1), reduction="sum").item()
            tokens += length * data.shape[1]
            if record is not None:
                if not active:
                    active, window, cells = [0.0] * len(record), [0.0] * len(record), [0] * len(record)
                for k, s in enumerate(record):
                    active[k] += s.o.sum().item()
                    window[k] += s.margin.numel() * (1.0 - backward_sparsity(s.margin, self.cfg.epsilon).item())
                    cells[k] += s.o.numel()
        self.model.train(was_training)
        result = {"loss": total_loss / tokens, "ppl": math.exp(total_loss / tokens)}
        densities = [1.0] * self.cfg.num_layers
        if cells:
            densities = [a / n for a, n in zip(active, cells)]
            for k in range(len(cells)):
                result[f"activity_sparsity_l{k}"] = 1.0 - densities[k]
                result[f"backward_sparsity_l{k}"] = 1.0 - window[k] / cells[k]
            # layers have equal width, so the overall figures are plain means (EvNN weights by size)
            result["activity_sparsity"] = 1.0 - sum(active) / sum(cells)
            result["backward_sparsity"] = 1.0 - sum(window) / sum(cells)
        result.update(effective_macs_per_token(self.model, densities))
        return result

    def evaluate(self, limit: int = 0) -> dict[str, float]:
        return {f"valid_{k}": v for k, v in self._perplexity(self.valid_data, limit).items()}

    def summary(self, result: dict[str, float]) -> dict[str, Any]:
        test = self._perplexity(self.test_data)
        layers = range(self.cfg.num_layers)
        return {
            "valid_perplexity": result["valid_ppl"],
            "test_perplexity": test["ppl"],
            "activity_sparsity": {f"layer{k}": test.get(f"activity_sparsity_l{k}", 0.0) for k in layers}
            | {"overall": test.get("activity_sparsity", 0.0)},
            "backward_sparsity": {f"layer{k}": test[f"backward_sparsity_l{k}"] for k in layers}
            | {"overall": test["backward_sparsity"]} if "backward_sparsity" in test else {},
            "dense_macs_per_token": test["dense_macs_per_token"],
            "effective_macs_per_token": test["effective_macs_per_token"],
        }

    # -- exact resumption ------------------------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        if self.state is None:
            return {}
        if self.cfg.model == "egru":
            return {f"state/{k}/{name}": t for k, s in enumerate(self.state) for name, t in zip(s._fields, s)}
        parts = self.state if isinstance(self.state, tuple) else (self.state,)
        return {f"state/{i}": t for i, t in enumerate(parts)}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        if not tensors:
            self.state = None
        elif self.cfg.model == "egru":
            self.state = [EGRUState(*(tensors[f"state/{k}/{name}"] for name in EGRUState._fields))
                          for k in range(self.cfg.num_layers)]
        elif self.cfg.model == "lstm":
            self.state = (tensors["state/0"], tensors["state/1"])
        else:
            self.state = tensors["state/0"]
