"""``ranvier run`` and ``ranvier generate``: a trained run directory through the engine."""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

__all__ = ["run_classifier", "generate_text"]


def _load(run_dir: str, data_dir: str | None, dtype: str) -> tuple[Any, Any]:
    from ..report import load_run
    from .freeze import freeze

    run = load_run(run_dir, data_dir=data_dir)
    return run, freeze(run.model, dtype=dtype)


def _latency_summary(seconds: list[float]) -> str:
    us = np.asarray(seconds) * 1e6
    return f"median {np.median(us):.1f} µs, p90 {np.percentile(us, 90):.1f} µs, mean {us.mean():.1f} µs"


def _events(counts: list[int], sizes: list[int]) -> str:
    return " ".join(f"{c}/{h}" for c, h in zip(counts, sizes))


def run_classifier(run_dir: str, sample: int = 0, *, data_dir: str | None = None, dtype: str = "float32",
                   threads: int = 1, max_lines: int = 50, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Classify test sample ``sample`` of a trained sequence classifier with the engine, one
    step at a time; print the prediction, each step's latency and events, and the torch model's
    prediction beside it. Returns the figures as a dict."""
    import torch

    from .run import Session

    run, graph = _load(run_dir, data_dir, dtype)
    if graph.kind != "classifier":
        raise ValueError(f"{run_dir} holds a {run.cfg.task} {graph.kind}; `ranvier run` classifies a sequence "
                         "(use `ranvier generate` for language models)")
    n = len(run.task.y_test)
    if not 0 <= sample < n:
        raise ValueError(f"--sample must lie in [0, {n}) (the test set has {n} sequences), got {sample}")
    x = run.task.encode(run.task.x_test[sample:sample + 1])  # [1, T, I]
    label = int(run.task.y_test[sample])
    session = Session(graph, threads=threads).warm_up()
    sizes = [layer.hidden_size for layer in graph.layers]
    echo(graph.summary())
    seconds, counts = [], []
    steps = x.shape[1]
    for t, x_t in enumerate(x[0].numpy()):
        start = time.perf_counter()
        session.step(x_t)
        seconds.append(time.perf_counter() - start)
        counts.append(session.event_counts)
        if t < max_lines:
            echo(f"step {t:4d}: {seconds[-1] * 1e6:8.1f} µs, events {_events(counts[-1], sizes)}")
    if steps > max_lines:
        echo(f"... {steps - max_lines} more steps")
    logits = session.classify(x[0].numpy())  # the same steps again, for the decision over the last readout steps
    prediction = int(np.argmax(logits))
    with torch.no_grad():
        torch_logits, _ = run.model(x.to(next(run.model.parameters()).dtype))
    torch_prediction = int(torch_logits.argmax(-1))
    activity = np.mean(counts, axis=0) / np.asarray(sizes)
    echo(f"prediction {prediction} (label {label}; torch model: {torch_prediction}) | per step: "
         f"{_latency_summary(seconds)} | activity {', '.join(f'{a:.3f}' for a in activity)} of units per step")
    return {"prediction": prediction, "label": label, "torch_prediction": torch_prediction, "logits": logits,
            "torch_logits": torch_logits[0].numpy(), "step_seconds": seconds, "event_counts": counts}


def generate_text(run_dir: str, prompt: str, tokens: int = 20, *, temperature: float = 1.0, seed: int = 0,
                  data_dir: str | None = None, dtype: str = "float32", threads: int = 1,
                  echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate ``tokens`` words after ``prompt`` with a trained EGRU language model on the
    engine; print every step's token, latency and events, then the text."""
    from .lm import generate
    from .run import Session

    run, graph = _load(run_dir, data_dir, dtype)
    if graph.kind != "language_model":
        raise ValueError(f"{run_dir} holds a {run.cfg.task} classifier; `ranvier generate` needs a language model "
                         "(use `ranvier run` for classifiers)")
    corpus = run.corpus
    words = prompt.split()
    if not words:
        raise ValueError("--prompt needs at least one word")
    unk = corpus.index.get("<unk>")
    unknown = [w for w in words if w not in corpus.index]
    if unknown and unk is None:
        raise ValueError(f"words not in the vocabulary: {', '.join(unknown)}")
    ids = [corpus.index.get(w, unk) for w in words]
    session = Session(graph, threads=threads).warm_up()
    sizes = [layer.hidden_size for layer in graph.layers]
    echo(graph.summary())
    if unknown:
        echo(f"not in the vocabulary (read as <unk>): {', '.join(unknown)}")
    out = generate(session, ids, tokens, temperature=temperature, seed=seed)
    shown = words + [corpus.vocab[t] for t in out.tokens]
    for t, (seconds, counts) in enumerate(zip(out.step_seconds, out.event_counts)):
        kind = "prompt" if t < len(ids) else "token "
        echo(f"{kind} {t:4d} {shown[t]!r:>16}: {seconds * 1e6:8.1f} µs, events {_events(counts, sizes)}")
    text = " ".join(shown).replace(" <eos> ", "\n").replace("<eos>", "\n")
    activity = np.mean(out.event_counts, axis=0) / np.asarray(sizes)
    echo(text)
    echo(f"per token: {_latency_summary(out.step_seconds)} ({1.0 / np.median(out.step_seconds):.0f} tokens/s) | "
         f"activity {', '.join(f'{a:.3f}' for a in activity)} of units per step")
    return {"prompt_ids": ids, "tokens": out.tokens, "text": text, "step_seconds": out.step_seconds,
            "event_counts": out.event_counts}
