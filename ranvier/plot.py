"""Pictures of a run: learning curves, and one test sample's input and spike raster.

matplotlib is imported here only, on first use (``pip install matplotlib`` or ``ranvier[plot]``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .checkpoint import load_checkpoint
from .config import build_config
from .models.classifier import build_classifier
from .tasks.registry import load_task

__all__ = ["plot_run"]


def plot_run(run_dir: str | Path, out: str | Path | None = None, sample: int = 0) -> Path:
    """Draw ``<run_dir>/run.png``: training curves, then input and activity of test ``sample``."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    cfg = build_config(preset=run_dir / "config.toml")
    task = load_task(cfg.task, cfg.data_dir or None, False, cfg.levels)
    model = build_classifier(cfg, task.n_inputs, task.n_classes)
    meta = load_checkpoint(run_dir / "checkpoint.safetensors", model, restore_rng=False)
    history = meta["history"]
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        history = json.loads(metrics_path.read_text())["history"]
    model.eval()
    with torch.no_grad():
        x = task.encode(task.x_test[sample:sample + 1])  # [1, T, C]
        logits, activity = model(x)  # activity [T', 1, H]

    fig, axes = plt.subplots(3, 1, figsize=(8, 9), constrained_layout=True)
    train = [h for h in history if "train_loss" in h]
    test = [h for h in history if "accuracy" in h]
    ax = axes[0]
    if train:
        ax.plot([h["step"] for h in train], [h["train_accuracy"] for h in train], label="train accuracy (running)")
    if test:
        ax.plot([h["step"] for h in test], [h["accuracy"] for h in test], "o-", label="test accuracy")
    ax.set_xlabel("optimiser step")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    ax.set_title(f"{cfg.model} on {cfg.task}")
    axes[1].imshow(x[0].T.numpy(), aspect="auto", interpolation="nearest", cmap="Greys")
    axes[1].set_ylabel("input channel")
    axes[1].set_title(f"test sample {sample}: label {int(task.y_test[sample])}, predicted {int(logits.argmax())}")
    act = activity[:, 0].T.numpy()  # [H, T']
    if model.spiking:
        t_idx, n_idx = (act.T != 0).nonzero()
        axes[2].scatter(t_idx, n_idx, s=6, c="k", marker="|")
        axes[2].set_title(f"spikes: {1 - (act != 0).mean():.1%} of unit-steps silent")
    else:
        axes[2].imshow(act, aspect="auto", interpolation="nearest", cmap="RdBu")
        axes[2].set_title("hidden state")
    axes[2].set_xlim(-0.5, act.shape[1] - 0.5)
    axes[2].set_xlabel("time step")
    axes[2].set_ylabel("unit")
    out = Path(out) if out else run_dir / "run.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
