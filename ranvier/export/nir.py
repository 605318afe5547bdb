"""NIR export and import: :func:`to_nir` and :func:`from_nir` (the mapping is in docs/nir.md).

NIR states neurons as continuous-time ODEs; ranvier runs discrete steps. The bridge is the step
length ``dt`` (seconds, always explicit) and a discretisation rule:

* ``"zoh"`` (exact for an input held constant over a step): ``α = exp(−dt/τ)``;
* ``"euler"`` (forward Euler, what snnTorch and Norse run): ``α = 1 − dt/τ``.

Either way a ranvier unit ``v ← α·v + c·I`` becomes ``τ·dv/dt = −v + r·I`` with the τ of the rule
and ``r = c/(1 − α)``, so the chosen reader reproduces ranvier's steps exactly. What NIR cannot
express (threshold adaptation, subtractive reset, LSNN spike timing, refractoriness, gating,
weight masks) raises :class:`NIRExportError` naming the feature, unless ``extensions=True``
writes it into node metadata under ``"ranvier"``, which :func:`from_nir` reads back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

try:
    import nir
except ImportError as err:  # pragma: no cover - nir is a test dependency
    raise ImportError("NIR export needs the `nir` package: pip install 'ranvier[nir]'") from err

from ..layers.chain import Chain
from ..models.classifier import SequenceClassifier
from ..neurons.alif import ALIF
from ..neurons.common import EPROP_CONVENTION, Convention
from ..neurons.lif import LIF
from ..neurons.readout import LeakyReadout
from ..sparse.masks import effective_weight, get_mask, set_mask

__all__ = ["to_nir", "from_nir", "NIRExportError", "NIRImportError", "EXTENSION", "DISCRETISATIONS"]

EXTENSION = "ranvier-nir-1"  # the format tag of the "ranvier" metadata entries
DISCRETISATIONS = ("zoh", "euler")
_CONVENTION_FLAGS = ("scale_input", "reset_by_adaptive", "normalize_by_adaptive", "spike_from_previous",
                     "adapt_one_minus_rho")


class NIRExportError(ValueError):
    """The model holds something NIR cannot express; the message names it."""


class NIRImportError(ValueError):
    """The NIR graph holds something ranvier cannot build; the message names it."""


# ------------------------------------------------------------------------------ time constants
def _check_step(dt: float, discretisation: str) -> None:
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    if discretisation not in DISCRETISATIONS:
        raise ValueError(f"discretisation must be one of {', '.join(DISCRETISATIONS)}, got {discretisation!r}")


def _tau_of(decay: np.ndarray, dt: float, discretisation: str, what: str) -> np.ndarray:
    """τ (seconds) whose discretisation at step ``dt`` has per-step decay ``decay``."""
    if not np.all((decay > 0) & (decay < 1)):
        raise NIRExportError(f"{what}: every per-step decay must lie in (0, 1), got {decay.min()}..{decay.max()} "
                             "(a time constant that is 0 or infinite has no NIR form)")
    return -dt / np.log(decay) if discretisation == "zoh" else dt / (1.0 - decay)


def _decay_of(tau: np.ndarray, dt: float, discretisation: str, what: str) -> np.ndarray:
    """The inverse of :func:`_tau_of`: per-step decay of τ (seconds) at step ``dt``."""
    tau = np.asarray(tau, dtype=np.float64)
    decay = np.exp(-dt / tau) if discretisation == "zoh" else 1.0 - dt / tau
    if not np.all((decay > 0) & (decay < 1)):
        raise NIRImportError(f"{what}: τ = {tau.min()}..{tau.max()} s gives per-step decays outside (0, 1) at "
                             f"dt = {dt} s with {discretisation!r} (Euler needs τ > dt)")
    return decay


def _steps(decay: np.ndarray) -> Tensor:
    """A ranvier time constant in steps (``dt = 1``): ``exp(−1/τ) = decay``."""
    return torch.as_tensor(-1.0 / np.log(decay), dtype=torch.get_default_dtype())


def _f64(t: Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _array(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


# ------------------------------------------------------------------------------ export
@dataclass
class _Export:
    dt: float
    discretisation: str
    extensions: bool
    nodes: dict[str, Any] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, node: Any, source: str | None = None) -> str:
        if name in self.nodes:
            raise NIRExportError(f"two layers would both be named {name!r} in the graph")
        self.nodes[name] = node
        if source is not None:
            self.edges.append((source, name))
        return name


@dataclass
class _Out:
    """Where a layer's output leaves the graph: node name, size, and ``scale`` = ranvier value /
    NIR value (``1/dt`` for ranvier's spikes, which NIR counts as 1)."""

    node: str
    size: int
    scale: float = 1.0


def _is_default_mask(mask: Tensor, recurrent: bool) -> bool:
    """All ones, or (recurrent weights) all ones off the diagonal: no autapses, as LIF/ALIF build it."""
    if bool((mask != 0).all()):
        return True
    if recurrent and mask.shape[0] == mask.shape[1]:
        off = torch.ones_like(mask).fill_diagonal_(0)
        return torch.equal((mask != 0).to(mask.dtype), off)
    return False


def _weight_node(module: nn.Module, param: str, scale: float, bias: Tensor | None, where: str,
                 ctx: _Export, recurrent: bool = False) -> Any:
    """``nir.Linear`` (or ``nir.Affine`` with a bias) of ``W ⊙ M · scale``.

    A mask other than the no-autapse default is parameter sparsity that NIR cannot state: it
    raises, or with extensions is stored as ``metadata["ranvier"]["mask"]``.
    """
    weight = _array(effective_weight(module, param) * scale)
    metadata: dict[str, Any] = {}
    mask = get_mask(module, param)
    if mask is not None and not _is_default_mask(mask, recurrent):
        if not ctx.extensions:
            raise NIRExportError(
                f"cannot export {where} to NIR losslessly: NIR has no sparse weights, and its weight mask "
                f"({int((mask == 0).sum())} of {mask.numel()} entries fixed at 0) would be lost. The exported "
                "weights would be W ⊙ M (the forward pass is exact); pass extensions=True (`ranvier export "
                "--extensions`) to keep the mask in the node metadata as well.")
        metadata["ranvier"] = {"format": EXTENSION, "mask": _array(mask)}
    if bias is not None:
        return nir.Affine(weight=weight, bias=_array(bias), metadata=metadata)
    return nir.Linear(weight=weight, metadata=metadata)


def _export_spiking(layer: LIF | ALIF, name: str, ctx: _Export, source: _Out) -> _Out:
    """``source → {name}_in (Linear/Affine) → {name}.lif (LIF) ⇄ {name}.rec (Linear)``.

    The dotted names are what snnTorch's importer needs to find the recurrent loop.
    """
    conv, hidden = layer.convention, layer.hidden_size
    adaptive = isinstance(layer, ALIF) and bool((layer.beta != 0).any())
    missing = []
    if adaptive:
        missing.append("threshold adaptation (ALIF with beta != 0)")
    if conv.reset != "zero":
        missing.append("subtractive reset (Convention.reset='subtract'; NIR's LIF resets to v_reset)")
    if conv.spike_from_previous:
        missing.append("the LSNN spike timing (Convention.spike_from_previous=True: z_t is read from v_{t-1}, "
                       "so the reset lags the threshold crossing by a step)")
    if layer.n_refractory > 0:
        missing.append(f"refractoriness (n_refractory={layer.n_refractory})")
    if missing and not ctx.extensions:
        raise NIRExportError(
            f"cannot export {name} ({type(layer).__name__}) to NIR losslessly: NIR has no " + "; no ".join(missing)
            + ". Use LIF with Convention(reset='zero', spike_from_previous=False) (e.g. `--convention eprop "
            "--reset zero`), or pass extensions=True (`ranvier export --extensions`) to write these features "
            "into the node metadata: from_nir reads them back, other NIR readers will run a plain LIF instead.")
    threshold = _f64(layer.threshold)
    if not np.all(threshold > 0):
        raise NIRExportError(f"cannot export {name}: thresholds must be > 0 (ranvier divides by them)")
    alpha = np.exp(-layer.dt / _f64(layer.tau_mem))
    gain = 1.0 - alpha if conv.scale_input else np.ones(hidden)
    tau = _tau_of(alpha, ctx.dt, ctx.discretisation, f"{name}.tau_mem")
    metadata: dict[str, Any] = {}
    if ctx.extensions:
        ext: dict[str, Any] = {"format": EXTENSION, "neuron": type(layer).__name__, "reset": conv.reset,
                               "n_refractory": layer.n_refractory}
        ext.update({flag: int(getattr(conv, flag)) for flag in _CONVENTION_FLAGS})
        if isinstance(layer, ALIF):
            rho = np.exp(-layer.dt / _f64(layer.tau_adapt))
            ext["tau_adapt"] = _tau_of(rho, ctx.dt, ctx.discretisation, f"{name}.tau_adapt")
            ext["beta"] = _f64(layer.beta) / layer.dt  # per unit spike (ranvier's spikes are 1/dt)
        metadata["ranvier"] = ext
    lif = nir.LIF(tau=tau, r=gain / (1.0 - alpha), v_leak=np.zeros(hidden), v_threshold=threshold,
                  v_reset=np.zeros(hidden), metadata=metadata)
    where = f"{name} ({type(layer).__name__})"
    w_in = _weight_node(layer, "input_weight", source.scale, layer.bias, f"{where} input weights", ctx)
    entry = ctx.add(f"{name}_in", w_in, source.node)
    neuron = ctx.add(f"{name}.lif", lif, entry)
    if layer.recurrent_weight is not None:
        w_rec = _weight_node(layer, "recurrent_weight", 1.0 / layer.dt, None, f"{where} recurrent weights", ctx,
                             recurrent=True)
        ctx.add(f"{name}.rec", w_rec, neuron)
        ctx.edges.append((f"{name}.rec", neuron))
    return _Out(neuron, hidden, 1.0 / layer.dt)


def _export_readout(readout: LeakyReadout, name: str, ctx: _Export, source: _Out) -> _Out:
    """``W z`` → LI (τ_out, r = 1) → ``+ b``; the bias comes after the filter, as in ranvier."""
    linear = readout.linear
    size = linear.out_features
    if readout.decay == 0:
        node = _weight_node(linear, "weight", source.scale, linear.bias, f"{name} (LeakyReadout)", ctx)
        return _Out(ctx.add(name, node, source.node), size)
    last = ctx.add(f"{name}_w", _weight_node(linear, "weight", source.scale, None, f"{name} (LeakyReadout)", ctx),
                   source.node)
    decay = np.full(size, readout.decay, dtype=np.float64)
    li = nir.LI(tau=_tau_of(decay, ctx.dt, ctx.discretisation, f"{name}.tau_out"), r=np.ones(size),
                v_leak=np.zeros(size))
    last = ctx.add(f"{name}_li", li, last)
    if linear.bias is not None and bool((linear.bias != 0).any()):
        bias = nir.Affine(weight=np.eye(size, dtype=_array(linear.bias).dtype), bias=_array(linear.bias))
        last = ctx.add(f"{name}_bias", bias, last)
    return _Out(last, size)


def _export_linear(linear: nn.Linear, name: str, ctx: _Export, source: _Out) -> _Out:
    node = _weight_node(linear, "weight", source.scale, linear.bias, f"{name} (Linear)", ctx)
    return _Out(ctx.add(name, node, source.node), linear.out_features)


# One function per layer type: (layer, name, context, source) → where its output leaves.
# Per-neuron delays (nir.Delay, delays in seconds = steps · dt) slot in here as one more entry
# once ranvier has a delay layer (issue 8; none exists on this branch yet).
_EXPORTERS: list[tuple[type, Callable[[Any, str, _Export, _Out], _Out]]] = [
    (LIF, _export_spiking),
    (ALIF, _export_spiking),
    (LeakyReadout, _export_readout),
    (nn.Linear, _export_linear),
]


def _exporter(layer: nn.Module, name: str) -> Callable[[Any, str, _Export, _Out], _Out]:
    for kind, function in _EXPORTERS:
        if type(layer) is kind:
            return function
    kind = type(layer).__name__
    if any(gated in type(m).__name__ for m in layer.modules() for gated in ("GRU", "LSTM")):  # EGRU too
        raise NIRExportError(f"cannot export {name} ({kind}) to NIR: NIR has no gated units (EGRU/GRU/LSTM gating "
                             "has no NIR primitive, not even as a ranvier extension)")
    raise NIRExportError(f"cannot export {name}: no NIR converter for {kind} "
                         f"(supported: {', '.join(k.__name__ for k, _ in _EXPORTERS)}, Chain, nn.Sequential, "
                         "SequenceClassifier)")


def _input_size(layer: nn.Module) -> int:
    if isinstance(layer, LeakyReadout):
        return layer.linear.in_features
    if isinstance(layer, nn.Linear):
        return layer.in_features
    return int(layer.input_size)


def _layers(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], dict[str, Any]]:
    """The layers in order with their graph names, and the wrapper's description."""
    if isinstance(model, SequenceClassifier):
        if getattr(model, "batch_first", False):
            raise NIRExportError("batch_first classifiers are not supported")
        wrapper = {"format": EXTENSION, "model": "SequenceClassifier", "readout_steps": model.readout_steps,
                   "repeat": model.repeat}
        return [("core", model.core), ("readout", model.readout)], wrapper
    if isinstance(model, (Chain, nn.Sequential)):
        layers = list(model.layers if isinstance(model, Chain) else model)
        return [(f"layer{i}", layer) for i, layer in enumerate(layers)], {"format": EXTENSION, "model": "Chain"}
    return [("layer0", model)], {"format": EXTENSION, "model": "Chain"}


