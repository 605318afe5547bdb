"""Data-parallel training on torch.distributed (DDP); docs/distributed.md.

``torchrun --nproc-per-node N -m ranvier train ...`` starts N processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` joins them
into one process group (gloo on CPU, nccl on CUDA). Each process builds the same model, DDP
averages the gradients, and a :class:`~torch.utils.data.distributed.DistributedSampler` gives
each process ``batch_size / world_size`` samples of every global batch. Those are the same
samples a one-process run would use, so N processes end with the weights of one (up to float
rounding). Only rank 0 writes files, prints, and draws progress bars. Without torchrun's
variables everything here is a no-op.
"""
from __future__ import annotations

import inspect
import math
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

__all__ = ["Context", "WorkerLostError", "setup", "teardown", "current", "wrap", "local_batch_size",
           "shard_size", "epoch_order", "agreed_seconds", "raise_if_worker_lost"]

ORDER_SEED = 1_000_003  # train.py's epoch order is randperm seeded seed·ORDER_SEED + epoch


class WorkerLostError(RuntimeError):
    """A collective operation failed: another training process died or was killed."""


@dataclass
class Context:
    """Where this process stands: ``rank`` of ``world_size`` (1: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    sync_clock: bool = False  # a time budget: every rank must see rank 0's clock
    owns_group: bool = False  # setup() made the process group, so teardown() ends it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value in (None, "") else int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def current() -> Context:
    """The running process group's rank and size (rank 0 of 1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return Context()


def setup(cfg: Any) -> Context:
    """Join torchrun's process group for a training run described by ``cfg`` (a TrainConfig).

    Checks first what would otherwise fail late or silently: language-model training is not
    data-parallel yet, and the global batch must split evenly over the processes.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Context()
    from .tasks.registry import LANGUAGE_TASKS

    if cfg.task in LANGUAGE_TASKS:
        raise ValueError(f"distributed (DDP) training is not supported for language models (task {cfg.task}, "
                         "ranvier/train_lm.py) yet: its batches are parallel token streams that carry state from "
                         "window to window. Run it as one process (`ranvier train ...` without torchrun).")
    if cfg.batch_size % world != 0:
        raise ValueError(f"--batch-size {cfg.batch_size} is the global batch and must be divisible by the number of "
                         f"processes ({world}): each process takes batch_size / world_size samples per step")
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    cuda = str(cfg.device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(local_rank)  # "cuda" now means this process's own GPU
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", init_method="env://")
        owns = True
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise RuntimeError(f"the process group ({dist.get_rank()} of {dist.get_world_size()}) does not match "
                           f"RANK={rank}, WORLD_SIZE={world}")
    ctx = Context(rank, world, local_rank, sync_clock=cfg.time_budget > 0, owns_group=owns)
    if not ctx.is_main:  # one voice: the other ranks print nothing for the rest of the process (errors go to stderr)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - open until the process ends
    return ctx


def teardown(ctx: Context) -> None:
    """End the process group :func:`setup` made (a silenced rank stays silent)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
        ctx.owns_group = False


class _DDP(DistributedDataParallel):
    """DDP that answers attribute look-ups its module answers (``model.spiking``, ``model.core``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(model: nn.Module, ctx: Context) -> nn.Module:
    """``model`` in DDP when distributed, else ``model`` itself.

    Buffers (time constants, thresholds, masks) are identical on every rank by construction and
    are not re-broadcast before each forward, which keeps a no-grad forward free of collectives,
    so every rank can evaluate on its own.
    """
    if not ctx.enabled:
        return model
    device_ids = [ctx.local_rank] if next(model.parameters()).is_cuda else None
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return _DDP(model, device_ids=device_ids, forward_sync_buffers=False)  # torch >= 2.12
    return _DDP(model, device_ids=device_ids, broadcast_buffers=False)


def local_batch_size(batch_size: int, ctx: Context | None = None) -> int:
    """This process's share of a global batch."""
    ctx = ctx or current()
    if batch_size % ctx.world_size != 0:
        raise ValueError(f"batch size {batch_size} is not divisible by the {ctx.world_size} processes")
    return batch_size // ctx.world_size


def shard_size(n: int, ctx: Context | None = None) -> int:
    """Samples per epoch on each process (``DistributedSampler`` pads to a multiple of world_size)."""
    ctx = ctx or current()
    return math.ceil(n / ctx.world_size)


def epoch_order(n: int, seed: int, epoch: int, ctx: Context | None = None) -> Tensor:
    """This process's sample order for ``epoch``.

    It is ``DistributedSampler`` over the permutation of a one-process run (``randperm`` seeded
    ``seed·1_000_003 + epoch``, as in ``train.py``). Rank r takes every world_size-th index from
    r, so its k-th local batch of b is part of the k-th global batch of b·world_size. When
    world_size divides n, the global batch holds exactly the one-process batch's samples. With
    one process it is that permutation itself.
    """
    ctx = ctx or current()
    sampler = DistributedSampler(range(n), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=seed * ORDER_SEED, drop_last=False)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def agreed_seconds(seconds: float, ctx: Context) -> float:
    """Rank 0's elapsed time on every rank, when a time budget ends the run or sets the lr.

    Ranks whose clocks disagreed would stop at different steps (one would hang in the next
    all-reduce) or use different learning rates.
    """
    if not (ctx.enabled and ctx.sync_clock):
        return seconds
    device = torch.device("cuda", ctx.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([seconds], dtype=torch.float64, device=device)
    dist.broadcast(value, src=0)
    return float(value.item())


_COLLECTIVE_FAILURES = ("gloo", "nccl", "connection reset", "connection closed", "connection refused",
                        "broken pipe", "timed out", "timeout")


def raise_if_worker_lost(err: BaseException, ctx: Context, run_dir: Any) -> None:
    """Turn a failed collective into an error that says what happened and how to go on.

    Other errors (and every error in one process) are left alone for the caller to re-raise.
    """
    text = str(err).lower()
    collective = isinstance(err, getattr(dist, "DistError", ())) or any(m in text for m in _COLLECTIVE_FAILURES)
    if not (ctx.enabled and collective):
        return
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    reason = reason if len(reason) <= 160 else reason[:160] + "…"
    raise WorkerLostError(
        f"distributed training stopped on rank {ctx.rank} of {ctx.world_size}: a collective operation failed "
        f"({reason}). Another worker probably died or was killed. The last checkpoint in {run_dir} "
        "is intact: rank 0 writes it atomically every checkpoint_every steps and at each epoch end. "
        f"Continue with: torchrun --nproc-per-node {ctx.world_size} -m ranvier train --resume --out {run_dir}"
    ) from err
