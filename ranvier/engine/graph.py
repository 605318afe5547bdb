"""The frozen graph: numpy arrays in dataclass nodes, checked by :meth:`Graph.validate`, stored
as one safetensors file (arrays) with a JSON description of the nodes (no pickle anywhere).

A graph is ``input → layers → head``:

* input: :class:`DenseInput` (a feature vector per step, as a sequence classifier reads) or
  :class:`Embedding` (a token id per step, as a language model reads);
* layers: :class:`SpikingLayer` (LIF, ALIF) or :class:`EGRULayer`, each feeding the next;
* head: ``None`` (the last layer's output), :class:`Readout` (a leaky readout and the classifier's
  decision) or :class:`Decoder` (a language model's optional projection and its decoder).

Every weight matrix ``W [out, in]`` is a :class:`Weights`, stored *by input column* so that a step
reads only the columns of the inputs that carry an event: dense as ``Wᵀ`` (row ``j`` is column
``j`` of ``W``, contiguous), or, when few entries are non-zero, as CSR of ``Wᵀ`` (``indptr``,
``indices`` = output rows, ``data``), so a step costs (active inputs) × (non-zero fan-out).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

__all__ = ["GraphError", "Weights", "DenseInput", "Embedding", "SpikingLayer", "EGRULayer", "Readout", "Decoder",
           "Graph", "load_graph", "FORMAT"]

FORMAT = "ranvier-engine-graph-1"
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
SPIKING_RESETS = ("subtract", "zero")
EGRU_RESETS = ("threshold", "event")
EGRU_RESET_GATES = ("after", "before")


class GraphError(ValueError):
    """A graph is malformed, or a model cannot be frozen into one."""


def _empty(dtype: Any, ndim: int = 1) -> np.ndarray:
    return np.zeros((0,) * ndim, dtype=dtype)


#: Weights with at most this fraction of non-zero entries are stored as CSR: the crossover
#: measured by ``python benchmarks/engine_storage.py`` (EGRU products, H = 512 and 1024, 5 and
#: 20 % activity, 1 and 2 threads): at 15-20 % non-zero CSR was 1.15-2.1× faster than dense
#: columns, at 25 % 0.98-1.4×, at 33 % 0.77-1.0×.
SPARSE_BELOW = 1 / 4


@dataclass
class Weights:
    """A weight matrix ``W`` of shape ``(rows, cols)`` = (outputs, inputs), stored by column.

    Exactly one form is filled: ``dense_t`` ``[cols, rows]`` (``Wᵀ``, C-contiguous), or the CSR
    arrays of ``Wᵀ``: ``indptr [cols + 1]``, ``indices [nnz]`` (output rows, ascending within a
    column) and ``data [nnz]``. The unused arrays are empty.
    """

    rows: int
    cols: int
    dense_t: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    @property
    def sparse(self) -> bool:
        return self.indptr.size > 0

    @property
    def dtype(self) -> np.dtype:
        return (self.data if self.sparse else self.dense_t).dtype

    @property
    def nnz(self) -> int:
        return int(self.data.size) if self.sparse else int(np.count_nonzero(self.dense_t))

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.rows * self.cols)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, *, sparse_below: float = SPARSE_BELOW) -> "Weights":
        """Store ``matrix`` ``[rows, cols]``: as CSR of its transpose when the fraction of
        non-zero entries is at most ``sparse_below``, else densely (``sparse_below=0``: always
        dense; ``1``: always CSR)."""
        matrix = np.asarray(matrix)
        if matrix.ndim != 2:
            raise GraphError(f"a weight matrix must be 2-D, got shape {matrix.shape}")
        rows, cols = matrix.shape
        transposed = np.ascontiguousarray(matrix.T)  # [cols, rows]: row j = column j of W
        density = np.count_nonzero(matrix) / max(1, matrix.size)
        if density > sparse_below:
            return cls(rows, cols, transposed, _empty(np.int64), _empty(np.int64), _empty(matrix.dtype))
        nonzero = transposed != 0
        indptr = np.zeros(cols + 1, dtype=np.int64)
        np.cumsum(nonzero.sum(axis=1), out=indptr[1:])
        _, indices = np.nonzero(nonzero)  # row-major order: by column of W, then ascending output row
        return cls(rows, cols, _empty(matrix.dtype, 2), indptr, indices.astype(np.int64),
                   np.ascontiguousarray(transposed[nonzero]))

    def to_matrix(self) -> np.ndarray:
        """The dense ``W`` ``[rows, cols]`` (for checks and exports)."""
        if not self.sparse:
            return np.ascontiguousarray(self.dense_t.T)
        out = np.zeros((self.cols, self.rows), dtype=self.data.dtype)
        columns = np.repeat(np.arange(self.cols), np.diff(self.indptr))
        out[columns, self.indices] = self.data
        return np.ascontiguousarray(out.T)

    def validate(self, where: str) -> None:
        if self.sparse:
            if self.dense_t.size:
                raise GraphError(f"{where}: both the dense and the CSR form are filled")
            if self.indptr.shape != (self.cols + 1,) or self.indptr[0] != 0 or np.any(np.diff(self.indptr) < 0):
                raise GraphError(f"{where}: indptr must be non-decreasing, start at 0 and have {self.cols + 1} entries")
            nnz = int(self.indptr[-1])
            if self.indices.shape != (nnz,) or self.data.shape != (nnz,):
                raise GraphError(f"{where}: indices and data must have indptr[-1] = {nnz} entries, got "
                                 f"{self.indices.shape} and {self.data.shape}")
            if nnz and (self.indices.min() < 0 or self.indices.max() >= self.rows):
                raise GraphError(f"{where}: row indices must lie in [0, {self.rows})")
            for name in ("indptr", "indices"):
                if getattr(self, name).dtype != np.int64:
                    raise GraphError(f"{where}: {name} must be int64, got {getattr(self, name).dtype}")
            _check_floats(self.data, where + ".data")
        else:
            if self.dense_t.shape != (self.cols, self.rows):
                raise GraphError(f"{where}: the dense Wᵀ must have shape {(self.cols, self.rows)}, got {self.dense_t.shape}")
            if not self.dense_t.flags.c_contiguous:
                raise GraphError(f"{where}: the dense Wᵀ must be C-contiguous")
            _check_floats(self.dense_t, where + ".dense_t")


def _check_floats(array: np.ndarray, where: str, shape: tuple[int, ...] | None = None) -> None:
    if not isinstance(array, np.ndarray):
        raise GraphError(f"{where} must be a numpy array, got {type(array).__name__}")
    if array.dtype not in FLOAT_DTYPES:
        raise GraphError(f"{where} must be float32 or float64, got {array.dtype}")
    if shape is not None and array.shape != shape:
        raise GraphError(f"{where} must have shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise GraphError(f"{where} contains NaN or inf")


def _check_bias(bias: np.ndarray, size: int, where: str) -> None:
    if bias.size:  # an empty array means "no bias"
        _check_floats(bias, where, (size,))


# ------------------------------------------------------------------------------ inputs
@dataclass
class DenseInput:
    """A feature vector ``[size]`` per step; each step is presented ``repeat`` times (the
    classifier's ``repeat`` option). Its non-zero entries are the input events."""

    size: int
    repeat: int = 1

    def validate(self, dtype: np.dtype) -> None:
        if self.size <= 0 or self.repeat <= 0:
            raise GraphError(f"input: size and repeat must be positive, got {self.size}, {self.repeat}")


@dataclass
class Embedding:
    """A token id per step, looked up in ``table`` ``[vocab, embedding]``."""

    table: np.ndarray

    @property
    def size(self) -> int:
        return int(self.table.shape[1])

    def validate(self, dtype: np.dtype) -> None:
        if self.table.ndim != 2 or 0 in self.table.shape:
            raise GraphError(f"embedding table must be a non-empty [vocab, embedding] array, got {self.table.shape}")
        _check_floats(self.table, "embedding.table")


# ------------------------------------------------------------------------------ layers
@dataclass
class SpikingLayer:
    """A recurrent LIF or ALIF layer (``ranvier.LIF`` / ``ranvier.ALIF``) at inference.

    Per-unit constants are stored as the torch step computes them: ``alpha = exp(−dt/τ_m)``,
    ``input_gain = 1 − α`` (or 1), ``rho = exp(−dt/τ_a)``, ``adapt_gain = 1 − ρ`` (or 1).
    ``rho``, ``adapt_gain`` and ``beta`` are empty for LIF. The convention flags are those of
    :class:`ranvier.Convention`; ``adapt_one_minus_rho`` is folded into ``adapt_gain``;
    ``reset`` is ``"subtract"`` or ``"zero"``.
    """

    kind: str  # "lif" | "alif"
    input_weight: Weights  # [H, I]
    recurrent_weight: Weights | None  # [H, H]
    bias: np.ndarray  # [H] or empty
    alpha: np.ndarray
    input_gain: np.ndarray
    threshold: np.ndarray
    rho: np.ndarray
    adapt_gain: np.ndarray
    beta: np.ndarray
    reset_by_adaptive: bool = True
    normalize_by_adaptive: bool = True
    spike_from_previous: bool = True
    n_refractory: int = 0
    dt: float = 1.0
    reset: str = "subtract"

    @property
    def hidden_size(self) -> int:
        return self.input_weight.rows

    @property
    def input_size(self) -> int:
        return self.input_weight.cols

    def validate(self, where: str, input_size: int, dtype: np.dtype) -> None:
        h = self.hidden_size
        if self.kind not in ("lif", "alif"):
            raise GraphError(f"{where}: kind must be 'lif' or 'alif', got {self.kind!r}")
        if self.input_size != input_size:
            raise GraphError(f"{where}: takes {self.input_size} inputs but is fed {input_size}")
        self.input_weight.validate(where + ".input_weight")
        if self.recurrent_weight is not None:
            if (self.recurrent_weight.rows, self.recurrent_weight.cols) != (h, h):
                raise GraphError(f"{where}: recurrent weight must be {h}×{h}")
            self.recurrent_weight.validate(where + ".recurrent_weight")
        _check_bias(self.bias, h, where + ".bias")
        for name in ("alpha", "input_gain", "threshold"):
            _check_floats(getattr(self, name), f"{where}.{name}", (h,))
        if np.any(self.threshold <= 0):
            raise GraphError(f"{where}: thresholds must be positive (the spike test divides by them)")
        if self.kind == "alif":
            for name in ("rho", "adapt_gain", "beta"):
                _check_floats(getattr(self, name), f"{where}.{name}", (h,))
        if self.reset not in SPIKING_RESETS:
            raise GraphError(f"{where}: reset must be one of {SPIKING_RESETS}, got {self.reset!r}")
        if self.n_refractory < 0 or not (self.dt > 0 and math.isfinite(self.dt)):
            raise GraphError(f"{where}: need n_refractory >= 0 and a finite dt > 0, got {self.n_refractory}, {self.dt}")


@dataclass
class EGRULayer:
    """One EGRU layer (``ranvier.EGRU``) at inference: weights ``[3H, ·]`` with gate chunks
    ``[z, r, g]``, thresholds ``ϑ [H]``, and the eval-time zoneout expectation ``p``."""

    input_weight: Weights  # [3H, I]
    recurrent_weight: Weights  # [3H, H]
    input_bias: np.ndarray  # [3H] or empty
    recurrent_bias: np.ndarray  # [3H] or empty
    threshold: np.ndarray  # [H]
    reset: str = "threshold"
    reset_gate: str = "after"
    zoneout: float = 0.0

    @property
    def hidden_size(self) -> int:
        return self.recurrent_weight.cols

    @property
    def input_size(self) -> int:
        return self.input_weight.cols

    def validate(self, where: str, input_size: int, dtype: np.dtype) -> None:
        h = self.hidden_size
        if self.input_size != input_size:
            raise GraphError(f"{where}: takes {self.input_size} inputs but is fed {input_size}")
        if self.input_weight.rows != 3 * h or self.recurrent_weight.rows != 3 * h:
            raise GraphError(f"{where}: weights must have 3·H = {3 * h} rows")
        self.input_weight.validate(where + ".input_weight")
        self.recurrent_weight.validate(where + ".recurrent_weight")
        _check_bias(self.input_bias, 3 * h, where + ".input_bias")
        _check_bias(self.recurrent_bias, 3 * h, where + ".recurrent_bias")
        _check_floats(self.threshold, where + ".threshold", (h,))
        if self.reset not in EGRU_RESETS or self.reset_gate not in EGRU_RESET_GATES:
            raise GraphError(f"{where}: reset must be one of {EGRU_RESETS} and reset_gate one of {EGRU_RESET_GATES}")
        if not 0.0 <= self.zoneout <= 1.0:
            raise GraphError(f"{where}: zoneout must lie in [0, 1], got {self.zoneout}")


Layer = Union[SpikingLayer, EGRULayer]


# ------------------------------------------------------------------------------ heads
@dataclass
class Readout:
    """``LeakyReadout``: ``u_t = W z_t``, ``s_t = κ·s_{t−1} + (1 − κ)·u_t`` (no filter when
    κ = 0), output ``s_t + b``; the classifier's logits are the mean output of the last
    ``readout_steps`` steps (all steps when 0)."""

    weight: Weights  # [O, H]
    bias: np.ndarray  # [O]
    decay: float = 0.0
    readout_steps: int = 1

    def validate(self, input_size: int) -> None:
        if self.weight.cols != input_size:
            raise GraphError(f"readout: takes {self.weight.cols} inputs but is fed {input_size}")
        self.weight.validate("readout.weight")
        _check_floats(self.bias, "readout.bias", (self.weight.rows,))
        if not 0.0 <= self.decay < 1.0 or self.readout_steps < 0:
            raise GraphError(f"readout: need 0 <= decay < 1 and readout_steps >= 0, got {self.decay}, {self.readout_steps}")


@dataclass
class Decoder:
    """A language model's head: optional ``projection`` (``[E, H]`` and its bias), then the
    decoder ``logits = W y + b``. With ``tied=True`` the decoder weight is the embedding table
    (``weight`` is then ``None`` and is rebuilt from the table when a session starts)."""

    bias: np.ndarray  # [V]
    weight: Weights | None = None  # [V, E] unless tied
    tied: bool = False
    projection: Weights | None = None  # [E, H]
    projection_bias: np.ndarray = field(default_factory=lambda: _empty(np.float64))

    def validate(self, input_size: int, vocab: int, embedding: int) -> None:
        size = input_size
        if self.projection is not None:
            if self.projection.cols != input_size:
                raise GraphError(f"decoder.projection takes {self.projection.cols} inputs but is fed {input_size}")
            self.projection.validate("decoder.projection")
            _check_bias(self.projection_bias, self.projection.rows, "decoder.projection_bias")
            size = self.projection.rows
        if self.tied:
            if self.weight is not None:
                raise GraphError("decoder: a tied decoder stores no weight of its own")
            cols = embedding
        else:
            if self.weight is None:
                raise GraphError("decoder: an untied decoder needs a weight")
            self.weight.validate("decoder.weight")
            cols, vocab = self.weight.cols, self.weight.rows
        if cols != size:
            raise GraphError(f"decoder takes {cols} inputs but is fed {size}")
        _check_floats(self.bias, "decoder.bias", (vocab,))


Head = Union[Readout, Decoder, None]


# ------------------------------------------------------------------------------ the graph
@dataclass
class Graph:
    """A frozen model: ``input`` → ``layers`` → ``head`` (see the module docstring).

    Build one with :func:`ranvier.engine.freeze`, run it with :class:`ranvier.engine.Session`,
    and keep it with :meth:`save` / :func:`load_graph`.
    """

    input: DenseInput | Embedding
    layers: list[Layer]
    head: Head = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dtype(self) -> np.dtype:
        first = self.layers[0]
        return first.threshold.dtype

    @property
    def kind(self) -> str:
        """``"language_model"``, ``"classifier"`` or ``"stack"`` (no head)."""
        if isinstance(self.head, Decoder):
            return "language_model"
        return "classifier" if isinstance(self.head, Readout) else "stack"

    @property
    def output_size(self) -> int:
        if isinstance(self.head, Readout):
            return self.head.weight.rows
        if isinstance(self.head, Decoder):
            return int(self.head.bias.shape[0])
        return self.layers[-1].hidden_size

    def validate(self) -> "Graph":
        """Check every shape, dtype and value; raise :class:`GraphError` on the first problem.
        Returns the graph, so ``graph = freeze(model).validate()`` reads naturally."""
        if not self.layers:
            raise GraphError("a graph needs at least one layer")
        dtype = self.layers[0].threshold.dtype if isinstance(self.layers[0].threshold, np.ndarray) else None
        if dtype not in FLOAT_DTYPES:
            raise GraphError(f"the graph's arrays must be float32 or float64, got {dtype}")
        if not isinstance(self.input, (DenseInput, Embedding)):
            raise GraphError(f"input must be DenseInput or Embedding, got {type(self.input).__name__}")
        self.input.validate(dtype)
        size = self.input.size
        for k, layer in enumerate(self.layers):
            if not isinstance(layer, (SpikingLayer, EGRULayer)):
                raise GraphError(f"layers[{k}] must be a SpikingLayer or an EGRULayer, got {type(layer).__name__}")
            layer.validate(f"layers[{k}]", size, dtype)
            size = layer.hidden_size
        if isinstance(self.head, Readout):
            self.head.validate(size)
        elif isinstance(self.head, Decoder):
            if not isinstance(self.input, Embedding):
                raise GraphError("a decoder head needs an Embedding input (a language model)")
            self.head.validate(size, self.input.table.shape[0], self.input.size)
        elif self.head is not None:
            raise GraphError(f"head must be Readout, Decoder or None, got {type(self.head).__name__}")
        wrong = [path for path, array in _arrays(self) if array.dtype.kind == "f" and array.size and array.dtype != dtype]
        if wrong:
            raise GraphError(f"every float array must be {dtype}; these are not: {', '.join(wrong)}")
        return self

    def astype(self, dtype: Any) -> "Graph":
        """A copy with every float array cast to ``dtype`` (float32 or float64)."""
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise GraphError(f"dtype must be float32 or float64, got {dtype}")
        tensors: dict[str, np.ndarray] = {}
        spec = _encode(self, "", tensors)
        return _decode(spec, {k: v.astype(dtype) if v.dtype.kind == "f" else v.copy() for k, v in tensors.items()})

    def save(self, path: str | Path) -> Path:
        """Write the graph to ``path`` (safetensors, atomically); no pickle is involved."""
        from safetensors.numpy import save_file

        self.validate()
        path = Path(path)
        tensors: dict[str, np.ndarray] = {}
        spec = _encode(self, "", tensors)
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
                  metadata={"format": FORMAT, "graph": json.dumps(spec)})
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path

    def summary(self) -> str:
        """One line per node: what it is, its size and how its weights are stored."""
        lines = [f"{self.kind} graph, {self.dtype}, input: {type(self.input).__name__} ({self.input.size})"]
        for k, layer in enumerate(self.layers):
            name = layer.kind.upper() if isinstance(layer, SpikingLayer) else "EGRU"
            parts = [f"{n} {_storage(w)}" for n, w in (("in", layer.input_weight), ("rec", layer.recurrent_weight))
                     if w is not None]
            lines.append(f"  layer {k}: {name} {layer.hidden_size} units, " + ", ".join(parts))
        if isinstance(self.head, Readout):
            lines.append(f"  readout: {self.head.weight.rows} outputs, {_storage(self.head.weight)}")
        elif isinstance(self.head, Decoder):
            lines.append(f"  decoder: {self.output_size} tokens{' (tied to the embedding)' if self.head.tied else ''}")
        return "\n".join(lines)


