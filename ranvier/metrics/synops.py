"""Synaptic operations (NeuroBench ``Effective_MACs`` / ``Effective_ACs`` / ``Dense``), the
elementwise work of an EGRU cell, and the cost of the backward pass.

NeuroBench 2.3.0 rules (``neurobench/metrics/utils/layers``, LANDSCAPE.md §4), reproduced here
from recorded tensors instead of forward hooks:

1. Each forward call of a connection (for a recurrent network: each time step) is counted on its
   own. Its input ``x`` and weight ``W`` are binarised: ``x_b = 1[x ≠ 0]``, ``W_b = 1[W ≠ 0]``.
2. ``ops = Σ (W_b · x_b)`` over outputs and batch = the number of (non-zero input, non-zero
   weight) pairs. The bias is not an operation. Zero and masked weights are **not** counted.
3. The call is "spiking" iff every entry of ``x`` is in {−1, 0, 1}; its ops then add to
   ``Effective_ACs``, else to ``Effective_MACs``. The check is per call, over the whole batch.
4. ``Dense`` = the same count with ``x`` and ``W`` all ones (every weight, zero or masked ones
   included, times every input position).
5. All totals are summed over calls and divided by the number of samples (the batch size):
   **per sample**, not per time step.

Counts are exact integers (int64). NeuroBench sums the binarised layer output in the layer's
dtype, so beyond 2^24 operations in one float32 call its own count can be off by rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..sparse.masks import effective_weight, get_mask

__all__ = [
    "SynOps",
    "is_spiking",
    "linear_synops",
    "recurrent_synops",
    "egru_synops",
    "layer_synops",
    "ElementwiseOps",
    "egru_elementwise_ops",
    "TrainingCost",
    "training_cost",
    "BACKWARD_MACS_PER_FORWARD_MAC",
]


@dataclass(frozen=True)
class SynOps:
    """Synaptic-operation totals of one batch, with NeuroBench's per-sample view.

    Attributes:
        mac_total: operations on graded inputs, summed over calls and samples.
        ac_total: operations on {−1, 0, 1} ("spiking") inputs.
        dense_total: all (input position, weight) pairs, zero weights and zero inputs included.
        samples: the number of samples the totals cover (NeuroBench's divisor).

    ``a + b`` (or ``sum([a, b])``) adds two connections (or layers) of the **same** batch;
    ``a.merge_batch(b)`` adds another batch, as NeuroBench accumulates over a data loader (ops and
    samples both summed).
    """

    mac_total: int = 0
    ac_total: int = 0
    dense_total: int = 0
    samples: int = 1

    @property
    def effective_macs(self) -> float:
        """NeuroBench ``Effective_MACs``: ``mac_total / samples``."""
        return self.mac_total / self.samples

    @property
    def effective_acs(self) -> float:
        """NeuroBench ``Effective_ACs``: ``ac_total / samples``."""
        return self.ac_total / self.samples

    @property
    def dense(self) -> float:
        """NeuroBench ``Dense``: ``dense_total / samples``."""
        return self.dense_total / self.samples

    @property
    def effective(self) -> float:
        """Effective MACs + ACs per sample."""
        return (self.mac_total + self.ac_total) / self.samples

    def __add__(self, other: SynOps) -> SynOps:
        if not isinstance(other, SynOps):
            return NotImplemented
        if other.samples != self.samples:
            raise ValueError(f"cannot add SynOps over {self.samples} and {other.samples} samples; "
                             "use merge_batch to add another batch")
        return SynOps(self.mac_total + other.mac_total, self.ac_total + other.ac_total,
                      self.dense_total + other.dense_total, self.samples)

    def __radd__(self, other: object) -> SynOps:
        if isinstance(other, int) and other == 0:  # sum([...]) starts from 0
            return self
        return NotImplemented

    def merge_batch(self, other: SynOps) -> SynOps:
        """Counts of this batch and ``other`` together (ops and samples summed)."""
        return SynOps(self.mac_total + other.mac_total, self.ac_total + other.ac_total,
                      self.dense_total + other.dense_total, self.samples + other.samples)

    def as_neurobench(self) -> dict[str, float]:
        """``{"Effective_MACs", "Effective_ACs", "Dense"}`` as NeuroBench's SynapticOperations."""
        return {"Effective_MACs": self.effective_macs, "Effective_ACs": self.effective_acs, "Dense": self.dense}


def is_spiking(x: Tensor) -> bool:
    """NeuroBench's test for a spiking input: every entry is −1, 0 or 1 (NaN is not)."""
    return not bool(((x != 0) & (x != 1) & (x != -1)).any())


def _as_calls(x: Tensor) -> Tensor:
    if x.dim() < 2:
        raise ValueError(f"input must be [T, B, ..., I] (or [B, I] for one call), got shape {tuple(x.shape)}")
    return x.unsqueeze(0) if x.dim() == 2 else x


def linear_synops(x: Tensor, weight: Tensor, *, mask: Tensor | None = None, spiking: bool | None = None) -> SynOps:
    """Synaptic operations of a dense connection ``out = W x`` called once per time step.

    For each call t (NeuroBench rules in the module docstring)::

        ops_t   = Σ_{b,o,i} 1[x_{t,b,i} ≠ 0] · 1[W_{o,i} ≠ 0] = Σ_i nnz(x_{t,:,i}) · nnz(W_{:,i})
        dense_t = B · O · I
        ops_t → Effective_ACs if x_t ∈ {−1,0,1} everywhere else Effective_MACs

    and every total is divided by ``B``.

    Args:
        x: ``[T, B, ..., I]``: T calls, each on a ``[B, ..., I]`` input (extra dims are positions
            that one call processes, e.g. ``x[None]`` for a Linear applied once to ``[B, L, I]``);
            a ``[B, I]`` tensor is one call.
        weight: ``[O, I]`` (``nn.Linear.weight`` layout).
        mask: optional ``[O, I]``; the effective weight is ``weight · mask`` (masked = zero).
        spiking: force the AC (``True``) or MAC (``False``) class for every call instead of
            NeuroBench's per-call test.

    Example::

        >>> w = torch.tensor([[1.0, 0.0], [2.0, 3.0]])      # column non-zeros: 2, 1
        >>> x = torch.tensor([[[1.0, 1.0]], [[0.0, 1.0]]])  # T=2, B=1: spikes
        >>> linear_synops(x, w).as_neurobench()               # (2 + 1) + (1) ACs; dense 2·4
        {'Effective_MACs': 0.0, 'Effective_ACs': 4.0, 'Dense': 8.0}
    """
    x = _as_calls(x)
    if weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"weight must be [O, I={x.shape[-1]}], got shape {tuple(weight.shape)}")
    w = weight if mask is None else weight * mask
    steps, batch, n_in = x.shape[0], x.shape[1], x.shape[-1]
    col_nnz = (w != 0).sum(dim=0).to(torch.int64)  # [I]: non-zero weights leaving each input
    calls = x.detach().reshape(steps, -1, n_in)  # [T, B·positions, I]
    in_nnz = (calls != 0).sum(dim=1).to(torch.int64)  # [T, I]
    ops = (in_nnz * col_nnz.to(in_nnz.device)).sum(dim=1)  # [T]
    if spiking is None:
        graded = ((calls != 0) & (calls != 1) & (calls != -1)).reshape(steps, -1).any(dim=1)
        is_ac = ~graded
    else:
        is_ac = torch.full((steps,), bool(spiking), device=ops.device)
    ac = int(ops[is_ac].sum())
    mac = int(ops[~is_ac].sum())
    dense = steps * calls.shape[1] * weight.shape[0] * n_in
    return SynOps(mac, ac, dense, batch)


