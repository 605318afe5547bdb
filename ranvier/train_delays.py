"""Training job of the delay-only recipe (``--model delay-snn``; SCIENCE.md §4.3).

It is a :class:`~ranvier.train.ClassificationJob` whose loss is SLAYER's ``spikeTime`` loss
against a target spike train (the correct output neuron spikes at every step of a window, the
others stay silent) and whose decision is the earliest-spiking output neuron. Only the parameters
``--train`` names are optimised (``delays``: weights frozen; ``weights``: delays frozen; ``both``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .models.delay_snn import DelaySNN, first_spike_decision, spike_time_loss
from .tasks.registry import Task
from .train import ClassificationJob

__all__ = ["DelayJob", "TARGET_WINDOWS", "evaluate_delay_snn", "target_spikes"]

#: Steps ``[start, stop)`` in which the correct output neuron should spike (beyond-weights
#: ``target_spikes``: MNIST (0, 10), Fashion-MNIST (0, 6)). Other tasks: the whole sequence.
TARGET_WINDOWS = {"mnist-latency": (0, 10), "fashion-latency": (0, 6)}


def target_spikes(labels: Tensor, steps: int, n_classes: int, window: tuple[int, int] | None) -> Tensor:
    """Target output spikes ``[T, B, C]``: class ``labels[b]`` spikes on every step of ``window``."""
    start, stop = window if window is not None else (0, steps)
    target = torch.zeros(steps, labels.shape[0], n_classes)
    target[start:stop, torch.arange(labels.shape[0]), labels] = 1.0
    return target


@torch.no_grad()
def evaluate_delay_snn(model: DelaySNN, task: Task, window: tuple[int, int] | None, *, batch_size: int = 256,
                       limit: int = 0, device: str | torch.device = "cpu") -> dict[str, float]:
    """Test accuracy of the first-spike decision (no output spike counts as wrong), mean spike-time
    loss, hidden-layer activity sparsity and the fraction of samples with no output spike."""
    was_training = model.training
    model.eval()
    n = len(task.y_test) if limit <= 0 else min(limit, len(task.y_test))
    correct, loss_sum, active, total, silent = 0, 0.0, 0.0, 0, 0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x, y = task.encode(task.x_test[start:stop]).to(device), task.y_test[start:stop].to(device)
        hidden, out = model.run(x)
        kernel = model.kernel(out.shape[0], out)
        target = target_spikes(y, out.shape[0], out.shape[-1], window).to(out)
        loss_sum += spike_time_loss(out, target, kernel).item() * (stop - start)
        decision = first_spike_decision(out)
        correct += (decision == y).sum().item()
        silent += (decision < 0).sum().item()
        active += (hidden != 0).float().sum().item()
        total += hidden.numel()
    model.train(was_training)
    return {"accuracy": correct / n, "loss": loss_sum / n, "activity_sparsity": 1.0 - active / total,
            "no_output_spike": silent / n, "samples": n}


class DelayJob(ClassificationJob):
    """:class:`~ranvier.train.ClassificationJob` with the spike-time loss and first-spike decision."""

    model: DelaySNN

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.window = TARGET_WINDOWS.get(cfg.task)

    def parameter_groups(self) -> list[dict[str, Any]]:
        # Weights (scale ~10) and delays (steps, ~0-10) want different step sizes: --weight-lr.
        weights = [p for n, p in self.model.named_parameters() if p.requires_grad and not n.endswith("delay")]
        delays = [p for n, p in self.model.named_parameters() if p.requires_grad and n.endswith("delay")]
        groups = [{"params": delays}] if delays else []
        if weights:
            groups.append({"params": weights, **({"lr": self.cfg.weight_lr} if self.cfg.weight_lr > 0 else {})})
        return groups

    def loss(self, step: int) -> tuple[Tensor, dict[str, float]]:
        x, y = self.batch(step)
        hidden, out = self.model.run(x)
        target = target_spikes(y, out.shape[0], out.shape[-1], self.window).to(out)
        loss = spike_time_loss(out, target, self.model.kernel(out.shape[0], out))
        stats = {"loss": loss.item(), "acc": (first_spike_decision(out) == y).float().mean().item(),
                 "rate": (hidden != 0).float().mean().item()}
        return loss, stats

    def evaluate(self, limit: int = 0) -> dict[str, float]:
        return evaluate_delay_snn(self.model, self.task, self.window, limit=limit, device=self.cfg.device)

    def summary(self, result: dict[str, float]) -> dict[str, Any]:
        return {**super().summary(result), "no_output_spike": result["no_output_spike"]}
