"""Static and activity metrics: footprint, connection sparsity, activation sparsity, membrane
updates and backward (pseudo-derivative) sparsity.

Every function here is a pure function of a module's tensors or of tensors recorded during a run;
none of them runs a model. Where NeuroBench 2.3.0 defines the metric, the docstring gives its
formula and says exactly where ranvier agrees or differs (``shared/design/LANDSCAPE.md`` §4,
checked against NeuroBench's code by ``tests/test_neurobench.py``).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

import torch
from torch import Tensor, nn

from ..sparse.masks import effective_weight

__all__ = [
    "footprint",
    "parameter_count",
    "connection_weights",
    "connection_sparsity",
    "activation_sparsity",
    "activation_sparsity_by_layer",
    "activation_sparsity_per_step",
    "membrane_updates",
    "egru_backward_sparsity",
    "surrogate_backward_sparsity",
    "alif_surrogate_input",
]

Activities = Union[Tensor, Sequence[Tensor], Mapping[str, Tensor]]


# -- static ---------------------------------------------------------------------------------------
def footprint(module: nn.Module) -> int:
    """Memory footprint in bytes: ``Σ_params numel·element_size + Σ_buffers numel·element_size``.

    Same as NeuroBench ``Footprint``: every parameter and every buffer that ``module.parameters()``
    / ``module.buffers()`` yield (shared tensors once, ``None`` buffers skipped), masks included.
    A dense ``[H, H]`` weight with a mask costs its full size: this is storage as held in PyTorch,
    not a compressed (CSR) size.

    Example::

        >>> footprint(torch.nn.Linear(3, 2))  # (6 weights + 2 biases) × 4 bytes
        32
    """
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    return int(params + buffers)


def parameter_count(module: nn.Module) -> int:
    """``Σ_params numel`` (NeuroBench ``ParameterCount``); buffers such as masks are not counted."""
    return int(sum(p.numel() for p in module.parameters()))


_STATELESS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_STACKED = re.compile(r"weight_(ih|hh)_l\d+")


def connection_weights(module: nn.Module, prefix: str = "") -> dict[str, Tensor]:
    """The effective connection weights of ``module``, by qualified name (masks applied).

    Walks the module tree top-down and stops at the first recognised module on each branch:

    1. a module with a ``connection_weights()`` method: its returned ``{name: tensor}`` is used
       as-is (the protocol for masked, rewired or delayed ranvier layers);
    2. ``nn.Linear`` / ``nn.Conv1d/2d/3d``: ``weight`` (times its ``mask`` buffer when it has
       one, as readouts and ``MaskedLinear`` may; the bias is **not** a connection, as in NeuroBench);
    3. ``nn.RNNCellBase``: ``weight_ih``, ``weight_hh`` and, when present, ``bias_ih``,
       ``bias_hh`` (NeuroBench counts torch RNN biases);
    4. ``nn.RNNBase`` (``nn.RNN/LSTM/GRU``): every flat weight, biases included (NeuroBench's
       connection sparsity does count these, although its synaptic-operation count raises on them);
    5. ranvier spiking layers (an ``input_weight`` attribute): ``input_weight · input_mask`` and
       ``recurrent_weight · recurrent_mask`` when recurrent (each mask when present; bias not
       counted, as for Linear);
    6. gate-structured layers with ``weight_ih`` and ``weight_hh`` (ranvier ``EGRUCell``): those
       two (multiplied by ``mask_ih`` / ``mask_hh`` when such attributes exist; biases not
       counted); stacked layers that name them ``weight_ih_l{k}`` / ``weight_hh_l{k}`` (ranvier
       ``EGRU``, not a torch ``nn.RNNBase``): every such weight (``mask_ih_l{k}`` … applied);

    otherwise it recurses into the children. Neuron modules contribute nothing.
    """
    out: dict[str, Tensor] = {}

    def key(attr: str) -> str:
        return f"{prefix}{attr}"

    if callable(getattr(module, "connection_weights", None)):
        for k, w in module.connection_weights().items():  # type: ignore[operator]
            out[key(k)] = w
        return out
    if isinstance(module, _STATELESS):
        out[key("weight")] = effective_weight(module, "weight")  # a mask (readouts, MaskedLinear) applied
        return out
    if isinstance(module, nn.RNNCellBase):
        attrs = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if module.bias else [])
        return {key(a): getattr(module, a) for a in attrs}
    if isinstance(module, nn.RNNBase):
        return {key(a): getattr(module, a) for a in module._flat_weights_names}
    if isinstance(getattr(module, "input_weight", None), Tensor):
        out[key("input_weight")] = effective_weight(module, "input_weight")
        if isinstance(getattr(module, "recurrent_weight", None), Tensor):
            out[key("recurrent_weight")] = effective_weight(module, "recurrent_weight")
        return out
    w_ih, w_hh = getattr(module, "weight_ih", None), getattr(module, "weight_hh", None)
    if isinstance(w_ih, Tensor) and isinstance(w_hh, Tensor):
        for attr, w in (("weight_ih", w_ih), ("weight_hh", w_hh)):
            mask = getattr(module, "mask" + attr[len("weight"):], None)
            out[key(attr)] = w if not isinstance(mask, Tensor) else w * mask
        return out
    stacked = [n for n, _ in module.named_parameters(recurse=False) if _STACKED.fullmatch(n)]
    if stacked:
        for attr in stacked:
            w = getattr(module, attr)
            mask = getattr(module, "mask" + attr[len("weight"):], None)
            out[key(attr)] = w if not isinstance(mask, Tensor) else w * mask
        return out
    for child_name, child in module.named_children():
        out.update(connection_weights(child, f"{prefix}{child_name}."))
    return out


def connection_sparsity(
    weights: nn.Module | Tensor | Iterable[Tensor] | Mapping[str, Tensor], *, decimals: int | None = None
) -> float:
    """Fraction of zero connection weights: ``#{w = 0} / #{w}`` over all counted weights.

    ``weights`` is a module (walked with :func:`connection_weights`, so masked entries count as
    zero), one tensor, or several. NeuroBench ``ConnectionSparsity`` computes the same ratio over
    Linear/Conv weights and torch RNN weights + biases, and returns it rounded to 4 decimals:
    pass ``decimals=4`` to get its number exactly. Raises if there is no weight at all (NeuroBench
    divides by zero there and reports ``None``).

    Example::

        >>> connection_sparsity(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
        0.5
    """
    if isinstance(weights, nn.Module):
        tensors: list[Tensor] = list(connection_weights(weights).values())
    elif isinstance(weights, Tensor):
        tensors = [weights]
    elif isinstance(weights, Mapping):
        tensors = list(weights.values())
    else:
        tensors = list(weights)
    zeros = sum(int((w == 0).sum()) for w in tensors)
    total = sum(w.numel() for w in tensors)
    if total == 0:
        raise ValueError("connection_sparsity: no connection weights to count")
    value = zeros / total
    return round(value, decimals) if decimals is not None else value


# -- activity -------------------------------------------------------------------------------------
def _as_list(activities: Activities) -> list[Tensor]:
    if isinstance(activities, Tensor):
        return [activities]
    if isinstance(activities, Mapping):
        return list(activities.values())
    return list(activities)


def activation_sparsity(activities: Activities) -> float:
    """Overall activation sparsity ``(N − nnz) / N``, ``N = Σ numel``, ``nnz = Σ count_nonzero``.

    ``activities``: one tensor (e.g. spikes ``[T, B, H]``), or a list / dict of them (one per
    layer); the ratio pools every element of every tensor: all layers, time steps and samples.
    This is NeuroBench ``ActivationSparsity`` on one batch, computed with the same expression, so
    the float is bit-identical. Over several batches NeuroBench averages the per-batch values
    weighted by batch size, which equals this pooled ratio when every sample has the same number
    of activations (up to float rounding of that weighted sum). A graded event (EGRU ``y = o·ĉ``)
    counts as active when it is non-zero, i.e. ``1 − mean(o)`` as in EvNN.

    Example::

        >>> activation_sparsity(torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
        0.75
    """
    tensors = _as_list(activities)
    total = sum(t.numel() for t in tensors)
    if total == 0:
        return 0.0  # as NeuroBench: no activations recorded
    nnz = sum(int(torch.count_nonzero(t)) for t in tensors)
    return (total - nnz) / total


def activation_sparsity_by_layer(activities: Mapping[str, Tensor | Sequence[Tensor]]) -> dict[str, float]:
    """Per-layer sparsity ``{name: (N_l − nnz_l) / N_l}`` (NeuroBench ``ActivationSparsityByLayer``).

    Each value is a layer's activity tensor, or a list of tensors (e.g. one per batch) pooled
    together, exactly as NeuroBench pools all calls of one layer. A layer with no element gets 0.
    """
    return {name: activation_sparsity(_as_list(value)) for name, value in activities.items()}


def activation_sparsity_per_step(activity: Tensor, *, time_dim: int = 0) -> Tensor:
    """Sparsity at each time step: ``s_t = 1 − nnz(a_t) / numel(a_t)`` → float64 tensor ``[T]``.

    ``activity``: ``[T, B, H]`` (time along ``time_dim``). Not a NeuroBench metric (it only pools);
    the mean of ``s_t`` over t equals :func:`activation_sparsity` of the whole tensor.
    """
    a = activity.movedim(time_dim, 0)
    steps = a.shape[0]
    per = a.reshape(steps, -1)
    if per.shape[1] == 0:
        return torch.zeros(steps, dtype=torch.float64)
    nnz = torch.count_nonzero(per, dim=1).to(torch.float64)
    return (per.shape[1] - nnz) / per.shape[1]


def membrane_updates(v: Tensor, *, time_dim: int = 0, batch_dim: int = 1) -> float:
    """Membrane updates per sample: ``(numel(v_0) + Σ_{t≥1} nnz(v_t − v_{t−1})) / B``.

    ``v``: the membrane potential after each step (post reset), ``[T, B, H]``. This is NeuroBench
    ``MembraneUpdates`` for one layer: the first step counts every neuron as updated; after it a
    neuron counts when its potential changed. NeuroBench reads snnTorch's ``.mem`` before and
    after each call; for a neuron that keeps its state between calls this pre-call value is
    ``v_{t−1}``, which is what this function uses. Sum over layers for a whole network.
    """
    a = v.movedim((time_dim, batch_dim), (0, 1))
    if a.shape[0] == 0:
        return 0.0
    updates = a[0].numel()
    if a.shape[0] > 1:
        updates += int(torch.count_nonzero(a[1:] - a[:-1]))
    return updates / a.shape[1]


# -- backward sparsity ----------------------------------------------------------------------------
def egru_backward_sparsity(c: Tensor, threshold: Tensor | float, *, width: float = 1.0) -> float:
    """EGRU backward sparsity ``β̃ = mean(|c − ϑ| ≥ width)`` over time, batch and units.

    The pseudo-derivative ``γ·max(0, 1 − |c − ϑ|/width)`` is zero outside the open window
    ``|c − ϑ| < width``, so those units are skipped in (sparse) BPTT (SCIENCE.md §3.4–3.5); this is
    :func:`surrogate_backward_sparsity` with ranvier's ``PiecewiseLinear(γ, width)``. EvNN's
    benchmark code writes it with its ``pseudo_derivative_support`` ε = ``1/width`` and a strict
    inequality, ``mean(|c − ϑ| > 1/ε)``: the two differ only for values exactly on the edge,
    where the derivative is already 0.

    Args:
        c: the argument's state, ĉ ``[T, B, H]`` before the reset (ranvier's EGRU records
            ``ĉ − ϑ`` as ``state.margin``: pass it with ``threshold=0``). For several layers
            EvNN averages layers weighted by hidden size, which is this function on the
            concatenation along the unit axis.
        threshold: ϑ, scalar or ``[H]``.
        width: half-width of the window (ranvier ``PiecewiseLinear.width`` = 1/ε).

    Example::

        >>> egru_backward_sparsity(torch.tensor([0.1, 0.5, 2.0, -1.5]), 0.3, width=1.0)
        0.5
    """
    distance = (c - torch.as_tensor(threshold, dtype=c.dtype, device=c.device)).abs()
    return float((distance >= width).to(torch.float64).mean())


def surrogate_backward_sparsity(surrogate_input: Tensor, surrogate: Any, *, refractory: Tensor | None = None) -> float:
    """Fraction of zero pseudo-derivative entries: ``mean(surrogate.derivative(x) == 0)``.

    ``surrogate_input``: the recorded argument ``x`` of the spike function ``[T, B, H]`` (for
    ALIF see :func:`alif_surrogate_input`); ``surrogate``: the layer's surrogate (anything with a
    ``derivative(x)`` method). ``refractory`` (bool ``[T, B, H]``, optional) marks entries whose
    gradient is cut anyway (ranvier zeroes spike and gradient during the refractory period); they
    count as zero. A surrogate with unbounded support (``FastSigmoid``) gives 0: nothing is skipped.
    """
    zero = surrogate.derivative(surrogate_input) == 0
    if refractory is not None:
        zero = zero | refractory.bool()
    return float(zero.to(torch.float64).mean())


def alif_surrogate_input(
    v: Tensor,
    b: Tensor | None = None,
    *,
    threshold: Tensor | float,
    beta: Tensor | float = 0.0,
    convention: Any = None,
    v0: Tensor | None = None,
    refractory: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Rebuild the spike-function argument of a LIF/ALIF layer from its recorded states.

    ``x_t = (v_s − A_t) / N`` with ``A_t = v_th + β·b_t``, where (ranvier ``integrate_and_fire``)
    ``v_s = v_{t−1}`` and ``N = A_t`` in the LSNN convention (``spike_from_previous``,
    ``normalize_by_adaptive``), or ``v_s = v_t`` and ``N = v_th`` in the e-prop one.

    Args:
        v: membrane potentials after each step ``[T, B, H]`` (``states.v`` of ``trajectory``).
        b: threshold adaptation ``[T, B, H]`` (``states.b``); ``None`` for LIF.
        threshold, beta: the layer's ``threshold`` and ``beta`` (scalars or ``[H]``).
        convention: a ``ranvier.Convention`` (default LSNN).
        v0: the potential before step 0 (default zeros).
        refractory: the recorded refractory counters ``[T, B, H]`` (``states.refractory``);
            step t is refractory when the counter after step t−1 was > 0.

    Returns:
        ``(x, is_refractory)``: feed both to :func:`surrogate_backward_sparsity` with the
        layer's surrogate; ``is_refractory`` is ``None`` when ``refractory`` is.
    """
    spike_from_previous = getattr(convention, "spike_from_previous", True)
    normalize_by_adaptive = getattr(convention, "normalize_by_adaptive", True)
    v_th = torch.as_tensor(threshold, dtype=v.dtype, device=v.device)
    adaptive = v_th if b is None else v_th + torch.as_tensor(beta, dtype=v.dtype, device=v.device) * b
    if spike_from_previous:
        first = torch.zeros_like(v[:1]) if v0 is None else v0.unsqueeze(0)
        v_source = torch.cat([first, v[:-1]], dim=0)
    else:
        v_source = v
    norm = adaptive if normalize_by_adaptive else v_th
    x = (v_source - adaptive) / norm
    is_refractory = None
    if refractory is not None:
        prev = torch.cat([torch.zeros_like(refractory[:1]), refractory[:-1]], dim=0)
        is_refractory = prev > 0
    return x, is_refractory