def _shift(sequence: Tensor, first: Tensor | None) -> Tensor:
    """``[s_{−1}, s_0, …, s_{T−2}]`` with ``s_{−1} = first`` (zeros by default)."""
    head = torch.zeros_like(sequence[:1]) if first is None else first.unsqueeze(0).to(sequence)
    return torch.cat([head, sequence[:-1]], dim=0)


def recurrent_synops(
    x: Tensor,
    z: Tensor,
    input_weight: Tensor,
    recurrent_weight: Tensor | None = None,
    *,
    recurrent_mask: Tensor | None = None,
    z0: Tensor | None = None,
    input_spiking: bool | None = None,
    recurrent_spiking: bool | None = None,
) -> SynOps:
    """Synaptic operations of a recurrent spiking layer ``I_t = W_in x_t + (W_rec ⊙ M) z_{t−1}``.

    ``= linear_synops(x, W_in) + linear_synops([z_{−1}, z_0, …, z_{T−2}], W_rec, mask=M)``: two
    connections, each called at every step (as ranvier's LIF/ALIF layers and an nn.Linear-built
    RSNN do; at t = 0 the recurrent input is ``z_{−1}``, zeros by default, so it adds 0 effective
    but ``H·H`` dense operations per sample). Binary spikes z ∈ {0, 1} count as ACs; spikes
    scaled by ``1/dt ≠ 1`` are graded for NeuroBench and count as MACs.

    Args:
        x: input ``[T, B, I]``; z: the layer's spikes ``[T, B, H]``.
        input_weight: ``[H, I]``; recurrent_weight: ``[H, H]`` or None (feed-forward layer).
        recurrent_mask: ``[H, H]`` connectivity mask (ranvier's ``recurrent_mask``).
        z0: spikes before step 0 ``[B, H]`` (default zeros).
        input_spiking, recurrent_spiking: override the per-call AC/MAC test.
    """
    ops = linear_synops(x, input_weight, spiking=input_spiking)
    if recurrent_weight is not None:
        ops = ops + linear_synops(_shift(z, z0), recurrent_weight, mask=recurrent_mask, spiking=recurrent_spiking)
    return ops


