"""``ranvier train --learning eprop``: the classification job with gradients from online e-prop.

The training loop (:func:`ranvier.train.fit`) is unchanged: the job's ``loss`` runs the batch
online through :class:`~ranvier.learning.eprop.EProp` and returns a scalar whose ``backward()``
deposits the e-prop gradients (:func:`~ranvier.learning.eprop.gradient_as_loss`), so gradient
clipping, checkpoints and resumption work as for BPTT. Evaluation runs the model's ordinary
forward pass (the same network).
"""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ..config import TrainConfig
from ..train import ClassificationJob
from .eprop import FEEDBACK_MODES, EProp, gradient_as_loss

__all__ = ["LEARNING_RULES", "EPROP_MODELS", "EPropClassificationJob", "make_local_learning_job"]

LEARNING_RULES = ("bptt", "eprop")
EPROP_MODELS = ("lif", "alif", "lsnn")


def make_local_learning_job(cfg: TrainConfig) -> EPropClassificationJob:
    """The job for ``cfg.learning`` other than ``"bptt"``; a clear error for what it cannot train."""
    from ..tasks.registry import LANGUAGE_TASKS

    if cfg.learning not in LEARNING_RULES:
        raise ValueError(f"unknown learning rule {cfg.learning!r}; choose one of {', '.join(LEARNING_RULES)}")
    if cfg.model not in EPROP_MODELS:
        raise ValueError(f"--learning eprop trains the spiking models {', '.join(EPROP_MODELS)}, not {cfg.model!r} "
                         "(e-prop needs eligibility traces of LIF/ALIF neurons); use --learning bptt")
    if cfg.task in LANGUAGE_TASKS:
        raise ValueError(f"--learning eprop supports the classification tasks, not {cfg.task}")
    if cfg.feedback not in FEEDBACK_MODES:
        raise ValueError(f"unknown feedback {cfg.feedback!r}; choose one of {', '.join(FEEDBACK_MODES)}")
    return EPropClassificationJob(cfg)


class EPropClassificationJob(ClassificationJob):
    """:class:`~ranvier.train.ClassificationJob` trained by online e-prop (SCIENCE.md §7)."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.eprop = EProp(self.model.core, self.model.readout, feedback=cfg.feedback, filter_traces=cfg.filter_traces,
                           rate_reg=cfg.rate_reg, target_rate=cfg.target_rate,
                           feedback_decay=cfg.feedback_decay).to(cfg.device)

    def parameter_groups(self) -> list[dict[str, Any]]:
        groups = super().parameter_groups()
        if self.eprop.feedback == "adaptive":
            groups.append({"params": [self.eprop.feedback_weight]})
        return groups

    def loss(self, step: int) -> tuple[Tensor, dict[str, float]]:
        cfg = self.cfg
        x, y = self.batch(step)
        logits, state = self.eprop.classification_gradients(x, y, readout_steps=self.model.readout_steps,
                                                            repeat=self.model.repeat)
        value = F.cross_entropy(logits, y)
        samples = state.steps * x.shape[0]
        rate = state.spike_sum / samples  # the mean spike output per unit (dt = 1, as BPTT's regulariser)
        stats = {"loss": value.item(), "acc": (logits.argmax(-1) == y).float().mean().item(), "rate": rate.mean().item()}
        if cfg.rate_reg > 0:
            value = value + cfg.rate_reg * ((rate - cfg.target_rate) ** 2).sum()
        params = self.eprop.parameters_by_name()
        grads = {params[name]: g for name, g in self.eprop.gradients(state).items()}
        return gradient_as_loss(grads, value), stats

    def state_tensors(self) -> dict[str, Tensor]:
        if self.eprop.feedback_weight is None:
            return {}
        return {"eprop_feedback": self.eprop.feedback_weight.detach()}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        if self.eprop.feedback_weight is not None:
            self.eprop.feedback_weight.data.copy_(tensors["eprop_feedback"])
