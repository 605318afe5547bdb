"""``fit(cfg)``: train, evaluate, and leave a complete run directory.

A run directory holds ``config.toml`` (the resolved config), ``checkpoint.safetensors`` (model,
optimiser and RNG state plus the position in the run, written atomically) and ``metrics.json``.

The loop here is shared by every kind of task; what differs (how a batch is drawn and scored,
how the model is evaluated) lives in a *job* (:class:`ClassificationJob` here, the language-model
job in ``train_lm.py``). Data order comes from a generator seeded by (seed, epoch), so a resumed
run visits the same batches in the same order and ends with the same weights as an
uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed
from .checkpoint import atomic_write_text, load_checkpoint, read_meta, save_checkpoint
from .config import TrainConfig, to_toml
from .core.allocator import keep_freed_memory
from .metrics import connection_sparsity
from .models.classifier import SequenceClassifier, build_classifier
from .neurons.readout import firing_rate_loss
from .sparse import sparsify_optimizer
from .tasks.registry import Task, load_task

__all__ = ["fit", "evaluate", "ClassificationJob"]

CHECKPOINT = "checkpoint.safetensors"

# Settings that may change between a run and its resumption without changing the result.
_BOOKKEEPING = {"progress", "threads", "out", "data_dir", "download", "eval_every", "eval_samples", "checkpoint_every"}


class Job(Protocol):
    """What the training loop needs from a task."""

    model: nn.Module
    steps_per_epoch: int

    def parameter_groups(self) -> list[dict[str, Any]]: ...

    def loss(self, step: int) -> tuple[Tensor, dict[str, float]]:
        """Forward pass for optimiser step ``step``: (loss to minimise, stats for the progress bar)."""
        ...

    def evaluate(self, limit: int = 0) -> dict[str, float]: ...

    def summary(self, result: dict[str, float]) -> dict[str, Any]:
        """Final metrics from the last evaluation."""
        ...

    def state_tensors(self) -> dict[str, Tensor]:
        """Tensors besides the model's that a resumed run needs (e.g. carried recurrent state)."""
        ...

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None: ...


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _BOOKKEEPING}


def _epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen)