def egru_synops(
    x: Tensor,
    y: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    *,
    y0: Tensor | None = None,
    mask_ih: Tensor | None = None,
    mask_hh: Tensor | None = None,
    spiking: bool | None = None,
) -> SynOps:
    """Synaptic operations of an EGRU layer (EvNN code form, SCIENCE.md §3.3)::

        Wx_t = W_ih x_t          W_ih: [3H, I], rows [z | r | g]
        Rh_t = W_hh y_{t−1}      W_hh: [3H, H], y = o ⊙ ĉ the graded event output

    ``= linear_synops(x, W_ih) + linear_synops([y_{−1}, y_0, …, y_{T−2}], W_hh)``: the pairs of
    (non-zero input, non-zero weight) of both gate matmuls. Graded events make the recurrent
    calls MACs (NeuroBench's per-call test is kept: a step where every event equals ±1 would be
    an AC step; ``spiking=False`` forces MACs). This is what NeuroBench counts for an EGRU whose
    two matmuls are ``nn.Linear`` modules. The reset gate ``r ⊙ (Rh_g + b)`` acts after the
    matmul and adds no synaptic operation; the elementwise gate math is counted separately by
    :func:`egru_elementwise_ops` (NeuroBench's ``nn.GRUCell`` count instead adds binarised
    elementwise terms into its MACs).

    Args:
        x: ``[T, B, I]``; y: event outputs ``[T, B, H]``; y0: ``y_{−1}`` ``[B, H]`` (default 0).
        mask_ih, mask_hh: optional masks (effective weight = weight · mask).
    """
    if weight_ih.shape[0] % 3 or weight_hh.shape[0] != weight_ih.shape[0] or weight_hh.shape[1] * 3 != weight_hh.shape[0]:
        raise ValueError(f"EGRU weights must be [3H, I] and [3H, H]; got {tuple(weight_ih.shape)} and {tuple(weight_hh.shape)}")
    return (linear_synops(x, weight_ih, mask=mask_ih, spiking=spiking)
            + linear_synops(_shift(y, y0), weight_hh, mask=mask_hh, spiking=spiking))


def layer_synops(layer: Any, x: Tensor, output: Tensor) -> SynOps:
    """Dispatch on a layer's weights (duck-typed, so no model import is needed).

    * ``input_weight`` (ranvier LIF/ALIF): :func:`recurrent_synops` with ``input_weight · input_mask``
      (when masked), ``recurrent_weight`` and ``recurrent_mask``;
    * ``weight_ih`` and ``weight_hh`` (ranvier EGRU): :func:`egru_synops` (``mask_ih``/``mask_hh``
      when present);
    * ``weight`` (``nn.Linear``, ``MaskedLinear``): :func:`linear_synops`, with its ``mask`` when
      present (``output`` unused).

    ``x`` / ``output`` are in the layer's layout: ``[B, T, ·]`` when ``layer.batch_first``.
    """
    if getattr(layer, "batch_first", False):
        x, output = x.transpose(0, 1), output.transpose(0, 1)
    if isinstance(getattr(layer, "input_weight", None), Tensor):
        w_in = effective_weight(layer, "input_weight")
        return recurrent_synops(x, output, w_in, getattr(layer, "recurrent_weight", None),
                                recurrent_mask=getattr(layer, "recurrent_mask", None))
    if isinstance(getattr(layer, "weight_ih", None), Tensor) and isinstance(getattr(layer, "weight_hh", None), Tensor):
        masks = {k: getattr(layer, k) for k in ("mask_ih", "mask_hh") if isinstance(getattr(layer, k, None), Tensor)}
        return egru_synops(x, output, layer.weight_ih, layer.weight_hh, **masks)
    if isinstance(getattr(layer, "weight", None), Tensor):
        return linear_synops(x, layer.weight, mask=get_mask(layer, "weight"))
    raise TypeError(f"layer_synops: no known connection weights on {type(layer).__name__}")


@dataclass(frozen=True)
class ElementwiseOps:
    """Elementwise (non-synaptic) operations per sample; not part of NeuroBench's synops."""

    mults: int = 0
    adds: int = 0
    nonlinear: int = 0
    compares: int = 0

    def __add__(self, other: ElementwiseOps) -> ElementwiseOps:
        return ElementwiseOps(self.mults + other.mults, self.adds + other.adds,
                              self.nonlinear + other.nonlinear, self.compares + other.compares)


