"""Streaming inference on a frozen graph: ``session = Session(graph)``, ``y_t = session.step(x_t)``.

A session holds the state of every layer and, per layer, the *event list* of its last step (the
indices of the units that emitted a non-zero output, and those outputs). A step feeds each layer
the event list of the layer below (or of the input) and the layer's own previous events, so only
the weight columns of active units are read.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from . import kernels
from .graph import DenseInput, Decoder, EGRULayer, Embedding, Graph, GraphError, Readout, SpikingLayer, Weights

__all__ = ["Session", "RunResult"]


def _weight_args(w: Weights | None, dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """The four arrays a kernel takes for a weight matrix (empty ones for an absent matrix)."""
    if w is None:
        return (np.zeros((0, 0), dtype), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, dtype))
    if w.sparse:
        # The narrowest row index that holds every row: a step streams an index and a value per
        # non-zero, so uint16 indices (up to 65 536 rows) read 6 bytes per non-zero, not 12 (int64).
        # Unsigned indices and column pointers also spare numba's negative-index test in the
        # scatter: with signed pointers the loop over a column's entries wraps every index it
        # reads (docs/engine.md: 30.1 → 22.1 µs a step at H = 512, 20 % activity, 10 % weights).
        indptr = w.indptr.astype(np.uint64)
        for index_type in (np.uint16, np.uint32):
            if w.rows <= np.iinfo(index_type).max + 1:
                return (w.dense_t, indptr, w.indices.astype(index_type), w.data)
        return (w.dense_t, indptr, w.indices.astype(np.uint64), w.data)
    return (w.dense_t, w.indptr, w.indices, w.data)


def _vector(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=dtype)


class _Events:
    """An event list: ``idx[:n]``, ``val[:n]``."""

    def __init__(self, size: int, dtype: np.dtype) -> None:
        self.idx = np.zeros(size, np.int64)
        self.val = np.zeros(size, dtype)
        self.n = 0

    def indices(self) -> np.ndarray:
        return self.idx[: self.n].copy()


#: ``Session(fold_embedding=None)`` folds a language model's embedding into the first layer's input
#: weights when the folded table ``[vocab, rows]`` takes at most this many bytes.
FOLD_MAX_BYTES = 256 * 2**20

#: With ``Session(threads=2)`` a step's input and recurrent products go to two threads only when
#: they have at least this many active inputs × output rows in all (dense weights: each thread
#: takes half the output rows of both; CSR: one product each, and each must reach half of it).
#: Smaller ones stay on one thread: handing work to the second thread costs 1.5 µs or more, and a layer
#: whose weights sit in L2 does too little per step to gain it back (H = 256 at 20 % activity,
#: 88 000, was slower on two threads in a side-by-side check).
PARALLEL_MIN_WORK = 150_000

#: A layer whose weights take more than :data:`STREAMED_BYTES` (one core's L2 cache on the
#: machines we measure) streams its active columns from L3 or memory at every step; two cores
#: then bring twice the bandwidth, and the products split from this much work on (in
#: ``benchmarks/engine.py``, H = 512, 5 % activity, 6 MiB of float32 weights: 17.7 → 13.1 µs).
PARALLEL_MIN_WORK_STREAMED = 40_000
STREAMED_BYTES = 2 * 2**20


def _parallel_min_work(*weights: tuple[np.ndarray, ...]) -> int:
    """The two-thread threshold of a layer with these weight arguments (see above; the smaller of
    the two for streamed weights, so that lowering ``PARALLEL_MIN_WORK`` lowers both)."""
    size = sum(array.nbytes for args in weights for array in args)
    return min(PARALLEL_MIN_WORK, PARALLEL_MIN_WORK_STREAMED) if size > STREAMED_BYTES else PARALLEL_MIN_WORK


class _LayerRuntime(ABC):
    """What every layer runtime keeps: ``state`` (one row per field of ``STATE``) and its event list."""

    STATE: tuple[str, ...] = ()
    state: np.ndarray
    events: _Events

    def reset(self) -> None:
        self.state[:] = 0.0
        self.events.n = 0

    def record(self) -> dict[str, np.ndarray]:
        return dict(zip(self.STATE, self.state.copy()))

    def use_input_table(self, table: np.ndarray) -> None:
        """Take the input as a one-hot index into ``table`` ``[vocab, rows]`` (a folded embedding)."""
        self.win = (table, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, table.dtype))
        self._bind()

    @abstractmethod
    def _bind(self) -> None:
        """Gather the kernel's arguments that stay the same from step to step (a step is a few µs)."""