def _learning_rate(cfg: TrainConfig, step: int, total_steps: int, seconds: float = 0.0) -> float:
    if cfg.lr_decay_every > 0:
        return cfg.lr * cfg.lr_decay ** (step // cfg.lr_decay_every)
    # cosine to 0 over the run: over the steps, or over the time budget if that ends it sooner
    progress = step / total_steps if total_steps > 0 else 0.0
    if cfg.time_budget > 0:
        progress = max(progress, seconds / cfg.time_budget)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Adam groups: EGRU thresholds get their own learning rate and never weight decay (SCIENCE §9.3)."""
    thresholds = [p for m in model.modules() if hasattr(m, "threshold_parameters") for p in m.threshold_parameters()]
    if not thresholds:
        return [{"params": list(model.parameters())}]
    ids = {id(p) for p in thresholds}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": rest}, {"params": thresholds, "lr": cfg.lr * cfg.threshold_lr, "weight_decay": 0.0}]


def _finished(cfg: TrainConfig, step: int, total_steps: int, seconds: float) -> bool:
    if total_steps > 0 and step >= total_steps:
        return True
    return cfg.time_budget > 0 and seconds >= cfg.time_budget


# ------------------------------------------------------------------------------ classification
@torch.no_grad()
def evaluate(model: SequenceClassifier, task: Task, batch_size: int = 256, limit: int = 0,
             device: str | torch.device = "cpu") -> dict[str, float]:
    """Test-set accuracy, loss, and activity sparsity (over the first ``limit`` samples if > 0).

    Activity sparsity is ``1 − mean(activity ≠ 0)`` over time, batch and units (= 1 − mean spike
    rate for spiking layers; close to 0 for GRU/LSTM, whose outputs are dense).
    """
    was_training = model.training
    model.eval()
    n = len(task.y_test) if limit <= 0 else min(limit, len(task.y_test))
    correct, loss_sum, active, total_activity = 0, 0.0, 0.0, 0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x, y = task.encode(task.x_test[start:stop]).to(device), task.y_test[start:stop].to(device)
        logits, activity = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        active += (activity != 0).float().sum().item()
        total_activity += activity.numel()
    model.train(was_training)
    return {"accuracy": correct / n, "loss": loss_sum / n, "activity_sparsity": 1.0 - active / total_activity,
            "samples": n}


class ClassificationJob:
    """Sequence classification (MNIST-1D, sequential MNIST, Fashion-MNIST)."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.task = load_task(cfg.task, cfg.data_dir or None, cfg.download, cfg.levels)
        self.model = build_classifier(cfg, self.task.n_inputs, self.task.n_classes).to(cfg.device)
        self.n_train = len(self.task.y_train)
        # issue 10: under DDP each process takes its share of every global batch (one process: all of it)
        self.batch_size = distributed.local_batch_size(cfg.batch_size)
        self.steps_per_epoch = math.ceil(distributed.shard_size(self.n_train) / self.batch_size)
        self._orders: dict[int, Tensor] = {}

    def parameter_groups(self) -> list[dict[str, Any]]:
        return parameter_groups(self.model, self.cfg)

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """The encoded inputs and labels of optimiser step ``step`` (same order on resume)."""
        cfg = self.cfg
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch not in self._orders:
            self._orders = {epoch: distributed.epoch_order(self.n_train, cfg.seed, epoch)}
        index = self._orders[epoch][position * self.batch_size:(position + 1) * self.batch_size]
        return self.task.encode(self.task.x_train[index]).to(cfg.device), self.task.y_train[index].to(cfg.device)

    def loss(self, step: int) -> tuple[Tensor, dict[str, float]]:
        cfg = self.cfg
        x, y = self.batch(step)
        logits, activity = self.model(x)
        loss = F.cross_entropy(logits, y)
        stats = {"loss": loss.item(), "acc": (logits.argmax(-1) == y).float().mean().item(),
                 "rate": (activity != 0).float().mean().item()}
        if self.model.spiking and cfg.rate_reg > 0:
            loss = loss + cfg.rate_reg * firing_rate_loss(activity, cfg.target_rate)
        return loss, stats

    def evaluate(self, limit: int = 0) -> dict[str, float]:
        return evaluate(self.model, self.task, limit=limit, device=self.cfg.device)

    def summary(self, result: dict[str, float]) -> dict[str, Any]:
        return {"test_accuracy": result["accuracy"], "test_loss": result["loss"],
                "activity_sparsity": {"layer0": result["activity_sparsity"]}}

    def state_tensors(self) -> dict[str, Tensor]:
        return {}  # every batch starts from a zero state

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Nothing to restore: every batch starts from a zero state."""


def make_job(cfg: TrainConfig) -> Job:
    from .tasks.registry import LANGUAGE_TASKS

    if cfg.learning != "bptt":  # issue 9: local learning rules have their own job
        from .learning.eprop_job import make_local_learning_job

        return make_local_learning_job(cfg)
    if cfg.task in LANGUAGE_TASKS:
        from .train_lm import LanguageModelJob

        return LanguageModelJob(cfg)
    if cfg.model == "delay-snn":  # issue 8: spike-time loss, first-spike decision
        from .train_delays import DelayJob

        return DelayJob(cfg)
    return ClassificationJob(cfg)


# ------------------------------------------------------------------------------ the loop
def fit(cfg: TrainConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train according to ``cfg`` and return the metrics dict (also written to metrics.json)."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    # Vanishing gradients through long sequences pass through subnormal floats, which are
    # ~10× slower on x86 (shared/bench/perf-anchors.md); flushing them changes nothing visible.
    torch.set_flush_denormal(True)
    # Large per-step buffers are reused instead of mapped afresh every step (page faults were
    # 10-33 % of a fused training step on long sequences; ranvier/core/allocator.py).
    keep_freed_memory()
    ddp = distributed.setup(cfg)  # issue 10: joins torchrun's process group; a no-op in one process
    run_dir = cfg.run_dir()
    ckpt_path = run_dir / CHECKPOINT
    if resume and not ckpt_path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir}")
    if not resume and ckpt_path.exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or --out to start a new one")
    run_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    job = make_job(cfg)
    model = job.model
    job.model = distributed.wrap(model, ddp)  # DDP averages gradients; `model` stays the bare module
    optimizer = torch.optim.Adam(job.parameter_groups(), lr=cfg.lr, betas=(cfg.adam_beta1, 0.999),
                                 weight_decay=cfg.weight_decay)
    optimizer = sparsify_optimizer(optimizer, model, cfg)  # issue 7: DEEP R / pruning (unchanged when off)
    base_lrs = [group["lr"] for group in optimizer.param_groups]  # per-group multipliers stay fixed

    limits = [n for n in (cfg.epochs * job.steps_per_epoch, cfg.max_steps) if n > 0]
    total_steps = min(limits) if limits else 0  # 0: only the time budget ends the run

    step, elapsed, history = 0, 0.0, []
    if resume:
        # settings added after the run started take their defaults, so old runs stay resumable
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        saved = defaults | read_meta(ckpt_path).get("config", {})
        if _identity(saved) != _identity(dataclasses.asdict(cfg)):
            raise ValueError(f"the config differs from the one the run in {run_dir} was started with; "
                             f"resume with `ranvier train --resume --out {run_dir}`, which reads its config.toml")
        extra: dict[str, Tensor] = {}
        meta = load_checkpoint(ckpt_path, model, optimizer, extra=extra)
        job.load_state_tensors(extra)
        step, elapsed, history = meta["step"], meta["elapsed"], meta["history"]
    if ddp.is_main:
        atomic_write_text(run_dir / "config.toml", to_toml(cfg))

    def checkpoint() -> None:
        if not ddp.is_main:  # the ranks hold the same state; one writer
            return
        meta = {"step": step, "elapsed": elapsed + time.perf_counter() - t0, "history": history,
                "config": dataclasses.asdict(cfg)}
        save_checkpoint(ckpt_path, model, optimizer, meta, extra=job.state_tensors())

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps or None, initial=step, disable=not cfg.progress or not ddp.is_main,
               desc=f"{cfg.model} on {cfg.task}", unit="step", dynamic_ncols=True)
    running: dict[str, float] = {}
    updating = False  # True while parameters are half-updated: no checkpoint may be taken then
    t0 = time.perf_counter()

    def seconds() -> float:  # under DDP with a time budget, rank 0's clock (issue 10)
        return distributed.agreed_seconds(elapsed + time.perf_counter() - t0, ddp)

    model.train()
    try:
        while not _finished(cfg, step, total_steps, seconds()):
            scale = _learning_rate(cfg, step, total_steps, seconds()) / cfg.lr
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * scale
            loss, stats = job.loss(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            updating = True
            optimizer.step()
            step += 1
            updating = False
            # exponential running averages for the progress bar and the per-epoch history
            running = {k: v if k not in running else 0.9 * running[k] + 0.1 * v for k, v in stats.items()}
            bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()}, refresh=False)
            bar.update(1)
            if cfg.eval_every > 0 and step % cfg.eval_every == 0 and step != total_steps:
                result = job.evaluate(limit=cfg.eval_samples)
                history.append({"step": step, "time": elapsed + time.perf_counter() - t0, **result})
                bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()))
            if step % job.steps_per_epoch == 0:
                history.append({"step": step, "epoch": step // job.steps_per_epoch,
                                **{f"train_{k}": v for k, v in running.items()}})
            if step % job.steps_per_epoch == 0 or step % cfg.checkpoint_every == 0:
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
    except RuntimeError as err:  # issue 10: a lost DDP worker surfaces as a failed collective
        distributed.raise_if_worker_lost(err, ddp, run_dir)
        raise
    bar.close()
    train_time = elapsed + time.perf_counter() - t0
    checkpoint()

    result = job.evaluate()
    history.append({"step": step, "time": train_time, **result})
    metrics = {
        "task": cfg.task,
        "model": cfg.model,
        **job.summary(result),
        "parameters": sum(p.numel() for p in model.parameters()),
        "connection_sparsity": connection_sparsity(model),  # issue 7: masked weights count as zero
        "steps": step,
        "train_seconds": train_time,
        "history": history,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    if ddp.is_main:
        atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
        from .report import write_report

        write_report(run_dir, plots=False)  # report.json + report.md; `ranvier report` adds the plots
    distributed.teardown(ddp)
    return metrics
