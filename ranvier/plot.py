"""Pictures of a run: learning curves, one test sample's input and its spike raster.

matplotlib is imported here only, on first use (``pip install matplotlib`` or ``ranvier[plot]``),
with the non-interactive ``Agg`` backend unless ``MPLBACKEND`` says otherwise. The ``draw_*``
helpers each fill one matplotlib axes; :func:`plot_run` and :mod:`ranvier.report` compose them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["plot_run", "pyplot", "draw_learning_curves", "draw_training_sparsity", "draw_input", "draw_activity"]


def pyplot() -> Any:
    """``matplotlib.pyplot``, imported on first use with ``MPLBACKEND=Agg`` as the default."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install matplotlib (or ranvier[plot])") from err
    return plt


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    rows = [h for h in history if key in h and h[key] is not None]
    return [h["step"] for h in rows], [float(h[key]) for h in rows]


def draw_learning_curves(ax: Any, history: list[dict[str, Any]], *, metric: str = "accuracy") -> None:
    """Training curves from a run's history (``metrics.json`` / checkpoint ``"history"``).

    ``metric="accuracy"``: running train accuracy (``train_acc``, one entry per epoch) and test
    accuracy (evaluation entries). ``metric="loss"``: running train loss (``train_loss``) and the
    evaluation loss (``loss``, or ``valid_loss`` for language models), in nats per sample/token.
    """
    if metric == "accuracy":
        pairs = [("train_acc", "train accuracy (running mean)", "-"), ("accuracy", "test accuracy", "o-")]
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
    elif metric == "loss":
        pairs = [("train_loss", "train loss (running mean)", "-"), ("loss", "test loss", "o-"),
                 ("valid_loss", "validation loss", "o-")]
        ax.set_ylabel("cross-entropy (nats)")
    else:
        raise ValueError(f"metric must be 'accuracy' or 'loss', got {metric!r}")
    drawn = False
    for key, label, style in pairs:
        steps, values = _series(history, key)
        if steps:
            ax.plot(steps, values, style, ms=4, label=label)
            drawn = True
    ax.set_xlabel("optimiser step")
    if drawn:
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no history recorded", ha="center", va="center", transform=ax.transAxes)


def draw_training_sparsity(ax: Any, history: list[dict[str, Any]]) -> None:
    """Activity sparsity over training: ``1 − train_rate`` (classification) or ``1 − train_act``
    (EGRU language models) per epoch, and the evaluated ``activity_sparsity`` /
    ``valid_activity_sparsity`` (fraction of zero activations)."""
    drawn = False
    for key, label in (("train_rate", "train (running mean)"), ("train_act", "train (running mean)")):
        steps, values = _series(history, key)
        if steps:
            ax.plot(steps, [1.0 - v for v in values], "-", label=label)
            drawn = True
    for key, label in (("activity_sparsity", "test"), ("valid_activity_sparsity", "validation")):
        steps, values = _series(history, key)
        if steps:
            ax.plot(steps, values, "o-", ms=4, label=label)
            drawn = True
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("activity sparsity\n(fraction of zero outputs)")
    ax.set_ylim(-0.02, 1.02)
    if drawn:
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no activity sparsity recorded (dense model)", ha="center", va="center",
                transform=ax.transAxes)


def draw_input(ax: Any, x: torch.Tensor | np.ndarray, *, title: str = "", fig: Any = None) -> None:
    """One sample's encoded input ``x [T, channels]`` as an image (channel × time step).

    Diverging colours centred on 0, so that silent spike channels are white whatever the range of
    an analog channel; a colour bar is added when ``fig`` is given.
    """
    arr = np.asarray(x, dtype=np.float32).T  # [C, T]
    peak = float(np.abs(arr).max()) if arr.size else 1.0
    image = ax.imshow(arr, aspect="auto", interpolation="nearest", cmap="RdBu_r", origin="lower",
                      vmin=-(peak or 1.0), vmax=peak or 1.0)
    if fig is not None:
        fig.colorbar(image, ax=ax, label="input value")
    ax.set_xlabel("time step")
    ax.set_ylabel("input channel")
    if title:
        ax.set_title(title)


def draw_activity(ax: Any, activity: torch.Tensor | np.ndarray, *, kind: str = "spiking", title: str = "",
                  xlabel: str = "time step", fig: Any = None) -> None:
    """One sample's activity ``[T, H]`` of a layer.

    ``kind="spiking"``: a raster, one tick per spike (unit × time step); ``"event"`` (EGRU): the
    graded events ``y = o·ĉ`` as coloured ticks (colour = event value, colour bar when ``fig``
    is given); ``"dense"`` (GRU/LSTM): a heatmap of the hidden state.
    """
    act = np.asarray(activity, dtype=np.float32)  # [T, H]
    steps, units = act.shape
    if kind in ("spiking", "event"):
        t_idx, n_idx = np.nonzero(act)
        # tick height ≈ one unit row, whatever the figure size
        size = max(2.0, min(30.0, 2400.0 / max(units, 1)))
        if kind == "spiking":
            ax.scatter(t_idx, n_idx, s=size, c="k", marker="|", linewidths=1.0)
        else:
            points = ax.scatter(t_idx, n_idx, s=size, c=act[t_idx, n_idx], cmap="viridis", marker="|",
                                linewidths=1.5)
            if fig is not None and len(t_idx):
                fig.colorbar(points, ax=ax, label="event value y = o·ĉ")
        ax.set_ylim(-0.5, units - 0.5)
        silent = 1.0 - (act != 0).mean() if act.size else 1.0
        what = "spikes" if kind == "spiking" else "events"
        ax.set_title(title or f"{what}: {len(t_idx)} in {steps} steps × {units} units ({silent:.1%} of unit-steps silent)")
    elif kind == "dense":
        image = ax.imshow(act.T, aspect="auto", interpolation="nearest", cmap="RdBu_r", origin="lower",
                          vmin=-1.0, vmax=1.0)
        if fig is not None:
            fig.colorbar(image, ax=ax, label="hidden state")
        ax.set_title(title or "hidden state (dense: every unit outputs at every step)")
    else:
        raise ValueError(f"kind must be 'spiking', 'event' or 'dense', got {kind!r}")
    ax.set_xlim(-0.5, steps - 0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("unit")


def plot_run(run_dir: str | Path, out: str | Path | None = None, sample: int = 0) -> Path:
    """Draw ``<run_dir>/run.png``: training curves, then input and activity of test ``sample``."""
    from .report import load_run

    plt = pyplot()
    run = load_run(run_dir)
    if run.task is None:
        raise ValueError("plot_run draws classification runs; use `ranvier report` for language models")
    model, task = run.model, run.task
    with torch.no_grad():
        x = task.encode(task.x_test[sample:sample + 1])  # [1, T, C]
        logits, activity = model(x)  # activity [T', 1, H]

    fig, axes = plt.subplots(3, 1, figsize=(8, 9), constrained_layout=True)
    draw_learning_curves(axes[0], run.history, metric="accuracy")
    axes[0].set_title(f"{run.cfg.model} on {run.cfg.task}")
    draw_input(axes[1], x[0], fig=fig, title=f"test sample {sample}: label {int(task.y_test[sample])}, "
                                            f"predicted {int(logits.argmax())}")
    draw_activity(axes[2], activity[:, 0], kind="spiking" if model.spiking else "dense")
    out = Path(out) if out else Path(run_dir) / "run.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
