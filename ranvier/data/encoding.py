"""Input encodings for sequential (pixel-by-pixel) MNIST. Batch-first: ``[batch, time, channel]``.

Threshold-crossing encoding, as in the LSNN sequential-MNIST tutorial
(IGITUGraz/LSNN-official, ``bin/tutorial_sequential_mnist_with_LSNN.py``, ``find_onset_offset`` and
``get_data_dict``; BSD licence; re-implemented here, vectorised, from its semantics):

* Pixels are ``float32(p) * (1/255)`` in [0, 1] (TensorFlow's ``input_data`` loader scales them
  this way), in raster order, one pixel per step. With ``ext_time > 1`` each pixel is repeated
  ``ext_time`` consecutive steps (``np.repeat(..., axis=1)``) *before* encoding.
* Thresholds are ``np.linspace(0, 1, n_in // 2)`` = 40 values ``k/39``.
* For every threshold ``thr < 1`` two channels, in the order (onset, offset), with
  ``lower = y < thr`` and ``higher = y >= thr``:
  onset fires at step ``t`` when ``lower[t] and higher[t + 1]``, offset when ``higher[t] and
  lower[t + 1]``. The spike sits on the step *before* the crossing pixel; the last image step
  never carries an onset/offset spike, and there is no implicit 0 before the first pixel (a bright
  first pixel gives no onset). Threshold 0 can never be crossed (no pixel is < 0), so channels 0
  and 1 are always silent; they are kept for the reference's layout.
* Threshold exactly 1 (the last) gets one "touch" channel firing on *every* step where
  ``y == 1`` (pixel value 255), not only on transitions.
* Channels are concatenated per threshold in increasing order:
  ``[on_0, off_0, on_1, off_1, ..., on_38, off_38, touch]`` = 79 channels.
* Then ``2 * 28 * ext_time`` zero steps are appended and one extra last channel (the output
  cue) is 1 exactly on those appended steps; every other channel is 0 there. Total 80 channels,
  ``T = (784 + 56) * ext_time``.

Implementation: an output row depends only on the current and the next pixel value, so the
encoder maps pixels to a handful of states and gathers whole rows from a small precomputed table
(one ``embedding`` call writes the result). The table is built with the reference's float32
arithmetic; float32 and float64 comparisons agree for every ``n_thresholds`` up to 256, including
exact ties such as pixel 85 vs threshold 13/39 = 1/3, which counts as reached.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["latency_code", "level_crossing", "n_channels_threshold_crossing", "pixel_sequence", "threshold_crossing"]


def _check_images(images: torch.Tensor) -> torch.Tensor:
    """Validate uint8 ``[B, ...]`` images and flatten them to ``[B, P]`` in raster order."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images (raw 0..255), got {images.dtype}")
    if images.dim() < 2:
        raise ValueError(f"expected images of shape [B, 28, 28] (or [B, P]), got {tuple(images.shape)}")
    return images.reshape(images.shape[0], -1)


def pixel_sequence(images: torch.Tensor) -> torch.Tensor:
    """Grey levels as a sequence: uint8 ``[B, 28, 28]`` -> float32 ``[B, 784, 1]``, values ``p / 255``.

    Time step ``t`` holds pixel ``(t // 28, t % 28)`` (raster order).
    """
    return (_check_images(images).to(torch.float32) / 255.0).unsqueeze(-1)


def n_channels_threshold_crossing(n_thresholds: int = 40) -> int:
    """Input channels of :func:`threshold_crossing`: onset+offset per threshold < 1, touch, cue."""
    return 2 * (n_thresholds - 1) + 1 + 1