def to_nir(model: nn.Module, *, dt: float, discretisation: str = "zoh", extensions: bool = False) -> nir.NIRGraph:
    """Export a ranvier network as a NIR graph (write it with ``nir.write(path, graph)``).

    Args:
        model: a :class:`~ranvier.LIF`/:class:`~ranvier.ALIF` layer, a :class:`~ranvier.LeakyReadout`,
            an ``nn.Linear``, a :class:`~ranvier.layers.chain.Chain` or ``nn.Sequential`` of them, or
            a :class:`~ranvier.models.classifier.SequenceClassifier`.
        dt: the length of one ranvier step in seconds (NIR's time unit); never guessed.
        discretisation: ``"zoh"`` (``α = exp(−dt/τ)``, exact for inputs held over a step) or
            ``"euler"`` (``α = 1 − dt/τ``): choose the rule of the reader that will run the graph.
        extensions: write what NIR cannot express into node metadata (``"ranvier"``) instead of
            raising :class:`NIRExportError`. Other readers ignore that metadata.

    The graph maps an input sequence, one vector per step, to the last layer's output at every
    step; spikes are 1 (ranvier's ``1/dt`` spikes are rescaled into the next weights). ``dt``,
    the discretisation and a classifier's decision rule (``readout_steps``, ``repeat``) are in
    the graph metadata.

    Example::

        >>> from ranvier import LIF, EPROP_CONVENTION
        >>> from dataclasses import replace
        >>> layer = LIF(3, 8, convention=replace(EPROP_CONVENTION, reset="zero"))
        >>> graph = to_nir(layer, dt=1e-3)
        >>> sorted(graph.nodes)
        ['input', 'layer0.lif', 'layer0.rec', 'layer0_in', 'output']
        >>> to_nir(LIF(3, 8), dt=1e-3)  # LSNN defaults: subtractive reset
        Traceback (most recent call last):
        ...
        ranvier.export.nir.NIRExportError: cannot export layer0 (LIF) to NIR losslessly: NIR has no subtractive reset ...
    """
    _check_step(dt, discretisation)
    layers, wrapper = _layers(model)
    ctx = _Export(float(dt), discretisation, bool(extensions))
    size = _input_size(layers[0][1])
    ctx.add("input", nir.Input(input_type={"input": np.array([size])}))
    out = _Out("input", size)
    for name, layer in layers:
        expected = _input_size(layer)
        if expected != out.size:
            raise NIRExportError(f"{name} expects {expected} inputs but the layer before it gives {out.size}")
        out = _exporter(layer, name)(layer, name, ctx, out)
    ctx.add("output", nir.Output(output_type={"output": np.array([out.size])}), out.node)
    metadata = {"dt": float(dt), "discretisation": discretisation, "ranvier": wrapper}
    return nir.NIRGraph(nodes=ctx.nodes, edges=ctx.edges, metadata=metadata)


