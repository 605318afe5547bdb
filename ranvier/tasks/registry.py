"""The classification tasks ``ranvier train`` knows.

A task keeps its data compactly (MNIST as uint8 images) and encodes one batch at a time, because
the threshold-crossing form of all of MNIST (60 000 × 840 × 80) would not fit in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = ["Task", "TASKS", "LANGUAGE_TASKS", "load_task"]


@dataclass
class Task:
    name: str
    n_inputs: int  # input channels of the encoded sequence
    n_classes: int
    x_train: Tensor  # [N, ...] stored form
    y_train: Tensor  # [N] int64
    x_test: Tensor
    y_test: Tensor
    encode: Callable[[Tensor], Tensor]  # stored batch → float32 [B, T, n_inputs]


def _mnist1d(data_dir: str | None, download: bool, levels: int) -> Task:
    from ..data import level_crossing, load_mnist1d

    x_train, y_train, x_test, y_test = load_mnist1d()
    # The signal is standardised (std 1): levels spanning ±3 cover nearly every value.
    grid = torch.linspace(-3.0, 3.0, levels) if levels > 0 else None

    def encode(x: Tensor) -> Tensor:  # [B, 40] → [B, 40, 1 + 2·levels]: the analog value, then spikes
        analog = x.unsqueeze(-1)
        return analog if grid is None else torch.cat([analog, level_crossing(x, grid)], dim=-1)

    return Task("mnist1d", 1 + 2 * levels, 10, x_train, y_train, x_test, y_test, encode)


def _images(dataset: str, threshold: bool) -> Callable[[str | None, bool, int], Task]:
    def load(data_dir: str | None, download: bool, levels: int) -> Task:
        from ..data import load_images, n_channels_threshold_crossing, pixel_sequence, threshold_crossing

        x_train, y_train = load_images(dataset, "train", data_dir=data_dir or None, download=download)
        x_test, y_test = load_images(dataset, "test", data_dir=data_dir or None, download=download)
        name = ("smnist" if dataset == "mnist" else "fashion") + ("-threshold" if threshold else "")
        if threshold:
            return Task(name, n_channels_threshold_crossing(40), 10, x_train, y_train, x_test, y_test, threshold_crossing)
        return Task(name, 1, 10, x_train, y_train, x_test, y_test, pixel_sequence)

    return load


def _latency(dataset: str) -> Callable[[str | None, bool, int], Task]:
    """Images as one time-to-first-spike per pixel: 4 bins over 10 steps (Beyond Weights, SCIENCE.md §4.3)."""
    def load(data_dir: str | None, download: bool, levels: int) -> Task:
        from ..data import latency_code, load_images

        x_train, y_train = load_images(dataset, "train", data_dir=data_dir or None, download=download)
        x_test, y_test = load_images(dataset, "test", data_dir=data_dir or None, download=download)
        name = "mnist-latency" if dataset == "mnist" else "fashion-latency"
        return Task(name, 784, 10, x_train, y_train, x_test, y_test, latency_code)

    return load


TASKS: dict[str, Callable[[str | None, bool, int], Task]] = {
    "mnist1d": _mnist1d,
    "smnist": _images("mnist", threshold=False),
    "smnist-threshold": _images("mnist", threshold=True),
    "fashion": _images("fashion-mnist", threshold=False),
    "fashion-threshold": _images("fashion-mnist", threshold=True),
    "mnist-latency": _latency("mnist"),  # issue 8
    "fashion-latency": _latency("fashion-mnist"),
}


# Word-level language modelling: handled by ranvier.train_lm, data from ranvier.data.text.
LANGUAGE_TASKS = ("ptb", "wikitext2")


def load_task(name: str, data_dir: str | None = None, download: bool = False, levels: int = 0) -> Task:
    """Load task ``name`` (one of :data:`TASKS`) from the data root.

    ``levels`` (MNIST-1D only): add onset/offset spike channels at that many crossing levels.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    task = TASKS[name](data_dir, download, levels)
    if task.y_train.dtype != torch.int64:
        task.y_train, task.y_test = task.y_train.long(), task.y_test.long()
    return task