def _storage(w: Weights) -> str:
    return f"{'CSR' if w.sparse else 'dense'} {w.rows}×{w.cols} ({100 * w.density:.0f} % non-zero)"


# ------------------------------------------------------------------------------ (de)serialisation
_NODES = {cls.__name__: cls for cls in (Weights, DenseInput, Embedding, SpikingLayer, EGRULayer, Readout, Decoder, Graph)}


def _encode(obj: Any, path: str, tensors: dict[str, np.ndarray]) -> Any:
    """JSON-able description of ``obj``; arrays go into ``tensors`` under their path."""
    if isinstance(obj, np.ndarray):
        tensors[path] = obj
        return {"$array": path}
    if dataclasses.is_dataclass(obj):
        fields = {f.name: _encode(getattr(obj, f.name), f"{path}.{f.name}".lstrip("."), tensors)
                  for f in dataclasses.fields(obj)}
        return {"$node": type(obj).__name__, **fields}
    if isinstance(obj, list):
        return [_encode(item, f"{path}.{i}", tensors) for i, item in enumerate(obj)]
    if isinstance(obj, dict):
        return {"$dict": {k: _encode(v, f"{path}.{k}", tensors) for k, v in obj.items()}}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    raise GraphError(f"cannot store a {type(obj).__name__} at {path!r}")