# ------------------------------------------------------------------------------ import
def _meta(node: Any) -> dict[str, Any]:
    ext = (getattr(node, "metadata", None) or {}).get("ranvier")
    if ext is None:
        return {}
    fmt = ext.get("format")
    if fmt != EXTENSION:
        raise NIRImportError(f"unknown ranvier extension format {fmt!r} (this ranvier reads {EXTENSION!r})")
    return ext


def _chain(graph: nir.NIRGraph) -> tuple[list[str], dict[str, str]]:
    """Node names from Input to Output, and each neuron's recurrent weight node.

    ranvier builds feed-forward stacks of (possibly self-recurrent) layers; anything else — branches,
    merges, nested graphs, loops that are not ``neuron → weights → neuron`` — is refused by name.
    """
    succ: dict[str, list[str]] = {name: [] for name in graph.nodes}
    pred: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for a, b in graph.edges:
        succ[a].append(b)
        pred[b].append(a)
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRImportError(f"need exactly one Input and one Output node, found {inputs} and {outputs}")
    recurrent: dict[str, str] = {}
    for name, node in graph.nodes.items():
        if isinstance(node, (nir.Linear, nir.Affine)) and len(pred[name]) == 1 and succ[name] == pred[name]:
            recurrent[pred[name][0]] = name
    order, current = [], inputs[0]
    while current != outputs[0]:
        nxt = [n for n in succ[current] if recurrent.get(current) != n]
        if len(nxt) != 1:
            raise NIRImportError(f"node {current!r} feeds {len(nxt)} nodes {nxt}; ranvier imports chains of layers only")
        current = nxt[0]
        allowed = 2 if current in recurrent else 1
        if len(pred[current]) != allowed:
            raise NIRImportError(f"node {current!r} has inputs {pred[current]}; merging branches is not supported")
        if current in order:
            raise NIRImportError(f"the graph loops back to {current!r} outside a neuron's recurrent weights")
        order.append(current)
    stray = set(graph.nodes) - set(order) - {inputs[0]} - set(recurrent.values())
    if stray:
        raise NIRImportError(f"nodes {sorted(stray)} are not on the path from input to output")
    return order[:-1], recurrent


