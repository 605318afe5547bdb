"""``fit(cfg)``: train a sequence classifier, evaluate it, and leave a complete run directory.

A run directory holds ``config.toml`` (the resolved config), ``checkpoint.safetensors`` (model,
optimiser and RNG state plus the position in the run, written atomically) and ``metrics.json``.
Data order comes from a generator seeded by (seed, epoch), so a resumed run visits the same
batches in the same order and ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from .config import TrainConfig, to_toml
from .models.classifier import SequenceClassifier, build_classifier
from .neurons.readout import firing_rate_loss
from .tasks.registry import Task, load_task

__all__ = ["fit", "evaluate"]

CHECKPOINT = "checkpoint.safetensors"


# Settings that may change between a run and its resumption without changing the result.
_BOOKKEEPING = {"progress", "threads", "out", "data_dir", "download", "eval_every", "eval_samples", "checkpoint_every"}


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _BOOKKEEPING}


def _epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen)


def _learning_rate(cfg: TrainConfig, step: int, total_steps: int) -> float:
    if cfg.lr_decay_every > 0:
        return cfg.lr * cfg.lr_decay ** (step // cfg.lr_decay_every)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))  # cosine to 0


def activity_sparsity(activity: Tensor) -> float:
    """``1 − mean(activity ≠ 0)`` over time, batch and units (= 1 − mean spike rate for spikes)."""
    return 1.0 - (activity != 0).float().mean().item()


@torch.no_grad()
def evaluate(model: SequenceClassifier, task: Task, batch_size: int = 256, limit: int = 0) -> dict[str, float]:
    """Test-set accuracy, loss, and activity sparsity (over the first ``limit`` samples if > 0)."""
    was_training = model.training
    model.eval()
    n = len(task.y_test) if limit <= 0 else min(limit, len(task.y_test))
    correct, loss_sum, active, total_activity = 0, 0.0, 0.0, 0
    for start in range(0, n, batch_size):
        x = task.encode(task.x_test[start:start + batch_size][: n - start])
        y = task.y_test[start:start + batch_size][: n - start]
        logits, activity = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        active += (activity != 0).float().sum().item()
        total_activity += activity.numel()
    model.train(was_training)
    return {"accuracy": correct / n, "loss": loss_sum / n, "activity_sparsity": 1.0 - active / total_activity,
            "samples": n}


def fit(cfg: TrainConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train according to ``cfg`` and return the metrics dict (also written to metrics.json)."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    # Vanishing gradients through long sequences pass through subnormal floats, which are
    # ~10× slower on x86 (shared/bench/perf-anchors.md); flushing them changes nothing visible.
    torch.set_flush_denormal(True)
    run_dir = cfg.run_dir()
    ckpt_path = run_dir / CHECKPOINT
    if resume and not ckpt_path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir}")
    if not resume and ckpt_path.exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or --out to start a new one")
    run_dir.mkdir(parents=True, exist_ok=True)

    task = load_task(cfg.task, cfg.data_dir or None, cfg.download, cfg.levels)
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg, task.n_inputs, task.n_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    n_train = len(task.y_train)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch if cfg.epochs > 0 else cfg.max_steps
    if cfg.max_steps > 0:
        total_steps = min(total_steps, cfg.max_steps)

    step, elapsed, history = 0, 0.0, []
    if resume:
        meta = load_checkpoint(ckpt_path, model, optimizer)
        if _identity(meta.get("config", {})) != _identity(dataclasses.asdict(cfg)):
            raise ValueError(f"the config differs from the one the run in {run_dir} was started with; "
                             f"resume with `ranvier train --resume --out {run_dir}`, which reads its config.toml")
        step, elapsed, history = meta["step"], meta["elapsed"], meta["history"]
    atomic_write_text(run_dir / "config.toml", to_toml(cfg))

    def checkpoint() -> None:
        meta = {"step": step, "elapsed": elapsed + time.perf_counter() - t0, "history": history,
                "config": dataclasses.asdict(cfg)}
        save_checkpoint(ckpt_path, model, optimizer, meta)

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, disable=not cfg.progress, desc=f"{cfg.model} on {cfg.task}",
               unit="step", dynamic_ncols=True)
    running: dict[str, float] = {}
    orders: dict[int, Tensor] = {}
    updating = False  # True while parameters are half-updated: no checkpoint may be taken then
    t0 = time.perf_counter()
    model.train()
    try:
        while step < total_steps:
            epoch, position = divmod(step, steps_per_epoch)
            if epoch not in orders:
                orders = {epoch: _epoch_order(n_train, cfg.seed, epoch)}
            index = orders[epoch][position * cfg.batch_size:(position + 1) * cfg.batch_size]
            x, y = task.encode(task.x_train[index]), task.y_train[index]
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(cfg, step, total_steps)
            logits, activity = model(x)
            loss = F.cross_entropy(logits, y)
            total = loss + cfg.rate_reg * firing_rate_loss(activity, cfg.target_rate) if (model.spiking and cfg.rate_reg > 0) else loss
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            updating = True
            optimizer.step()
            step += 1
            updating = False
            # exponential running averages for the progress bar and the per-epoch history
            stats = {"loss": loss.item(), "acc": (logits.argmax(-1) == y).float().mean().item(),
                     "rate": (activity != 0).float().mean().item()}
            running = {k: v if not running else 0.9 * running[k] + 0.1 * v for k, v in stats.items()}
            bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()}, refresh=False)
            bar.update(1)
            if cfg.eval_every > 0 and step % cfg.eval_every == 0 and step < total_steps:
                result = evaluate(model, task, limit=cfg.eval_samples)
                history.append({"step": step, "time": elapsed + time.perf_counter() - t0, **result})
                bar.write(f"step {step}: test accuracy {result['accuracy']:.4f} on {result['samples']} samples")
            if step % steps_per_epoch == 0:
                history.append({"step": step, "epoch": step // steps_per_epoch, "train_loss": running["loss"],
                                "train_accuracy": running["acc"], "train_rate": running["rate"]})
            if step % steps_per_epoch == 0 or step % cfg.checkpoint_every == 0 or step == total_steps:
                checkpoint()
    except KeyboardInterrupt:
        bar.close()
        if updating:  # interrupted inside optimizer.step(): keep the last consistent checkpoint
            print(f"\ninterrupted during an update at step {step}; the last periodic checkpoint is kept.")
        else:
            checkpoint()
            print(f"\ninterrupted at step {step}/{total_steps}; checkpoint saved.")
        print(f"Continue with:\n  ranvier train --resume --out {run_dir}")
        raise
    bar.close()
    train_time = elapsed + time.perf_counter() - t0

    result = evaluate(model, task)
    history.append({"step": step, "time": train_time, **result})
    metrics = {
        "task": cfg.task,
        "model": cfg.model,
        "test_accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "activity_sparsity": {"layer0": result["activity_sparsity"]},
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": step,
        "train_seconds": train_time,
        "history": history,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    return metrics