#: Per unit and step, EGRU code form (SCIENCE.md §3.3), biases excluded:
#:   z = σ(Wx_z + Rh_z)            1 add, 1 nonlinear
#:   r = σ(Wx_r + Rh_r)            1 add, 1 nonlinear
#:   g = tanh(Wx_g + r ⊙ Rh_g)     1 mult, 1 add, 1 nonlinear
#:   ĉ = z ⊙ h + (1 − z) ⊙ g       2 mults, 2 adds
#:   o = H(ĉ − ϑ)                  1 add, 1 compare
#:   y = o ⊙ ĉ                     a select, not counted
#:   h = ĉ − o ⊙ ϑ                 1 add
EGRU_UNIT_STEP = ElementwiseOps(mults=3, adds=7, nonlinear=3, compares=1)


def egru_elementwise_ops(steps: int, hidden: int, *, bias: bool = False) -> ElementwiseOps:
    """Elementwise gate math of an EGRU layer per sample: ``steps · hidden`` × (3 mults, 7 adds,
    3 nonlinearities (σ, σ, tanh), 1 compare), plus 6 adds per unit-step with ``bias`` (EvNN's
    ``bias`` and ``recurrent_bias``, 3 gates each). See ``EGRU_UNIT_STEP`` for the breakdown.

    Every unit is updated at every step in a clock-driven implementation, so this does **not**
    scale with activity (the paper's retroactive event-based update is not modelled). It is kept
    apart from synaptic operations, which NeuroBench counts for ``nn.Linear`` connections.

    Example::

        >>> egru_elementwise_ops(10, 4)
        ElementwiseOps(mults=120, adds=280, nonlinear=120, compares=40)
    """
    n = steps * hidden
    u = EGRU_UNIT_STEP
    return ElementwiseOps(mults=u.mults * n, adds=(u.adds + (6 if bias else 0)) * n,
                          nonlinear=u.nonlinear * n, compares=u.compares * n)


#: Backward MACs per forward MAC of a matmul ``y = W x``: ``∂L/∂x = Wᵀδ`` and ``∂L/∂W = δ xᵀ``
#: each cost as many MACs as the forward product (the usual "training ≈ 3× forward", e.g. the
#: C ≈ 6N FLOPs per token of Kaplan et al. 2020, "Scaling Laws for Neural Language Models").
BACKWARD_MACS_PER_FORWARD_MAC = 2


@dataclass(frozen=True)
class TrainingCost:
    """Operations per sample of one training step (forward + backward), dense vs sparse.

    * ``forward_dense`` = Dense; ``forward_effective`` = Effective MACs + ACs;
    * ``backward_dense`` = 2 · Dense;
    * ``backward_sparse`` = 2 · Dense · (1 − β̃): with sparse BPTT the error δ_j of a unit is
      zero outside its pseudo-derivative window (fraction β̃ = backward sparsity), so both
      backward products skip those rows (SCIENCE.md §3.5, §8: backward cost scales with
      1 − backward sparsity).

    The optimizer update, the loss and the elementwise backward of the neuron are not counted.
    """

    forward_dense: float
    forward_effective: float
    backward_dense: float
    backward_sparse: float
    backward_sparsity: float

    @property
    def dense(self) -> float:
        """Dense forward + dense backward."""
        return self.forward_dense + self.backward_dense

    @property
    def sparse(self) -> float:
        """Effective forward + sparse backward."""
        return self.forward_effective + self.backward_sparse


def training_cost(forward: SynOps, backward_sparsity: float) -> TrainingCost:
    """:class:`TrainingCost` of the connections into one layer whose units have backward sparsity
    β̃ (:func:`~ranvier.metrics.egru_backward_sparsity`, :func:`~ranvier.metrics.surrogate_backward_sparsity`;
    β̃ = 0 for a layer without a spike function, e.g. a readout). Sum over layers.

    Example::

        >>> c = training_cost(SynOps(mac_total=30, ac_total=0, dense_total=100), 0.75)
        >>> (c.backward_dense, c.backward_sparse, c.sparse)
        (200.0, 50.0, 80.0)
    """
    if not 0.0 <= backward_sparsity <= 1.0:
        raise ValueError(f"backward_sparsity must be in [0, 1], got {backward_sparsity}")
    backward_dense = BACKWARD_MACS_PER_FORWARD_MAC * forward.dense
    return TrainingCost(forward.dense, forward.effective, float(backward_dense),
                        float(backward_dense * (1.0 - backward_sparsity)), float(backward_sparsity))