def _weights(node: Any | None, size: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(weight, bias or None, mask or None) of a Linear/Affine node; ``None`` is the identity."""
    if node is None:
        return torch.eye(size), None, None
    weight = torch.as_tensor(np.asarray(node.weight), dtype=torch.get_default_dtype())
    bias = None
    if isinstance(node, nir.Affine):
        bias = torch.as_tensor(np.asarray(node.bias), dtype=torch.get_default_dtype())
    mask = _meta(node).get("mask")
    return weight, bias, None if mask is None else torch.as_tensor(np.asarray(mask), dtype=weight.dtype)


def _copy(param: Tensor, value: Tensor) -> None:
    if tuple(param.shape) != tuple(value.shape):
        raise NIRImportError(f"weight shape {tuple(value.shape)} does not fit {tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(value)


def _import_spiking(name: str, node: Any, w_node: Any | None, rec_node: Any | None, dt: float,
                    discretisation: str) -> nn.Module:
    hidden = int(np.asarray(node.v_threshold).size)
    if isinstance(node, nir.CubaLIF) or not isinstance(node, nir.LIF):
        raise NIRImportError(f"{name}: {type(node).__name__} has no ranvier equivalent (ranvier reads LIF and LI)")
    if not np.allclose(node.v_leak, 0.0):
        raise NIRImportError(f"{name}: LIF with v_leak != 0 has no ranvier equivalent")
    if not np.allclose(node.v_reset, 0.0):
        raise NIRImportError(f"{name}: LIF with v_reset != 0 has no ranvier equivalent (ranvier resets to 0)")
    threshold = np.asarray(node.v_threshold, dtype=np.float64)
    if not np.all(threshold > 0):
        raise NIRImportError(f"{name}: ranvier needs thresholds > 0")
    ext = _meta(node)
    alpha = _decay_of(np.asarray(node.tau), dt, discretisation, f"{name}.tau")
    if ext:
        convention = Convention(reset=str(ext["reset"]), **{f: bool(ext[f]) for f in _CONVENTION_FLAGS})
    else:  # plain NIR LIF: hard reset to 0, spike read from the updated membrane
        scale_input = np.allclose(node.r, 1.0, rtol=1e-9, atol=0.0)
        convention = replace(EPROP_CONVENTION, reset="zero", scale_input=bool(scale_input))
    # r·(1 − α) is the input gain c; whatever the convention does not supply is folded into the weights.
    gain = np.asarray(node.r, dtype=np.float64) * (1.0 - alpha)
    fold = gain / (1.0 - alpha) if convention.scale_input else gain
    w_in, bias, in_mask = _weights(w_node, hidden)
    w_rec, rec_bias, rec_mask = _weights(rec_node, hidden) if rec_node is not None else (None, None, None)
    if rec_bias is not None:
        bias = rec_bias if bias is None else bias + rec_bias
    options = dict(tau_mem=_steps(alpha), threshold=torch.as_tensor(threshold, dtype=torch.get_default_dtype()),
                   n_refractory=int(ext.get("n_refractory", 0)), dt=1.0, convention=convention,
                   recurrent=w_rec is not None, bias=bias is not None,
                   self_connections=w_rec is not None and bool((torch.diagonal(w_rec) != 0).any()))
    if ext.get("neuron", "LIF") == "ALIF":
        rho = _decay_of(np.asarray(ext["tau_adapt"]), dt, discretisation, f"{name} tau_adapt")
        layer: nn.Module = ALIF(w_in.shape[1], hidden, tau_adapt=_steps(rho),
                                beta=torch.as_tensor(np.asarray(ext["beta"]), dtype=torch.get_default_dtype()),
                                **options)
    else:
        layer = LIF(w_in.shape[1], hidden, **options)
    if not np.allclose(fold, 1.0, rtol=1e-9, atol=0.0):
        scale = torch.as_tensor(fold, dtype=w_in.dtype).unsqueeze(1)  # [H, 1]: each unit's input gain
        w_in = w_in * scale
        bias = None if bias is None else bias * scale.squeeze(1)
        w_rec = None if w_rec is None else w_rec * scale
    _copy(layer.input_weight, w_in)
    if bias is not None:
        _copy(layer.bias, bias)
    if in_mask is not None:
        set_mask(layer, "input_weight", in_mask)
    if w_rec is not None:
        if rec_mask is not None:
            set_mask(layer, "recurrent_weight", rec_mask)
        _copy(layer.recurrent_weight, w_rec)
    return layer


def _import_readout(name: str, node: Any, w_node: Any | None, bias_node: Any | None, dt: float,
                    discretisation: str) -> LeakyReadout:
    size = int(np.asarray(node.tau).size)
    if not np.allclose(node.v_leak, 0.0):
        raise NIRImportError(f"{name}: LI with v_leak != 0 has no ranvier equivalent")
    decay = _decay_of(np.asarray(node.tau), dt, discretisation, f"{name}.tau")
    if not np.all(decay == decay.flat[0]):
        raise NIRImportError(f"{name}: LeakyReadout has one time constant; this LI has several")
    weight, w_bias, mask = _weights(w_node, size)
    if w_bias is not None and bool((w_bias != 0).any()):
        raise NIRImportError(f"{name}: a bias before the LI filter has no LeakyReadout equivalent")
    readout = LeakyReadout(weight.shape[1], size, tau_out=float(-1.0 / math.log(decay.flat[0])), dt=1.0)
    readout.decay = float(decay.flat[0])  # exactly the exported decay, not a round trip through τ
    r = torch.as_tensor(np.asarray(node.r, dtype=np.float64), dtype=weight.dtype).unsqueeze(1)  # [O, 1]
    _copy(readout.linear.weight, weight * r)
    if mask is not None:
        set_mask(readout.linear, "weight", mask)
    _copy(readout.linear.bias, torch.zeros(size) if bias_node is None else _weights(bias_node, size)[1])
    return readout


def _import_linear(name: str, node: Any) -> nn.Linear:
    weight, bias, mask = _weights(node, 0)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    _copy(linear.weight, weight)
    if bias is not None:
        _copy(linear.bias, bias)
    if mask is not None:
        set_mask(linear, "weight", mask)
    return linear


def _is_identity_affine(node: Any) -> bool:
    weight = np.asarray(getattr(node, "weight", np.zeros(0)))
    return (isinstance(node, nir.Affine) and weight.ndim == 2 and weight.shape[0] == weight.shape[1]
            and np.array_equal(weight, np.eye(weight.shape[0])))


def from_nir(graph: nir.NIRGraph | str | Path, *, dt: float | None = None,
             discretisation: str | None = None) -> nn.Module:
    """Build a ranvier network from a NIR graph (or the path of a NIR file).

    ``dt`` (seconds per step) and ``discretisation`` default to the values :func:`to_nir` put in
    the graph metadata; a graph from elsewhere needs them passed. The layers run with ``dt = 1``
    step (unit spikes, time constants in steps). Returns a
    :class:`~ranvier.models.classifier.SequenceClassifier` when the graph says it was one, else a
    :class:`~ranvier.layers.chain.Chain`.

    Example::

        >>> from ranvier import LIF, EPROP_CONVENTION
        >>> from dataclasses import replace
        >>> layer = LIF(3, 8, convention=replace(EPROP_CONVENTION, reset="zero"))
        >>> net = from_nir(to_nir(layer, dt=1e-3))
        >>> x = torch.randn(20, 2, 3)
        >>> torch.equal(net(x)[0], layer(x)[0])
        True
    """
    if isinstance(graph, (str, Path)):
        graph = nir.read(str(graph))
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"expected a nir.NIRGraph or a path, got {type(graph).__name__}")
    metadata = graph.metadata if isinstance(graph.metadata, dict) else {}
    dt = float(metadata["dt"]) if dt is None and "dt" in metadata else dt
    discretisation = str(metadata["discretisation"]) if discretisation is None and "discretisation" in metadata \
        else discretisation
    if dt is None or discretisation is None:
        raise NIRImportError("the graph does not say its step length and discretisation; pass dt=<seconds> and "
                             "discretisation='zoh' or 'euler' (the reader's rule: snnTorch and Norse use 'euler')")
    _check_step(dt, discretisation)
    order, recurrent = _chain(graph)
    layers: list[nn.Module] = []
    i = 0
    while i < len(order):
        name, node = order[i], graph.nodes[order[i]]
        after = graph.nodes[order[i + 1]] if i + 1 < len(order) else None
        weights = node if isinstance(node, (nir.Linear, nir.Affine)) else None
        neuron, used = (after, 2) if weights is not None else (node, 1)
        if isinstance(neuron, (nir.LIF, nir.CubaLIF)):
            rec = recurrent.get(order[i + used - 1])
            layers.append(_import_spiking(order[i + used - 1], neuron, weights,
                                          None if rec is None else graph.nodes[rec], dt, discretisation))
        elif isinstance(neuron, nir.LI):
            nxt = order[i + used] if i + used < len(order) else None
            bias = graph.nodes[nxt] if nxt is not None and _is_identity_affine(graph.nodes[nxt]) else None
            layers.append(_import_readout(order[i + used - 1], neuron, weights, bias, dt, discretisation))
            used += bias is not None
        elif weights is not None:
            layers.append(_import_linear(name, node))
            used = 1
        elif isinstance(node, nir.Delay):
            raise NIRImportError(f"{name}: nir.Delay cannot be imported yet: ranvier has no delay layer on this "
                                 "branch (issue 8)")
        else:
            raise NIRImportError(f"{name}: NIR node type {type(node).__name__} has no ranvier equivalent "
                                 "(ranvier reads Linear, Affine, LIF and LI)")
        i += used
    wrapper = metadata.get("ranvier", {}) if isinstance(metadata.get("ranvier"), dict) else {}
    if wrapper.get("model") == "SequenceClassifier":
        return _classifier(layers, wrapper)
    return Chain(*layers)


def _classifier(layers: list[nn.Module], wrapper: dict[str, Any]) -> SequenceClassifier:
    if len(layers) != 2 or not isinstance(layers[0], (LIF, ALIF)):
        raise NIRImportError("the graph says it is a SequenceClassifier but is not one spiking layer and a readout")
    readout = layers[1]
    if isinstance(readout, nn.Linear):  # a readout without a filter was exported as one Affine node
        plain = LeakyReadout(readout.in_features, readout.out_features, tau_out=0.0)
        plain.linear = readout
        readout = plain
    return SequenceClassifier(layers[0], readout, spiking=True, readout_steps=int(wrapper["readout_steps"]),
                              repeat=int(wrapper["repeat"]))