def _decode(spec: Any, tensors: dict[str, np.ndarray]) -> Any:
    if isinstance(spec, list):
        return [_decode(item, tensors) for item in spec]
    if isinstance(spec, dict):
        if "$array" in spec:
            key = spec["$array"]
            if key not in tensors:
                raise GraphError(f"the graph file lacks the array {key!r}")
            return tensors[key]
        if "$dict" in spec:
            return {k: _decode(v, tensors) for k, v in spec["$dict"].items()}
        name = spec.get("$node")
        if name not in _NODES:
            raise GraphError(f"unknown node type {name!r} in the graph file")
        cls = _NODES[name]
        names = {f.name for f in dataclasses.fields(cls)}
        given = {k for k in spec if k != "$node"}
        if given != names:
            raise GraphError(f"node {name}: expected fields {sorted(names)}, got {sorted(given)}")
        return cls(**{k: _decode(v, tensors) for k, v in spec.items() if k != "$node"})
    return spec


def _arrays(graph: Graph) -> list[tuple[str, np.ndarray]]:
    tensors: dict[str, np.ndarray] = {}
    _encode(graph, "", tensors)
    return list(tensors.items())


def load_graph(path: str | Path) -> Graph:
    """Read a graph written by :meth:`Graph.save` and validate it."""
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no engine graph at {path}")
    try:
        with safe_open(str(path), framework="np") as fh:
            metadata = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise GraphError(f"{path} is not a readable safetensors file: {err}") from err
    if metadata.get("format") != FORMAT:
        raise GraphError(f"{path} is not a ranvier engine graph (format {metadata.get('format')!r})")
    try:
        spec = json.loads(metadata["graph"])
    except (KeyError, json.JSONDecodeError) as err:
        raise GraphError(f"{path}: the graph description is missing or corrupt") from err
    graph = _decode(spec, tensors)
    if not isinstance(graph, Graph):
        raise GraphError(f"{path}: the file does not describe a Graph")
    return graph.validate()