class _SpikingRuntime(_LayerRuntime):
    STATE = ("v", "z", "b", "refractory")

    def __init__(self, layer: SpikingLayer, dtype: np.dtype, threads: int = 1) -> None:
        h = layer.hidden_size
        self.hidden_size = h
        self.win = _weight_args(layer.input_weight, dtype)
        self.wrec = _weight_args(layer.recurrent_weight, dtype)
        adaptive = layer.kind == "alif"
        empty = np.zeros(h, dtype)
        self.params = np.stack([layer.alpha, layer.input_gain, layer.threshold,
                                layer.rho if adaptive else empty, layer.adapt_gain if adaptive else empty,
                                layer.beta if adaptive else empty]).astype(dtype)
        self.flags = np.array([layer.recurrent_weight is not None, adaptive, layer.reset_by_adaptive,
                               layer.normalize_by_adaptive, layer.spike_from_previous, layer.reset == "zero"],
                              dtype=np.bool_)
        self.consts = np.array([layer.dt, 1.0, layer.n_refractory], dtype=dtype)
        self.consts[1] = self.consts[1] / self.consts[0]  # the spike value 1/dt, in the layer's dtype (as torch)
        self.bias = _vector(layer.bias, dtype)
        self.state = np.zeros((4, h), dtype)
        self.events = _Events(h, dtype)
        self.scratch = (np.zeros(h, dtype), np.zeros(h, dtype))
        self.threads = threads
        self._bind()

    def _bind(self) -> None:
        self.min_work = _parallel_min_work(self.win, self.wrec)
        self._fixed = (*self.win, *self.wrec, self.bias, self.params, self.flags, self.consts, self.state,
                       self.events.idx, self.events.val)

    def step(self, source: _Events) -> None:
        ev = self.events
        ev.n = kernels.spiking_step(source.idx, source.val, source.n, *self._fixed, ev.n, *self.scratch, self.threads,
                                    self.min_work)


class _EGRURuntime(_LayerRuntime):
    STATE = ("c", "y", "o")

    def __init__(self, layer: EGRULayer, dtype: np.dtype, threads: int = 1) -> None:
        h = layer.hidden_size
        self.hidden_size = h
        self.win = _weight_args(layer.input_weight, dtype)
        self.whh = _weight_args(layer.recurrent_weight, dtype)
        rows = 3 * h  # a layer without biases gets zeros: adding 0 changes no sum
        self.bias_ih = _vector(layer.input_bias if layer.input_bias.size else np.zeros(rows), dtype)
        self.bias_hh = _vector(layer.recurrent_bias if layer.recurrent_bias.size else np.zeros(rows), dtype)
        self.threshold = _vector(layer.threshold, dtype)
        # float32 sessions take the vectorised exp for σ and tanh (ranvier.kernels._fastexp, ~1 ulp);
        # float64 ones keep libm's, so that they match torch to rounding.
        self.flags = np.array([layer.reset == "event", layer.reset_gate == "before", dtype == np.float32],
                              dtype=np.bool_)
        self.consts = np.array([layer.zoneout, 1.0], dtype=dtype)  # eval-time zoneout p, and 1 in the dtype
        self.state = np.zeros((3, h), dtype)
        self.events = _Events(h, dtype)
        self.scratch = (np.zeros(3 * h, dtype), np.zeros(3 * h, dtype), np.zeros(3 * h, dtype), np.zeros(h, dtype),
                        np.zeros(3 * h, np.int32))
        self.threads = threads
        self._bind()

    def _bind(self) -> None:
        self.min_work = _parallel_min_work(self.win, self.whh)
        self._fixed = (*self.win, *self.whh, self.bias_ih, self.bias_hh, self.threshold, self.flags, self.consts,
                       self.state, self.events.idx, self.events.val)

    def step(self, source: _Events) -> None:
        ev = self.events
        ev.n = kernels.egru_step(source.idx, source.val, source.n, *self._fixed, ev.n, *self.scratch, self.threads,
                                 self.min_work)