@functools.lru_cache(maxsize=None)
def _tables(n_thresholds: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Lookup tables for :func:`threshold_crossing`.

    A pixel matters only through its *state*: which thresholds it reaches and whether it is 255.

    Returns:
        ``state``: int64 ``[256]``, pixel value -> state id (S = 40 states for 40 thresholds);
        ``rows``: float32 ``[S * (S + 1) + 1, C]``; row ``a * (S + 1) + b`` is the output of a step
        in state ``a`` followed by state ``b``, ``b = S`` marks the last image step (nothing
        follows, so only touch can fire); the final row is a cue step; and ``S``.
    """
    y = np.arange(256, dtype=np.float32) * np.float32(1.0 / 255.0)  # TF input_data scaling
    thr = np.linspace(0.0, 1.0, n_thresholds)[:-1]  # the last threshold (exactly 1) is "touch"
    features = np.concatenate([y[:, None] >= thr[None, :], (y == 1.0)[:, None]], axis=1)
    uniq, state = torch.unique(torch.from_numpy(features), dim=0, return_inverse=True)
    n_states, n_pairs = uniq.shape[0], n_thresholds - 1
    higher, touch = uniq[:, :-1], uniq[:, -1]

    rows = torch.zeros(n_states, n_states + 1, n_channels_threshold_crossing(n_thresholds))
    now, nxt = higher[:, None, :], higher[None, :, :]
    rows[:, :n_states, 0 : 2 * n_pairs : 2] = (~now & nxt).float()  # onset: below now, reached next
    rows[:, :n_states, 1 : 2 * n_pairs : 2] = (now & ~nxt).float()  # offset: reached now, below next
    rows[:, :, 2 * n_pairs] = touch[:, None].float()  # touch: on every step at y == 1
    cue = torch.zeros(1, rows.shape[-1])
    cue[0, -1] = 1.0
    return state, torch.cat([rows.flatten(0, 1), cue]), n_states


def threshold_crossing(
    images: torch.Tensor, n_thresholds: int = 40, ext_time: int = 1, cue_steps: int = 56
) -> torch.Tensor:
    """LSNN threshold-crossing spike encoding of sequential MNIST (see the module docstring).

    Args:
        images: uint8 ``[B, 28, 28]`` (any ``[B, ...]`` is flattened in raster order; P pixels).
        n_thresholds: thresholds ``linspace(0, 1, n_thresholds)``; the reference uses ``n_in // 2 = 40``.
        ext_time: steps per pixel (and per cue step).
        cue_steps: cue length in pixel units; the reference uses ``2 * 28 = 56``.

    Returns:
        float32 ``[B, (P + cue_steps) * ext_time, 2 * (n_thresholds - 1) + 2]`` with values in {0, 1}.
        Channel ``2k`` / ``2k + 1`` = onset / offset of threshold ``k / (n_thresholds - 1)``,
        channel ``-2`` = touch (pixel == 255), channel ``-1`` = output cue.
        For MNIST with defaults: ``[B, 840, 80]``.
    """
    if n_thresholds < 2:
        raise ValueError(f"n_thresholds must be >= 2, got {n_thresholds}")
    if ext_time < 1 or cue_steps < 0:
        raise ValueError(f"need ext_time >= 1 and cue_steps >= 0, got {ext_time}, {cue_steps}")
    x = _check_images(images)
    if ext_time > 1:
        x = x.repeat_interleave(ext_time, dim=1)  # repeat pixels *before* encoding, as the reference
    state, rows, n_states = _tables(n_thresholds)
    state, rows = state.to(x.device), rows.to(x.device)
    batch, steps = x.shape

    s = state[x.long()]  # [B, steps] pixel states
    idx = torch.empty(batch, steps + cue_steps * ext_time, dtype=torch.long, device=x.device)
    idx[:, : steps - 1] = s[:, :-1] * (n_states + 1) + s[:, 1:]  # crossings land on the earlier step
    idx[:, steps - 1] = s[:, -1] * (n_states + 1) + n_states  # last image step: nothing follows
    idx[:, steps:] = rows.shape[0] - 1  # cue period
    # One gather writes the whole float32 result; that write dominates the run time.
    return torch.nn.functional.embedding(idx, rows)


def level_crossing(signal: torch.Tensor, levels: torch.Tensor, initial: float = 0.0) -> torch.Tensor:
    """Onset/offset spikes of an analog signal crossing fixed levels (a population code).

    The 1-D analogue of the LSNN threshold-crossing encoding, used for MNIST-1D. Unlike the
    image encoder it is causal: the spike sits on the step where the crossing happens.

    Args:
        signal: float ``[B, T]``.
        levels: float ``[K]`` crossing levels.
        initial: the value assumed before the first step (signals start from rest).

    Returns:
        float32 ``[B, T, 2K]``: channel ``k`` fires at step ``t`` when ``x_{t−1} < L_k ≤ x_t``
        (upward), channel ``K + k`` when ``x_{t−1} ≥ L_k > x_t`` (downward).
    """
    if signal.dim() != 2:
        raise ValueError(f"signal must be [B, T], got shape {tuple(signal.shape)}")
    x = signal.unsqueeze(-1)  # [B, T, 1]
    previous = torch.cat([torch.full_like(x[:, :1], initial), x[:, :-1]], dim=1)  # [B, T, 1]
    up = (previous < levels) & (x >= levels)  # [B, T, K]
    down = (previous >= levels) & (x < levels)
    return torch.cat([up, down], dim=-1).to(torch.float32)


def latency_code(images: torch.Tensor, bins: int = 4, steps: int = 10) -> torch.Tensor:
    """Time-to-first-spike code of images, as in "Beyond Weights" (SCIENCE.md §4.3).

    Every pixel spikes at most once: its grey level is quantised into ``bins`` levels and brighter
    pixels spike earlier; black pixels never spike. The ``steps − bins`` steps after the last bin
    are silence, time for the delays to act. Level ``L = ⌈bins·p/255⌉ ∈ {1..bins}`` for ``p > 0``
    spikes at step ``bins − L`` (``p = 255`` at step 0). The reference bins ``p/255`` into
    ``[2/3, 1), [1/3, 2/3), [0, 1/3)`` and never spikes for ``p = 255`` exactly; this version gives
    every non-zero pixel a spike.

    Args:
        images: uint8 ``[B, H, W]`` (or ``[B, P]``), raw 0..255.
        bins: spike times used by the image (the reference: 4).
        steps: sequence length (the reference: 10); at least ``bins``.

    Returns:
        float32 ``[B, steps, P]`` (batch-first, like the other encoders), values in {0, 1}.

    Example::

        >>> latency_code(torch.tensor([[0, 1, 128, 255]], dtype=torch.uint8), steps=5)[0].t()
        tensor([[0., 0., 0., 0., 0.],
                [0., 0., 0., 1., 0.],
                [0., 1., 0., 0., 0.],
                [1., 0., 0., 0., 0.]])
    """
    if bins < 1 or steps < bins:
        raise ValueError(f"need bins >= 1 and steps >= bins, got bins={bins}, steps={steps}")
    x = _check_images(images).long()
    level = (x * bins + 254) // 255  # ⌈bins·p/255⌉ in integers: 0 for black, bins for 255
    step = torch.where(level > 0, bins - level, torch.full_like(level, steps))  # `steps`: no spike
    out = torch.zeros(x.shape[0], steps + 1, x.shape[1], dtype=torch.float32, device=x.device)
    out.scatter_(1, step.unsqueeze(1), 1.0)
    return out[:, :steps]
