"""Checkpoints as one safetensors file, written atomically (no pickle anywhere).

Layout: ``model/<state_dict key>``, ``optim/<param index>/<state name>``, ``rng/torch``; the
optimiser's param groups and the caller's ``meta`` dict go into the safetensors metadata as JSON.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .sparse.masks import register_missing_masks

__all__ = ["save_checkpoint", "load_checkpoint", "read_meta", "atomic_write_text", "CheckpointError"]

FORMAT = "ranvier-checkpoint-1"

class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the model."""

def _fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half

def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    _fsync_replace(tmp, path)

def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    meta: dict[str, Any] | None = None, extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write model (and optimiser, RNG) state to ``path`` atomically.

    ``extra`` holds further tensors the caller needs to resume exactly (e.g. the recurrent state
    a language model carries across batches).
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        tensors[f"model/{key}"] = value.detach().contiguous().clone()
    groups: list[dict[str, Any]] = []
    scalars: dict[str, Any] = {}
    if optimizer is not None:
        state = optimizer.state_dict()
        groups = state["param_groups"]
        for index, entries in state["state"].items():
            for name, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim/{index}/{name}"] = value.detach().contiguous().clone()
                else:
                    scalars[f"{index}/{name}"] = value
    for key, value in (extra or {}).items():
        tensors[f"extra/{key}"] = value.detach().contiguous().clone()
    tensors["rng/torch"] = torch.get_rng_state()
    metadata = {
        "format": FORMAT,
        "meta": json.dumps(meta or {}),
        "param_groups": json.dumps(groups),
        "optim_scalars": json.dumps(scalars),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    _fsync_replace(tmp, path)


def _metadata(path: Path) -> dict[str, str]:
    """The safetensors metadata of a ranvier checkpoint; raises CheckpointError otherwise."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: {err}") from err
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ranvier checkpoint (format {metadata.get('format')!r})")
    return metadata


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` dict of a checkpoint, without loading its tensors."""
    return json.loads(_metadata(Path(path))["meta"])


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    restore_rng: bool = True, extra: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; returns its ``meta`` dict.

    If ``extra`` is a dict, the saved extra tensors are put into it.
    """
    path = Path(path)
    metadata = _metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: {err}") from err
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    register_missing_masks(model, model_state)  # masks installed after construction (pruning, rewiring)
    try:
        model.load_state_dict(model_state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not fit this model: {err}") from err
    if optimizer is not None:
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = value
        for key, value in json.loads(metadata["optim_scalars"]).items():
            index, name = key.split("/", 1)
            state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
    if extra is not None:
        extra.update({k[len("extra/"):]: v for k, v in tensors.items() if k.startswith("extra/")})
    if restore_rng:
        torch.set_rng_state(tensors["rng/torch"])
    return json.loads(metadata["meta"])
