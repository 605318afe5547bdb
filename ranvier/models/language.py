"""Word-level language model: tied embedding → recurrent stack (EGRU, GRU or LSTM) → decoder."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..neurons.egru import EGRU

__all__ = ["LanguageModel", "locked_dropout", "embedding_dropout"]


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Variational dropout: one mask per sequence and feature, shared by every step (x ``[T, B, F]``)."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(1, x.shape[1], x.shape[2]).bernoulli_(1 - p) / (1 - p)
    return x * mask


def embedding_dropout(embedding: nn.Embedding, tokens: Tensor, p: float, training: bool) -> Tensor:
    """Drop whole words (rows of the embedding matrix) with probability ``p`` (Gal & Ghahramani 2016)."""
    weight = embedding.weight
    if training and p > 0.0:
        mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
        weight = weight * mask
    return nn.functional.embedding(tokens, weight)


class LanguageModel(nn.Module):
    """``tokens [T, B] → logits [T, B, V]`` with input and output embeddings tied.

    When ``hidden_size ≠ embedding_size`` a linear projection maps the last layer's output to the
    embedding size before the tied decoder. ``forward`` returns ``(logits, state, record)``:
    ``record`` is a list per layer of EGRU trajectories (``EGRUState`` fields stacked over time)
    for the sparsity metrics, or ``None`` for GRU/LSTM.
    """

    def __init__(self, kind: str, vocab_size: int, embedding_size: int, hidden_size: int, num_layers: int, *,
                 dropout: float = 0.0, dropout_embedding: float = 0.0, dropout_input: float = 0.0,
                 egru_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if kind == "egru":
            self.rnn: nn.Module = EGRU(embedding_size, hidden_size, num_layers, dropout=dropout, **(egru_options or {}))
        elif kind == "gru":
            self.rnn = nn.GRU(embedding_size, hidden_size, num_layers, dropout=dropout if num_layers > 1 else 0.0)
        elif kind == "lstm":
            self.rnn = nn.LSTM(embedding_size, hidden_size, num_layers, dropout=dropout if num_layers > 1 else 0.0)
        else:
            raise ValueError(f"unknown language model {kind!r}; choose egru, gru or lstm")
        self.projection = nn.Linear(hidden_size, embedding_size) if hidden_size != embedding_size else None
        self.decoder = nn.Linear(embedding_size, vocab_size)
        self.decoder.weight = self.embedding.weight  # tied (Press & Wolf 2017; Inan et al. 2017)
        nn.init.zeros_(self.decoder.bias)
        self.dropout = dropout
        self.dropout_embedding = dropout_embedding
        self.dropout_input = dropout_input

    def forward(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any, list | None]:
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(f"tokens must be an int64 [T, B] tensor, got {tokens.dtype} {tuple(tokens.shape)}")
        x = embedding_dropout(self.embedding, tokens, self.dropout_embedding, self.training)  # [T, B, E]
        x = locked_dropout(x, self.dropout_input, self.training)
        record = None
        if self.kind == "egru":
            out, record = self.rnn.trajectory(x, state)  # record: per layer, fields [T, B, H]
            state = [type(s)(*(f[-1] for f in s)) for s in record]  # the final state of each layer
        else:
            out, state = self.rnn(x, state)
        out = locked_dropout(out, self.dropout, self.training)
        if self.projection is not None:
            out = self.projection(out)
        return self.decoder(out), state, record
