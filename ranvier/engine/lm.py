"""Language models on the engine: perplexity of a token stream and token-by-token generation."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import kernels
from .graph import GraphError
from .run import Session

__all__ = ["perplexity", "generate", "Generation"]


def _check_lm(session: Session) -> None:
    if not isinstance(session, Session):
        raise TypeError(f"expected a ranvier.engine.Session, got {type(session).__name__}")
    if session.graph.kind != "language_model":
        raise GraphError(f"this needs a language-model graph, got a {session.graph.kind} graph")


def perplexity(session: Session, streams: np.ndarray) -> dict[str, float]:
    """Perplexity of token ``streams`` ``[T, B]`` (or one stream ``[T]``), each from a zero state.

    Token ``t + 1`` of every stream is predicted from tokens ``0..t``, as the torch evaluation
    of ``ranvier.train_lm`` does over ``batchify``-ed data; its summed cross-entropy is divided by
    the number of predictions. Returns ``loss``, ``ppl``, ``tokens`` (predictions), ``seconds``
    (wall time of the steps) and ``activity`` (mean fraction of units with an event, per layer).
    """
    _check_lm(session)
    streams = np.asarray(streams)
    if streams.ndim == 1:
        streams = streams[:, None]
    if streams.ndim != 2 or streams.shape[0] < 2 or streams.dtype.kind not in "iu":
        raise ValueError(f"streams must be integer token ids [T >= 2, B], got {streams.dtype} {streams.shape}")
    total, count = 0.0, 0
    events = np.zeros(len(session.graph.layers))
    sizes = np.array([layer.hidden_size for layer in session.graph.layers], dtype=float)
    seconds = 0.0
    for b in range(streams.shape[1]):
        session.reset()
        column = [int(t) for t in streams[:, b]]
        start = time.perf_counter()
        for t in range(len(column) - 1):
            logits = session._step_view(column[t])
            total += kernels.nll(logits, column[t + 1])
            events += session.event_counts
        seconds += time.perf_counter() - start
        count += len(column) - 1
    loss = total / count
    return {"loss": loss, "ppl": math.exp(loss), "tokens": count, "seconds": seconds,
            "activity": (events / count / sizes).tolist()}


@dataclass
class Generation:
    """Tokens produced by :func:`generate`, with the latency and the events of every step."""

    tokens: list[int]
    step_seconds: list[float] = field(default_factory=list)
    event_counts: list[list[int]] = field(default_factory=list)


def generate(session: Session, prompt: list[int], n_tokens: int, *, temperature: float = 1.0,
             seed: int | None = 0) -> Generation:
    """Feed ``prompt`` (token ids) from the session's current state, then generate ``n_tokens``
    tokens one at a time: sample from ``softmax(logits / temperature)``, or take the most likely
    token when ``temperature == 0``. ``step_seconds`` and ``event_counts`` cover every step,
    prompt included."""
    _check_lm(session)
    if not prompt:
        raise ValueError("the prompt needs at least one token")
    if n_tokens < 0 or temperature < 0:
        raise ValueError(f"n_tokens and temperature must be >= 0, got {n_tokens}, {temperature}")
    rng = np.random.default_rng(seed)
    out = Generation(tokens=[])
    logits = None
    for token in prompt:
        start = time.perf_counter()
        logits = session._step_view(int(token))
        out.step_seconds.append(time.perf_counter() - start)
        out.event_counts.append(session.event_counts)
    for _ in range(n_tokens):
        if temperature == 0:
            token = int(np.argmax(logits))
        else:
            scaled = logits.astype(np.float64) / temperature
            p = np.exp(scaled - scaled.max())
            token = int(rng.choice(p.size, p=p / p.sum()))
        out.tokens.append(token)
        start = time.perf_counter()
        logits = session._step_view(token)
        out.step_seconds.append(time.perf_counter() - start)
        out.event_counts.append(session.event_counts)
    return out
