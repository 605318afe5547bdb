"""The one time loop.

Every recurrent module in ranvier runs through :func:`scan`. It is time-major: ``xs`` has time
on dim 0, and state has no time axis. ``batch_first`` conversion happens only at module edges.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, TypeVar

import torch
from torch import Tensor

__all__ = ["scan", "stack_tree", "detach_state"]

S = TypeVar("S")


def stack_tree(items: list[Any]) -> Any:
    """Stack a list of tensors / (Named)tuples of tensors along a new dim 0."""
    first = items[0]
    if isinstance(first, Tensor):
        return torch.stack(items, 0)
    if isinstance(first, tuple):
        stacked = [stack_tree([it[k] for it in items]) for k in range(len(first))]
        return type(first)(*stacked) if hasattr(first, "_fields") else tuple(stacked)
    raise TypeError(f"cannot stack values of type {type(first).__name__}")


def detach_state(state: S) -> S:
    """Detach every tensor of a state (a tensor, or (Named)tuples/lists of them), e.g. between
    truncated-BPTT windows. ``None`` stays ``None``."""
    if state is None:
        return state
    if isinstance(state, Tensor):
        return state.detach()  # type: ignore[return-value]
    if isinstance(state, list):
        return [detach_state(s) for s in state]  # type: ignore[return-value]
    if isinstance(state, tuple):
        parts = [detach_state(s) for s in state]
        return type(state)(*parts) if hasattr(state, "_fields") else tuple(parts)  # type: ignore[return-value]
    raise TypeError(f"cannot detach a state of type {type(state).__name__}")


def scan(
    step: Callable[[Tensor, S], tuple[Any, S]],
    xs: Tensor,
    state: S,
    *,
    record: bool = False,
) -> tuple[Any, S]:
    """Run ``out_t, state = step(x_t, state)`` over ``xs`` ``[T, ...]`` (time-major).

    Returns ``(outputs, final_state)`` where ``outputs`` stacks every ``out_t`` along dim 0.
    With ``record=True`` ``outputs`` is the pair ``(outputs, states)``, ``states`` being the
    state after every step stacked along dim 0 (for plots and tests); the number of returned
    values never changes.

    ``xs.unbind(0)`` is used rather than ``xs[t]``: indexing a tensor that requires grad once
    per step costs O(T²) in the backward pass (see shared/bench/perf-anchors.md).
    """
    if xs.shape[0] == 0:
        raise ValueError("scan: the input sequence is empty (time dimension has length 0)")
    outs, states = [], []
    for x_t in xs.unbind(0):
        out, state = step(x_t, state)
        outs.append(out)
        if record:
            states.append(state)
    outputs = stack_tree(outs)
    if record:
        return (outputs, stack_tree(states)), state
    return outputs, state