@dataclass
class RunResult:
    """What :meth:`Session.run` returns.

    Attributes:
        outputs: ``[T, O]``: one output per step (readout values, logits, or the last layer's
            output for a graph without head); ``T`` counts every presentation when the input
            repeats each step.
        event_counts: ``[T, L]``: events emitted by each of the ``L`` layers at each step.
        hidden_sizes: units per layer (``activity`` = event_counts / hidden_sizes, averaged).
        states: with ``record=True``, per layer a dict of state arrays ``[T, H]`` (spiking:
            ``v, z, b, refractory``; EGRU: ``c, y, o``); else empty.
        events: with ``record=True``, per layer the list of event indices of every step.
    """

    outputs: np.ndarray
    event_counts: np.ndarray
    hidden_sizes: list[int]
    states: list[dict[str, np.ndarray]] = field(default_factory=list)
    events: list[list[np.ndarray]] = field(default_factory=list)

    @property
    def activity(self) -> np.ndarray:
        """Fraction of units with an event, per layer (mean over the steps)."""
        return self.event_counts.mean(axis=0) / np.asarray(self.hidden_sizes)


class Session:
    """Run a :class:`~ranvier.engine.Graph` one step at a time (batch 1).

    ``step(x_t)`` takes one input step (a feature vector ``[I]``, or a token id for a language
    model) and returns this step's output: the readout ``[O]`` (classifier), the logits ``[V]``
    (language model) or the last layer's output ``[H]`` (a bare stack of layers). ``run(xs)``
    runs a whole sequence from the current state. ``reset()`` returns to the all-zero state.
    ``threads=2`` lets each layer split its input and recurrent products over two threads when
    they are large (:data:`PARALLEL_MIN_WORK`, or :data:`PARALLEL_MIN_WORK_STREAMED` for a layer
    whose weights do not fit a core's L2 cache); the results are bit-identical to one thread.

    For a language model, ``fold_embedding`` precomputes ``E W_inᵀ`` (``[vocab, rows]``, the
    first layer's input product of every token) so that a token costs one row copy instead of
    ``embedding × rows`` multiply-adds; ``None`` (default) folds when that table takes at most
    :data:`FOLD_MAX_BYTES`. The folded product is summed by BLAS, so it agrees with the unfolded
    one to rounding, not bit for bit.

    After every step ``events[k]`` holds the indices of the units of layer ``k`` that emitted a
    non-zero output, and ``event_counts`` their numbers.

    Example::

        >>> import numpy as np, torch
        >>> from ranvier import LIF
        >>> from ranvier.engine import Session, freeze
        >>> layer = LIF(3, 16, threshold=0.05)
        >>> session = Session(freeze(layer))
        >>> x = np.random.default_rng(0).normal(size=(20, 3))
        >>> out = session.run(x)
        >>> out.outputs.shape, out.event_counts.shape
        ((20, 16), (20, 1))
        >>> with torch.no_grad():
        ...     spikes, _ = layer(torch.from_numpy(x).unsqueeze(1).float())
        >>> np.array_equal(out.outputs != 0, spikes[:, 0].numpy() != 0)
        True
    """

    def __init__(self, graph: Graph, *, threads: int = 1, fold_embedding: bool | None = None) -> None:
        if not isinstance(graph, Graph):
            raise TypeError(f"Session needs a ranvier.engine.Graph, got {type(graph).__name__}; use freeze(model) first")
        if threads not in (1, 2):
            raise ValueError(f"threads must be 1 or 2 (a step's products split over two threads), got {threads}")
        graph.validate()
        self.threads = threads
        self.graph = graph
        dtype = graph.dtype
        self.dtype = dtype
        self._layers: list[Any] = [
            _SpikingRuntime(layer, dtype, threads) if isinstance(layer, SpikingLayer) else _EGRURuntime(layer, dtype, threads)
            for layer in graph.layers
        ]
        head = graph.head
        self.folded = False
        if isinstance(graph.input, DenseInput):
            self._input = _Events(graph.input.size, dtype)
            self._repeat = graph.input.repeat
        else:
            self._input = _Events(graph.input.size, dtype)
            self._repeat = 1
            self._table = graph.input.table
            first = graph.layers[0].input_weight
            folded_bytes = self._table.shape[0] * first.rows * np.dtype(dtype).itemsize
            self.folded = fold_embedding if fold_embedding is not None else folded_bytes <= FOLD_MAX_BYTES
            if self.folded:  # the token becomes a one-hot input of the weights E W_inᵀ (row t: token t)
                table = np.ascontiguousarray(self._table @ first.to_matrix().T, dtype=dtype)  # [vocab, rows]
                self._layers[0].use_input_table(table)
                self._input = _Events(1, dtype)
                self._input.idx[0], self._input.val[0], self._input.n = 0, 1.0, 1
        if isinstance(head, Readout):
            self._readout = (_weight_args(head.weight, dtype), _vector(head.bias, dtype),
                             np.array([head.decay, 1.0], dtype=dtype))
            self._readout[2][1] = self._readout[2][1] - self._readout[2][0]  # 1 − κ in the graph's dtype
            self._filtered = np.zeros(head.weight.rows, dtype)
            self._summed = np.zeros(head.weight.rows, dtype)
        if isinstance(head, Decoder):
            table = graph.input.table
            decoder = Weights(table.shape[0], table.shape[1], np.ascontiguousarray(table.T), np.zeros(0, np.int64),
                              np.zeros(0, np.int64), np.zeros(0, dtype)) if head.tied else head.weight
            self._decoder = (_weight_args(decoder, dtype), _vector(head.bias, dtype))
            if head.projection is not None:
                self._projection = (_weight_args(head.projection, dtype), _vector(head.projection_bias, dtype))
                self._projected = np.zeros(head.projection.rows, dtype)
                self._projected_events = _Events(head.projection.rows, dtype)
        # A stack of layers without a head outputs its last layer's z or y: a view of that state row.
        self._output = np.zeros(graph.output_size, dtype) if head is not None else self._layers[-1].state[1]
        self._input_shape = (graph.input.size,)
        self._token_input = isinstance(graph.input, Embedding)
        self._input_dtype = np.dtype(dtype)
        self.reset()

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Return every layer (and the readout filter) to the all-zero initial state."""
        for layer in self._layers:
            layer.reset()
        if isinstance(self.graph.head, Readout):
            self._filtered[:] = 0.0
        self._output[:] = 0.0

    def warm_up(self) -> "Session":
        """Run one step (a zero input, or token 0) and reset: the first step of a process loads
        (or compiles) the numba kernels, which would spoil the first latency measured."""
        self._step_view(0 if isinstance(self.graph.input, Embedding) else np.zeros(self._input_shape, self.dtype))
        self.reset()
        return self

    @property
    def events(self) -> list[np.ndarray]:
        """Per layer, the indices of the units with an event at the last step."""
        return [layer.events.indices() for layer in self._layers]

    @property
    def event_counts(self) -> list[int]:
        """Per layer, the number of events at the last step."""
        return [layer.events.n for layer in self._layers]

    def state(self, layer: int) -> dict[str, np.ndarray]:
        """A copy of layer ``layer``'s state (spiking: v, z, b, refractory; EGRU: c, y, o)."""
        return self._layers[layer].record()

    # -- stepping ----------------------------------------------------------------------------
    def _load_input(self, x: Any) -> None:
        if self._token_input:
            vocab = self._table.shape[0]
            if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
                raise TypeError(f"a language model's step takes one token id (an int), got {type(x).__name__}")
            if not 0 <= int(x) < vocab:
                raise ValueError(f"token id {int(x)} is outside the vocabulary [0, {vocab})")
            if self.folded:
                self._input.idx[0] = int(x)  # n = 1, value 1: adds row x of E W_inᵀ
                return
            row = self._table[int(x)]
        elif (type(x) is np.ndarray and x.dtype is self._input_dtype and x.shape == self._input_shape
              and x.flags.c_contiguous):
            row = x  # the fast path: already what the kernel reads
        else:
            row = np.asarray(x)
            if row.shape != self._input_shape:
                raise ValueError(f"an input step must have shape {self._input_shape}, got {row.shape}")
            if row.dtype.kind not in "fiub":
                raise TypeError(f"an input step must be numeric, got dtype {row.dtype}")
            row = np.ascontiguousarray(row, dtype=self.dtype)
        n = kernels.dense_events(row, self._input.idx, self._input.val)
        if n < 0:
            raise ValueError("the input step contains NaN or inf")
        self._input.n = n

    def _advance(self) -> None:
        source = self._input
        for layer in self._layers:
            layer.step(source)
            source = layer.events
        head = self.graph.head
        if isinstance(head, Readout):
            weights, bias, consts = self._readout
            kernels.readout_step(source.idx, source.val, source.n, *weights, bias, consts, self._filtered,
                                 self._summed, self._output)
        elif isinstance(head, Decoder):
            if head.projection is not None:
                weights, bias = self._projection
                kernels.linear_step(self._projected, *weights, bias, source.idx, source.val, source.n, self.threads,
                                    PARALLEL_MIN_WORK)
                source = self._projected_events
                source.n = kernels.dense_events(self._projected, source.idx, source.val)
            weights, bias = self._decoder
            kernels.linear_step(self._output, *weights, bias, source.idx, source.val, source.n, self.threads,
                                PARALLEL_MIN_WORK)

    def step(self, x: Any) -> np.ndarray:
        """Feed one input step; returns this step's output (a new array)."""
        return self._step_view(x).copy()

    def _step_view(self, x: Any) -> np.ndarray:
        # step() without the copy: the returned array is overwritten by the next step
        self._load_input(x)
        for _ in range(self._repeat):
            self._advance()
        return self._output

    def run(self, xs: Sequence[Any] | np.ndarray, *, record: bool = False) -> RunResult:
        """Run a sequence (``[T, I]`` features, or ``T`` token ids) from the current state."""
        if isinstance(self.graph.input, DenseInput):
            xs = np.asarray(xs)
            if xs.ndim != 2 or xs.shape[1] != self.graph.input.size:
                raise ValueError(f"a sequence must have shape (T, {self.graph.input.size}), got {xs.shape}")
        if len(xs) == 0:
            raise ValueError("the input sequence is empty")
        steps = len(xs) * self._repeat
        outputs = np.zeros((steps, self.graph.output_size), self.dtype)
        counts = np.zeros((steps, len(self._layers)), np.int64)
        states: list[dict[str, list[np.ndarray]]] = [{} for _ in self._layers]
        events: list[list[np.ndarray]] = [[] for _ in self._layers]
        t = 0
        for x in xs:
            self._load_input(x)
            for _ in range(self._repeat):
                self._advance()
                outputs[t] = self._output
                for k, layer in enumerate(self._layers):
                    counts[t, k] = layer.events.n
                    if record:
                        for name, value in layer.record().items():
                            states[k].setdefault(name, []).append(value)
                        events[k].append(layer.events.indices())
                t += 1
        stacked = [{name: np.stack(values) for name, values in s.items()} for s in states] if record else []
        return RunResult(outputs, counts, [layer.hidden_size for layer in self._layers], stacked,
                         events if record else [])

    def classify(self, xs: np.ndarray) -> np.ndarray:
        """A classifier's logits for the sequence ``xs`` ``[T, I]`` from the zero state: the mean
        readout over the last ``readout_steps`` steps (``SequenceClassifier``'s decision)."""
        head = self.graph.head
        if not isinstance(head, Readout):
            raise GraphError("classify needs a classifier graph (a Readout head)")
        self.reset()
        outputs = self.run(xs).outputs
        last = outputs[-head.readout_steps:] if head.readout_steps > 0 else outputs  # as y[-k:] in torch
        return last.sum(axis=0) / len(last)
