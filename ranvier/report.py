"""``ranvier report RUN_DIR``: efficiency metrics and energy **estimates** of a finished run.

:func:`compute_report` rebuilds the run's task and model from ``config.toml`` and
``checkpoint.safetensors``, runs test data through it while recording every layer, and counts
with :mod:`ranvier.metrics` (NeuroBench-exact rules, ``docs/metrics.md``):

* footprint, parameter count and connection sparsity (masked weights count as zero);
* activation sparsity of every neuron layer: overall, per layer and per time step;
* synaptic operations (``Effective_MACs``, ``Effective_ACs``, ``Dense``) of every connection:
  for each call, the (non-zero input, non-zero weight) pairs; binary spikes are ACs, graded
  inputs (analog channels, EGRU events, GRU/LSTM states, embeddings) are MACs;
* membrane updates of spiking layers; neuron state updates of every recurrent layer;
* backward sparsity (ALIF/LIF: the surrogate input rebuilt from the recorded states; EGRU: the
  recorded margin ``ĉ − ϑ``), and the training cost of a step, dense vs sparse BPTT;
* energy **estimates** per inference and per training step, dense vs event-driven execution,
  with the default profile, each constant with its source (:mod:`ranvier.metrics.energy`).

What one "sample" is: a classification run is evaluated on the first ``samples`` test sequences
and every count is *per sample* (one whole sequence). A language model reads one stream of the
first ``samples`` tokens of the test split (batch 1, from a zero state, in windows of ``bptt``
tokens with the state carried) and every count is *per token* (one inference).

:func:`write_report` writes ``report.json``, ``report.md`` and, with ``plots=True``, PNGs.
"""
from __future__ import annotations

import dataclasses
import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import metrics
from .checkpoint import atomic_write_text, load_checkpoint
from .config import TrainConfig, build_config
from .metrics import ElementwiseOps, SynOps
from .sparse.masks import get_mask

__all__ = ["compute_report", "write_report", "load_run", "LoadedRun", "LayerRecord", "Recording",
           "record_classifier", "record_egru", "record_language_model", "markdown", "REPORT_FORMAT",
           "DEFAULT_PROFILE"]

REPORT_FORMAT = "ranvier-report-1"
DEFAULT_PROFILE = "horowitz45nm-fp32"
#: Where weights, neuron states and (training) stored activations live in the energy model.
MEMORY = {"weight_memory": "sram", "state_memory": "sram", "activation_memory": "dram"}
#: Classification samples are run in batches of this size.
BATCH = 256
#: Tokens of the language-model stream kept for the rasters and the per-token plot.
KEEP_TOKENS = 512
#: State words per neuron: what one update reads and writes.
STATE_WORDS = {"lif": 1, "alif": 2, "egru": 1, "gru": 1, "lstm": 2, "srm": 2}

ESTIMATE_LABEL = (
    "ESTIMATE, not a measurement: counted operations and modelled memory accesses times "
    "per-operation energies from the literature; static/leakage power, control, instruction "
    "fetch and interconnect are not modelled (docs/metrics.md, ranvier.metrics.energy)"
)


# ------------------------------------------------------------------------------ loading
@dataclass
class LoadedRun:
    """A run rebuilt from its directory: config, trained model (eval mode), data and history."""

    run_dir: Path
    cfg: TrainConfig
    model: nn.Module
    history: list[dict[str, Any]]
    metrics: dict[str, Any] | None  # metrics.json without its history (None if the run never finished)
    task: Any = None  # classification: ranvier.tasks.registry.Task
    corpus: Any = None  # language models: ranvier.data.text.Corpus


def load_run(run_dir: str | Path, *, data_dir: str | None = None) -> LoadedRun:
    """Rebuild the task and model of ``run_dir`` and load its checkpoint (no RNG side effects).

    ``data_dir`` overrides the data root recorded in ``config.toml`` (e.g. for a run copied from
    another machine). The history comes from ``metrics.json`` when the run finished, else from
    the checkpoint.
    """
    from .tasks.registry import LANGUAGE_TASKS
    from .train import CHECKPOINT, make_job

    run_dir = Path(run_dir)
    config_path = run_dir / "config.toml"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory: no config.toml")
    cfg = build_config(preset=config_path)
    cfg = dataclasses.replace(cfg, download=False, progress=False, data_dir=data_dir or cfg.data_dir)
    with torch.random.fork_rng(devices=[]):  # building a model draws initial weights: keep the caller's RNG
        job = make_job(cfg)
    model = job.model
    meta = load_checkpoint(run_dir / CHECKPOINT, model, restore_rng=False)
    model.eval()
    history = meta.get("history", [])
    summary = None
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        summary = json.loads(metrics_path.read_text())
        history = summary.pop("history", history)
    corpus = None
    if cfg.task in LANGUAGE_TASKS:
        from .data.text import load_corpus
        from .train_lm import CORPORA

        corpus = load_corpus(CORPORA[cfg.task], cfg.data_dir or None, False)
    return LoadedRun(run_dir, cfg, model, history, summary, getattr(job, "task", None), corpus)


# ------------------------------------------------------------------------------ recording
@dataclass
class LayerRecord:
    """What one layer did on one batch (or window), as counts and recorded tensors.

    ``neuron`` layers (LIF/ALIF/EGRU/GRU/LSTM) have an activity; connection-only layers (readout,
    projection, decoder) have ``activity=None``. ``activity`` is the layer's output ``[T, B, H]``
    (spikes, graded events or hidden states); ``ops`` the synaptic operations of the connections
    *into* the layer; ``backward_zero``/``backward_total`` count the unit-steps whose
    pseudo-derivative is zero (None: no spike function, every unit gets a gradient).
    """

    name: str
    kind: str  # lif | alif | egru | gru | lstm | linear
    ops: SynOps
    activity: Tensor | None = None
    units: int = 0
    membrane_updates_total: float | None = None  # Σ over samples (spiking layers only)
    backward_zero: int | None = None
    backward_total: int | None = None

    @property
    def neuron(self) -> bool:
        return self.activity is not None


def _shift(sequence: Tensor, first: Tensor | None = None) -> Tensor:
    """``[s_{−1}, s_0, …, s_{T−2}]``: the recurrent input of each step (``s_{−1}`` zeros by default)."""
    head = torch.zeros_like(sequence[:1]) if first is None else first.unsqueeze(0).to(sequence)
    return torch.cat([head, sequence[:-1]], dim=0)


def _count(fraction: float, total: int) -> int:
    return int(round(fraction * total))


def _spiking_record(name: str, core: nn.Module, xs: Tensor) -> LayerRecord:
    z, states = core.trajectory(xs)
    alif = isinstance(getattr(core, "beta", None), Tensor)
    refractory = states.refractory if getattr(core, "n_refractory", 0) > 0 else None
    surrogate_in, is_refractory = metrics.alif_surrogate_input(
        states.v, states.b if alif else None, threshold=core.threshold, beta=core.beta if alif else 0.0,
        convention=core.convention, refractory=refractory)
    beta_tilde = metrics.surrogate_backward_sparsity(surrogate_in, core.surrogate, refractory=is_refractory)
    batch = xs.shape[1]
    return LayerRecord(name, "alif" if alif else "lif", metrics.layer_synops(core, xs, z), activity=z,
                       units=core.hidden_size, membrane_updates_total=metrics.membrane_updates(states.v) * batch,
                       backward_zero=_count(beta_tilde, z.numel()), backward_total=z.numel())


def _torch_rnn_ops(rnn: nn.RNNBase, k: int, layer_in: Tensor, out: Tensor, h0: Tensor | None) -> SynOps:
    """Pairs of the input matmul ``W_ih,k x_t`` and the recurrent matmul ``W_hh,k h_{t−1}``."""
    return (metrics.linear_synops(layer_in, getattr(rnn, f"weight_ih_l{k}"))
            + metrics.linear_synops(_shift(out, h0), getattr(rnn, f"weight_hh_l{k}")))


def _single_layers(rnn: nn.RNNBase) -> list[nn.RNNBase]:
    """One-layer copies of a torch GRU/LSTM stack, so that every layer's output can be recorded."""
    layers = []
    with torch.random.fork_rng(devices=[]):
        for k in range(rnn.num_layers):
            size_in = rnn.input_size if k == 0 else rnn.hidden_size
            single = type(rnn)(size_in, rnn.hidden_size, 1, bias=rnn.bias)
            with torch.no_grad():
                for name in single._flat_weights_names:
                    getattr(single, name).copy_(getattr(rnn, name[:-1] + str(k)))
            layers.append(single.eval())
    return layers


def record_classifier(model: nn.Module, x: Tensor) -> tuple[Tensor, list[LayerRecord]]:
    """Run a :class:`~ranvier.models.classifier.SequenceClassifier` on ``x [B, T, I]`` and record it.

    Returns ``(logits [B, classes], [core record, readout record])``; the logits equal
    ``model(x)[0]``. The core's activity is the recorded spikes (LIF/ALIF, via ``trajectory``),
    graded events (EGRU) or hidden states (GRU/LSTM); the readout's synaptic operations are those of its
    ``nn.Linear`` on that activity (its low-pass filter acts on the outputs and is not a synapse).
    """
    if hasattr(model, "record"):  # a model that records itself (e.g. the delay network, issue 8)
        return model.record(x)
    xs = x.transpose(0, 1)
    if model.repeat > 1:
        xs = xs.repeat_interleave(model.repeat, dim=0)
    core = model.core
    if model.spiking:
        record = _spiking_record("layer0", core, xs)
    elif hasattr(core, "egru"):  # an EGRU layer: graded events
        _, (record,), _ = record_egru(core.egru, xs)
    else:
        rnn = core.rnn
        out, _ = rnn(xs)
        record = LayerRecord("layer0", "lstm" if isinstance(rnn, nn.LSTM) else "gru",
                             _torch_rnn_ops(rnn, 0, xs, out, None), activity=out, units=rnn.hidden_size)
    activity = record.activity
    y = model.readout(activity)
    k = model.readout_steps if model.readout_steps > 0 else y.shape[0]
    readout = LayerRecord("readout", "linear", metrics.linear_synops(activity, model.readout.linear.weight,
                                                                       mask=get_mask(model.readout.linear, "weight")))
    return y[-k:].mean(0), [record, readout]


def record_egru(rnn: nn.Module, x: Tensor, state: list | None = None, *,
                prefix: str = "layer") -> tuple[Tensor, list[LayerRecord], list]:
    """Run a :class:`~ranvier.neurons.egru.EGRU` stack on ``x [T, B, I]`` through its ``trajectory``.

    Layer ``k``'s record counts ``egru_synops`` of its input (``x`` for k = 0, layer k−1's events
    above) and its graded events ``y`` (the recurrent input at step 0 is the carried ``state``'s
    ``y``, zeros by default), activity ``y``, and backward sparsity from the recorded margin
    ``ĉ − ϑ`` with the layer's pseudo-derivative. Returns ``(y_last, records, final_states)``.
    Evaluation mode: no dropout, DropConnect or zoneout masks are drawn.
    """
    if getattr(rnn, "batch_first", False):
        raise ValueError("record_egru expects a time-major EGRU (batch_first=False)")
    out, states = rnn.trajectory(x, state)
    records = []
    layer_in = x
    for k, s in enumerate(states):
        masks = {m: getattr(rnn, f"{m}_l{k}") for m in ("mask_ih", "mask_hh")
                 if isinstance(getattr(rnn, f"{m}_l{k}", None), Tensor)}
        y0 = None if state is None else state[k].y
        ops = metrics.egru_synops(layer_in, s.y, getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}"),
                                  y0=y0, **masks)
        width = getattr(rnn.surrogate, "width", None)
        if width is not None:
            beta_tilde = metrics.egru_backward_sparsity(s.margin, 0.0, width=width)
        else:
            beta_tilde = metrics.surrogate_backward_sparsity(s.margin, rnn.surrogate)
        records.append(LayerRecord(f"{prefix}{k}", "egru", ops, activity=s.y, units=rnn.hidden_size,
                                   backward_zero=_count(beta_tilde, s.margin.numel()),
                                   backward_total=s.margin.numel()))
        layer_in = s.y
    finals = [type(s)(*(f[-1] for f in s)) for s in states]
    return out, records, finals


def record_language_model(model: nn.Module, tokens: Tensor, state: Any = None,
                          singles: list[nn.RNNBase] | None = None) -> tuple[Tensor, list[LayerRecord], Any]:
    """Run a :class:`~ranvier.models.language.LanguageModel` (eval) on ``tokens [T, B]`` and record it.

    Records: one per recurrent layer (``layer{k}``), then ``projection`` (if any) and the tied
    ``decoder``. The embedding is a table lookup, not a synaptic operation. Returns
    ``(logits [T, B, V], records, final state)``; the logits equal ``model(tokens, state)[0]``.
    """
    x = F.embedding(tokens, model.embedding.weight)  # [T, B, E]; eval: no embedding dropout
    if model.kind == "egru":
        out, records, state = record_egru(model.rnn, x, state)
    else:
        singles = singles or _single_layers(model.rnn)
        records, finals, layer_in = [], [], x
        lstm = model.kind == "lstm"
        for k, single in enumerate(singles):
            if state is None:
                s_k = None
            elif lstm:
                s_k = (state[0][k:k + 1], state[1][k:k + 1])
            else:
                s_k = state[k:k + 1]
            out, final = single(layer_in, s_k)
            h0 = None if s_k is None else (s_k[0] if lstm else s_k)[0]
            records.append(LayerRecord(f"layer{k}", model.kind, _torch_rnn_ops(model.rnn, k, layer_in, out, h0),
                                       activity=out, units=model.rnn.hidden_size))
            finals.append(final)
            layer_in = out
        if lstm:
            state = (torch.cat([f[0] for f in finals]), torch.cat([f[1] for f in finals]))
        else:
            state = torch.cat(finals)
    if model.projection is not None:
        records.append(LayerRecord("projection", "linear", metrics.linear_synops(out, model.projection.weight)))
        out = model.projection(out)
    records.append(LayerRecord("decoder", "linear", metrics.linear_synops(out, model.decoder.weight)))
    return model.decoder(out), records, state


# ------------------------------------------------------------------------------ accumulation
@dataclass
class _Layer:
    """One layer accumulated over batches (classification) or windows (language models)."""

    name: str
    kind: str
    units: int = 0
    ops: SynOps | None = None
    active: list[Tensor] = field(default_factory=list)  # bool [T, B, H] chunks
    sample_activity: list[Tensor] = field(default_factory=list)  # sample 0 / stream 0, [t, H] chunks
    membrane_updates_total: float | None = None
    backward_zero: int | None = None
    backward_total: int | None = None

    def add(self, r: LayerRecord, *, same_samples: bool, keep: int) -> None:
        if self.ops is None:
            self.ops = r.ops
        else:  # classification: another batch; language model: further tokens of the same streams
            self.ops = self.ops + r.ops if same_samples else self.ops.merge_batch(r.ops)
        if r.activity is None:
            return
        self.units = r.units
        self.active.append(r.activity != 0)
        if same_samples:  # stream 0 of a language model: its first `keep` tokens
            kept = sum(a.shape[0] for a in self.sample_activity)
            if kept < keep:
                self.sample_activity.append(r.activity[: keep - kept, 0].clone())
        elif not self.sample_activity:  # test sample 0 of a classifier: the whole sequence
            self.sample_activity.append(r.activity[:, 0].clone())
        if r.membrane_updates_total is not None:
            self.membrane_updates_total = (self.membrane_updates_total or 0.0) + r.membrane_updates_total
        if r.backward_total is not None:
            self.backward_zero = (self.backward_zero or 0) + r.backward_zero
            self.backward_total = (self.backward_total or 0) + r.backward_total


@dataclass
class Recording:
    """Everything a report needs from one evaluation of a run (see :func:`compute_report`)."""

    run: LoadedRun
    layers: list[_Layer]
    per: str  # "sample" or "token"
    samples: int  # what the counts are divided by: sequences or tokens
    steps_per_sample: int  # time steps one sample takes (T·repeat; 1 for a token)
    time_axis: int  # 1: chunks stacked along the batch (classification); 0: along time (LM)
    evaluation: dict[str, float]
    sample_input: Tensor | None = None  # classification: encoded test sample 0 [T, I]
    sample_label: int | None = None
    sample_prediction: int | None = None
    tokens: list[str] = field(default_factory=list)  # language models: the stream's words

    def activity(self, layer: _Layer) -> Tensor:
        """The layer's recorded non-zero pattern, bool ``[T, N, H]``."""
        return torch.cat(layer.active, dim=self.time_axis)

    def sample_trace(self, layer: _Layer) -> Tensor:
        return torch.cat(layer.sample_activity, dim=0)


@torch.no_grad()
def _record(run: LoadedRun, samples: int) -> Recording:
    cfg, model = run.cfg, run.model
    if samples <= 0:
        raise ValueError(f"samples must be positive, got {samples}")
    layers: dict[str, _Layer] = {}

    def absorb(records: list[LayerRecord], same_samples: bool) -> None:
        for r in records:
            layers.setdefault(r.name, _Layer(r.name, r.kind)).add(r, same_samples=same_samples, keep=KEEP_TOKENS)

    if run.task is not None:
        task = run.task
        n = min(samples, len(task.y_test))
        correct, loss = 0, 0.0
        first = None
        for start in range(0, n, BATCH):
            stop = min(start + BATCH, n)
            x, y = task.encode(task.x_test[start:stop]), task.y_test[start:stop]
            logits, records = record_classifier(model, x)
            absorb(records, same_samples=False)
            correct += int((logits.argmax(-1) == y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            if first is None:
                first = (x[0], int(y[0]), int(logits[0].argmax()))
        steps = task.encode(task.x_test[:1]).shape[1] * getattr(model, "repeat", 1)
        return Recording(run, list(layers.values()), "sample", n, steps, 1,
                         {"samples": n, "accuracy": correct / n, "loss": loss / n},
                         sample_input=first[0], sample_label=first[1], sample_prediction=first[2])

    stream = run.corpus.test
    n = min(samples, stream.numel() - 1)
    if n <= 0:
        raise ValueError("the test split has too few tokens")
    singles = None if model.kind == "egru" else _single_layers(model.rnn)
    state, loss = None, 0.0
    for start in range(0, n, cfg.bptt):
        stop = min(start + cfg.bptt, n)
        tokens = stream[start:stop].unsqueeze(1)  # [t, 1]: one stream, batch 1
        logits, records, state = record_language_model(model, tokens, state, singles)
        absorb(records, same_samples=True)
        loss += float(F.cross_entropy(logits[:, 0], stream[start + 1:stop + 1], reduction="sum"))
    words = [run.corpus.vocab[int(t)] for t in stream[:min(n, KEEP_TOKENS)]]
    return Recording(run, list(layers.values()), "token", n, 1, 0,
                     {"tokens": n, "loss": loss / n, "perplexity": math.exp(min(loss / n, 700.0))}, tokens=words)


# ------------------------------------------------------------------------------ the report
def _jsonable(value: Any) -> Any:
    """Non-finite floats (a diverged run's NaN loss) become None, so that the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _per_sample(ops: SynOps, samples: int) -> SynOps:
    return SynOps(ops.mac_total, ops.ac_total, ops.dense_total, samples)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _estimate_dict(e: metrics.EnergyEstimate) -> dict[str, Any]:
    return {"kind": e.kind, "mode": e.mode, "what": e.what, "profile": e.profile, "total_j": e.total_j,
            "total_pj": e.total_pj, "parts_pj": e.parts()}


def _sum_estimates(estimates: list[metrics.EnergyEstimate]) -> metrics.EnergyEstimate:
    parts: dict[str, float] = {}
    for e in estimates:
        for k, v in e.parts_pj:
            parts[k] = parts.get(k, 0.0) + v
    first = estimates[0]
    return metrics.EnergyEstimate(first.what, first.mode, first.profile, tuple(parts.items()))


def _build(rec: Recording, profile_name: str = DEFAULT_PROFILE) -> dict[str, Any]:
    run, cfg, model = rec.run, rec.run.cfg, rec.run.model
    profile = metrics.get_profile(profile_name)
    per, n, steps = rec.per, rec.samples, rec.steps_per_sample
    neurons = [layer for layer in rec.layers if layer.active]

    # activity
    acts = {layer.name: rec.activity(layer) for layer in neurons}
    activation = {
        "definition": "fraction of zero outputs (spikes, EGRU events y = o·ĉ, or GRU/LSTM hidden states), "
                      "pooled over units, time steps and samples (NeuroBench ActivationSparsity)",
        "overall": metrics.activation_sparsity(list(acts.values())) if acts else None,
        "by_layer": metrics.activation_sparsity_by_layer(acts),
        "per_step": {name: [float(v) for v in metrics.activation_sparsity_per_step(a)] for name, a in acts.items()},
        "per_step_axis": "time step" if per == "sample" else "token of the test stream",
    }

    # per-layer counts
    by_layer: dict[str, Any] = {}
    total_ops = SynOps(samples=n)
    costs, inference, training = [], {"dense": [], "event": []}, {"dense": [], "event": []}
    elementwise_total = ElementwiseOps()
    membrane: dict[str, float] = {}
    backward: dict[str, float] = {}
    backward_zero = backward_total = 0
    for layer in rec.layers:
        ops = _per_sample(layer.ops, n)
        total_ops = total_ops + ops
        beta_tilde = layer.backward_zero / layer.backward_total if layer.backward_total else 0.0
        if layer.backward_total:
            backward[layer.name] = beta_tilde
            backward_zero += layer.backward_zero
            backward_total += layer.backward_total
        cost = metrics.training_cost(ops, beta_tilde)
        costs.append(cost)
        neuron_updates = float(steps * layer.units) if layer.active else 0.0
        words = STATE_WORDS.get(layer.kind, 0)
        egru = model.rnn if hasattr(model, "rnn") else getattr(getattr(model, "core", None), "egru", None)
        elementwise = metrics.egru_elementwise_ops(steps, layer.units, bias=bool(egru.bias)) \
            if layer.kind == "egru" else None
        if elementwise is not None:
            elementwise_total = elementwise_total + elementwise
        if layer.membrane_updates_total is not None:
            membrane[layer.name] = layer.membrane_updates_total / n
        common = dict(neuron_updates=neuron_updates, state_words=max(words, 1), elementwise=elementwise,
                      weight_memory=MEMORY["weight_memory"], state_memory=MEMORY["state_memory"])
        for mode in ("dense", "event"):
            inference[mode].append(metrics.estimate_inference_energy(ops, profile, mode=mode, **common))
            training[mode].append(metrics.estimate_training_energy(
                ops, beta_tilde, profile, mode=mode, activation_memory=MEMORY["activation_memory"], **common))
        entry: dict[str, Any] = {
            "kind": layer.kind,
            "units": layer.units or None,
            "synops": ops.as_neurobench(),
            "training_cost": {**dataclasses.asdict(cost), "dense": cost.dense, "sparse": cost.sparse},
            "neuron_updates": neuron_updates,
        }
        if layer.active:
            entry["activation_sparsity"] = activation["by_layer"][layer.name]
            entry["backward_sparsity"] = beta_tilde if layer.backward_total else None
        if layer.name in membrane:
            entry["membrane_updates"] = membrane[layer.name]
        if elementwise is not None:
            entry["elementwise"] = dataclasses.asdict(elementwise)
        by_layer[layer.name] = entry

    inference_total = {m: _sum_estimates(v) for m, v in inference.items()}
    training_total = {m: _sum_estimates(v) for m, v in training.items()}
    dense_cost = sum(c.dense for c in costs)
    sparse_cost = sum(c.sparse for c in costs)
    weights = metrics.connection_weights(model)
    unit = f"per {per}"
    sources = sorted({c.source for c in profile.constants().values()})

    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "produced_by": "ranvier report RUN_DIR (ranvier.report.write_report)",
        "run_dir": str(run.run_dir),
        "task": cfg.task,
        "model": cfg.model,
        "evaluated": {
            "split": "test",
            "per": per,
            "samples": n,
            "steps_per_sample": steps,
            "what": (f"the first {n} test sequences; every count is per sample (one sequence of {steps} steps)"
                     if per == "sample" else
                     f"the first {n} tokens of the test split as one stream (batch 1, zero initial state, "
                     f"windows of {cfg.bptt} tokens with the state carried); every count is per token"),
            **rec.evaluation,
        },
        "final_metrics": run.metrics,
        "parameters": metrics.parameter_count(model),
        "footprint_bytes": metrics.footprint(model),
        "connection_sparsity": {
            "overall": metrics.connection_sparsity(weights),
            "neurobench_4_decimals": metrics.connection_sparsity(weights, decimals=4),
            "by_tensor": {k: metrics.connection_sparsity(w) for k, w in weights.items()},
        },
        "activation_sparsity": activation,
        "membrane_updates": ({"by_layer": membrane, "total": sum(membrane.values()), "unit": unit}
                             if membrane else None),
        "neuron_updates": {"total": sum(e["neuron_updates"] for e in by_layer.values()), "unit": unit,
                           "definition": "unit state updates, clock-driven: every unit at every step"},
        "synops": {
            **total_ops.as_neurobench(),
            "unit": unit,
            "by_layer": {k: e["synops"] for k, e in by_layer.items()},
            "rules": "NeuroBench: per call, (non-zero input, non-zero weight) pairs; a call whose inputs are "
                     "all in {-1, 0, 1} counts ACs, else MACs; Dense counts every pair",
        },
        "elementwise": dataclasses.asdict(elementwise_total) | {"unit": unit, "counted_for": "EGRU gate math only"},
        "backward_sparsity": {
            "definition": "fraction of unit-steps whose pseudo-derivative is zero (no gradient in sparse BPTT): "
                          "ALIF/LIF from the surrogate input rebuilt from the recorded states, EGRU from the "
                          "recorded margin ĉ − ϑ",
            "overall": backward_zero / backward_total if backward_total else None,
            "by_layer": backward,
        },
        "training_cost": {
            "unit": f"synaptic operations {unit} and training step (forward + backward, no optimizer update)",
            "dense": dense_cost,
            "sparse": sparse_cost,
            "dense_over_sparse": _ratio(dense_cost, sparse_cost),
            "by_layer": {k: e["training_cost"] for k, e in by_layer.items()},
        },
        "energy": {
            "kind": "estimate",
            "label": ESTIMATE_LABEL,
            "unit": f"joules {unit}",
            "profile": {"name": profile.name, "description": profile.description,
                        "constants": {k: {"pj": c.pj, "source": c.source, "convention": c.convention}
                                      for k, c in profile.constants().items()}},
            "sources": sources,
            "assumptions": {
                **MEMORY,
                "weight_reads": "one 32-bit read per synaptic operation (batch-1 streaming, no reuse across "
                                "batch or time); event-driven execution reads only the weights of non-zero inputs",
                "state_words": {k: STATE_WORDS[k] for k in sorted({e["kind"] for e in by_layer.values()})
                                if k in STATE_WORDS},
                "neuron_updates": "every unit of a recurrent layer at every step (clock-driven), both modes",
                "elementwise": "EGRU gate math only (egru_elementwise_ops); LIF/ALIF/GRU/LSTM neuron arithmetic "
                               "and the readout filter are not costed",
                "not_counted": "the embedding lookup, the optimizer update, static power, control",
            },
            "inference": {**{m: _estimate_dict(e) for m, e in inference_total.items()},
                          "dense_over_event": _ratio(inference_total["dense"].total_j, inference_total["event"].total_j)},
            "training_step": {**{m: _estimate_dict(e) for m, e in training_total.items()},
                              "dense_over_event": _ratio(training_total["dense"].total_j, training_total["event"].total_j)},
        },
        "by_layer": by_layer,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    return _jsonable(report)


def compute_report(run_dir: str | Path, *, samples: int = 256, data_dir: str | None = None,
                   profile: str = DEFAULT_PROFILE) -> dict[str, Any]:
    """The numeric report of ``run_dir`` as a JSON-serialisable dict (see the module docstring).

    ``samples``: test sequences (classification) or test tokens (language models) to run.
    Energy values are **estimates** with ``profile`` (default ``horowitz45nm-fp32``), labelled
    as such and listed with the sources of their constants. The caller's RNG state is untouched.
    """
    return _build(_record(load_run(run_dir, data_dir=data_dir), samples), profile)


# ------------------------------------------------------------------------------ markdown
def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1e10 or abs(value) < 1e-3:
            return f"{value:.{digits}g}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def _joules(value: float) -> str:
    for scale, unit in ((1.0, "J"), (1e-3, "mJ"), (1e-6, "µJ"), (1e-9, "nJ"), (1e-12, "pJ")):
        if abs(value) >= scale:
            return f"{value / scale:.4g} {unit}"
    return f"{value:.4g} J"


def markdown(report: dict[str, Any], plots: list[str] | None = None) -> str:
    """A readable summary of a report dict (what ``report.md`` holds)."""
    ev, syn, energy = report["evaluated"], report["synops"], report["energy"]
    per = ev["per"]
    inf, tr = energy["inference"], energy["training_step"]
    lines = [
        f"# Efficiency report: {report['model']} on {report['task']}",
        "",
        f"Produced by `ranvier report {report['run_dir']}` (i.e. `ranvier report RUN_DIR`; "
        f"`ranvier train` writes the numeric part at the end of every run). Evaluated on {ev['what']}.",
        "",
    ]
    final = report.get("final_metrics") or {}
    quality = [f"{k.replace('_', ' ')} {_fmt(final[k])}" for k in
               ("test_accuracy", "test_loss", "valid_perplexity", "test_perplexity") if k in final]
    here = ", ".join(f"{k} {_fmt(v)}" for k, v in ev.items() if k in ("accuracy", "loss", "perplexity"))
    if quality:
        lines.append(f"Run result (metrics.json): {', '.join(quality)}.")
    lines += [f"On the evaluated {per}s: {here}.", "", "## Summary", "", "| metric | value |", "|---|---|"]
    act, back = report["activation_sparsity"], report["backward_sparsity"]
    layer_act = ", ".join(f"{k} {_pct(v)}" for k, v in act["by_layer"].items())
    rows = [
        ("parameters", _fmt(report["parameters"])),
        ("footprint (parameters + buffers)", f"{_fmt(report['footprint_bytes'])} bytes"),
        ("connection sparsity (zero or masked weights)", _pct(report["connection_sparsity"]["overall"])),
        ("activation sparsity (zero outputs)", f"{_pct(act['overall'])} ({layer_act})"),
        ("backward sparsity (zero pseudo-derivative)", _pct(back["overall"])),
    ]
    if report["membrane_updates"]:
        rows.append((f"membrane updates per {per}", _fmt(report["membrane_updates"]["total"])))
    rows += [
        (f"neuron state updates per {per}", _fmt(report["neuron_updates"]["total"])),
        (f"Effective_MACs per {per}", _fmt(syn["Effective_MACs"])),
        (f"Effective_ACs per {per}", _fmt(syn["Effective_ACs"])),
        (f"Dense synaptic operations per {per}", _fmt(syn["Dense"])),
        (f"training step ops per {per}: dense → sparse BPTT",
         f"{_fmt(report['training_cost']['dense'])} → {_fmt(report['training_cost']['sparse'])} "
         f"(×{_fmt(report['training_cost']['dense_over_sparse'], 3)})"),
        (f"**estimated** energy per inference ({per}): dense → event-driven",
         f"{_joules(inf['dense']['total_j'])} → {_joules(inf['event']['total_j'])} (×{_fmt(inf['dense_over_event'], 3)})"),
        (f"**estimated** energy per training step ({per}): dense → event-driven, sparse BPTT",
         f"{_joules(tr['dense']['total_j'])} → {_joules(tr['event']['total_j'])} (×{_fmt(tr['dense_over_event'], 3)})"),
    ]
    lines += [f"| {a} | {b} |" for a, b in rows]
    lines += ["", "## Per layer", "",
              "| layer | kind | units | activation sparsity | backward sparsity | Effective_MACs | Effective_ACs | Dense | "
              "training ops dense → sparse |", "|---|---|---|---|---|---|---|---|---|"]
    for name, e in report["by_layer"].items():
        s, c = e["synops"], e["training_cost"]
        lines.append(f"| {name} | {e['kind']} | {_fmt(e['units'])} | {_pct(e.get('activation_sparsity'))} | "
                     f"{_pct(e.get('backward_sparsity'))} | {_fmt(s['Effective_MACs'])} | {_fmt(s['Effective_ACs'])} | "
                     f"{_fmt(s['Dense'])} | {_fmt(c['dense'])} → {_fmt(c['sparse'])} |")
    lines += ["", f"Synaptic operations are per {per}, by NeuroBench's rules: {syn['rules']}.", "",
              "## Energy: estimates, not measurements", "", energy["label"] + ".", "",
              f"Profile `{energy['profile']['name']}`: {energy['profile']['description']}. Weights in "
              f"{MEMORY['weight_memory'].upper()}, neuron state in {MEMORY['state_memory'].upper()}, "
              f"BPTT activations in {MEMORY['activation_memory'].upper()}; one weight read per synaptic operation. "
              "Elementwise gate math is costed for EGRU only.", "",
              f"| part (pJ per {per}) | dense inference | event-driven inference | dense training step | "
              "event-driven training step |", "|---|---|---|---|---|"]
    parts = _part_order(tr["dense"]["parts_pj"], tr["event"]["parts_pj"])
    for part in parts:
        cells = [inf["dense"]["parts_pj"].get(part), inf["event"]["parts_pj"].get(part),
                 tr["dense"]["parts_pj"].get(part), tr["event"]["parts_pj"].get(part)]
        lines.append(f"| {part} | " + " | ".join(_fmt(v) for v in cells) + " |")
    lines.append("| **total** | " + " | ".join(
        _fmt(v) for v in (inf["dense"]["total_pj"], inf["event"]["total_pj"], tr["dense"]["total_pj"],
                          tr["event"]["total_pj"])) + " |")
    lines += ["", "| constant | pJ | source |", "|---|---|---|"]
    for k, c in energy["profile"]["constants"].items():
        lines.append(f"| {k} | {c['pj']:g} | {c['source']} |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ plots
def _draw_raster(rec: Recording, path: Path) -> None:
    from .plot import draw_activity, draw_input, pyplot

    plt = pyplot()
    neurons = [layer for layer in rec.layers if layer.active]
    kind = {"lif": "spiking", "alif": "spiking", "egru": "event"}
    if rec.per == "sample":
        layer = neurons[0]
        fig, axes = plt.subplots(2, 1, figsize=(9, 8), constrained_layout=True,
                                 gridspec_kw={"height_ratios": [1, 2]})
        draw_input(axes[0], rec.sample_input, fig=fig, title=f"test sample 0: label {rec.sample_label}, "
                                                    f"predicted {rec.sample_prediction} (input)")
        draw_activity(axes[1], rec.sample_trace(layer), kind=kind.get(layer.kind, "dense"), fig=fig)
        axes[1].set_title(f"{layer.kind.upper()} layer, test sample 0: " + axes[1].get_title())
        fig.suptitle(f"{rec.run.cfg.model} on {rec.run.cfg.task}")
    else:
        fig, axes = plt.subplots(len(neurons), 1, figsize=(10, 3.2 * len(neurons) + 0.6), constrained_layout=True,
                                 squeeze=False)
        for ax, layer in zip(axes[:, 0], neurons):
            trace = rec.sample_trace(layer)
            draw_activity(ax, trace, kind=kind.get(layer.kind, "dense"), fig=fig,
                          xlabel="token of the test stream")
            ax.set_title(f"{layer.name} ({layer.kind.upper()}), first {trace.shape[0]} test tokens: " + ax.get_title())
        fig.suptitle(f"{rec.run.cfg.model} language model on {rec.run.cfg.task}")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_activity_over_time(rec: Recording, path: Path) -> None:
    from .plot import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5), constrained_layout=True)
    for layer in (layer for layer in rec.layers if layer.active):
        act = rec.activity(layer).to(torch.float32)  # [T, N, H]
        per_sample = act.mean(dim=2)  # [T, N]: fraction of units active
        mean = per_sample.mean(dim=1).numpy()
        steps = range(len(mean))
        if rec.per == "sample":
            ax.plot(steps, mean, label=f"{layer.name} ({layer.kind}): mean over {act.shape[1]} samples")
            if act.shape[1] > 1:
                lo, hi = torch.quantile(per_sample, torch.tensor([0.1, 0.9]), dim=1).numpy()
                ax.fill_between(steps, lo, hi, alpha=0.25, label=f"{layer.name}: 10–90 % of samples")
        else:
            ax.plot(steps, mean, lw=0.8, alpha=0.6, label=f"{layer.name} ({layer.kind})")
    ax.set_xlabel("time step" if rec.per == "sample" else "token of the test stream")
    ax.set_ylabel("active units (fraction of the layer)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Activity over time: {rec.run.cfg.model} on {rec.run.cfg.task} (test data)")
    ax.legend(loc="best", fontsize="small")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_training(rec: Recording, path: Path) -> None:
    from .plot import draw_learning_curves, draw_training_sparsity, pyplot

    plt = pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(8, 7), sharex=True, constrained_layout=True)
    draw_learning_curves(axes[0], rec.run.history, metric="loss")
    axes[0].set_title(f"Loss over training: {rec.run.cfg.model} on {rec.run.cfg.task}")
    axes[0].set_xlabel("")
    draw_training_sparsity(axes[1], rec.run.history)
    axes[1].set_title("Activity sparsity over training")
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: One colour per energy part, the same in every panel (tab10 colours).
_PART_COLOURS = {
    "synaptic MACs": "#1f77b4", "synaptic ACs": "#17becf", "weight reads": "#ff7f0e",
    "neuron state read+write": "#2ca02c", "elementwise mults": "#bcbd22", "elementwise adds": "#8c564b",
    "backward MACs": "#d62728", "backward weight accesses": "#9467bd", "BPTT activations write+read": "#7f7f7f",
}


def _part_order(*parts: dict[str, float]) -> list[str]:
    """Energy parts in a fixed order (forward compute, memory, neuron, backward), then any other."""
    seen = list(dict.fromkeys(k for p in parts for k in p))
    return [k for k in _PART_COLOURS if k in seen] + [k for k in seen if k not in _PART_COLOURS]


def _draw_energy(report: dict[str, Any], path: Path) -> None:
    from .plot import pyplot

    plt = pyplot()
    energy, per = report["energy"], report["evaluated"]["per"]
    panels = [("inference", f"one inference (per {per})"), ("training_step", f"one training step (per {per})")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 6), constrained_layout=True)
    for ax, (key, what) in zip(axes, panels):
        dense, event = energy[key]["dense"], energy[key]["event"]
        peak = max(dense["total_j"], event["total_j"], 1e-30)
        scale, unit = next(((s, u) for s, u in ((1.0, "J"), (1e-3, "mJ"), (1e-6, "µJ"), (1e-9, "nJ"), (1e-12, "pJ"))
                            if peak >= s), (1e-12, "pJ"))
        parts = _part_order(dense["parts_pj"], event["parts_pj"])
        bottoms = [0.0, 0.0]
        labels = ["dense\n(clock-driven)", "event-driven" + ("\n+ sparse BPTT" if key == "training_step" else "")]
        for part in parts:
            values = [d["parts_pj"].get(part, 0.0) * 1e-12 / scale for d in (dense, event)]
            ax.bar(labels, values, bottom=bottoms, label=part, width=0.6, color=_PART_COLOURS.get(part))
            bottoms = [b + v for b, v in zip(bottoms, values)]
        for i, total in enumerate(bottoms):
            ax.annotate(f"{total:.3g} {unit}", (i, total), ha="center", va="bottom", fontsize="small")
        ratio = energy[key]["dense_over_event"]
        ax.set_ylabel(f"estimated energy ({unit})")
        ax.set_ylim(0, max(bottoms) * 1.15 if max(bottoms) > 0 else 1)
        ax.set_title(f"{what}: dense ÷ event = {ratio:.3g}" if ratio else what, fontsize="medium")
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.suptitle(f"ESTIMATED energy, {report['model']} on {report['task']} — profile {energy['profile']['name']} "
                 "(Horowitz ISSCC 2014, 45 nm); op-count model, not a measurement", fontsize="medium")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_tokens(rec: Recording, path: Path, stretch: int = 48) -> None:
    from .plot import pyplot

    plt = pyplot()
    neurons = [layer for layer in rec.layers if layer.active]
    n = min(stretch, len(rec.tokens))
    full = min(len(rec.tokens), KEEP_TOKENS)
    fig, axes = plt.subplots(2, 1, figsize=(12, 8), constrained_layout=True)
    bottom = torch.zeros(n)
    for layer in neurons:
        counts = (rec.sample_trace(layer) != 0).sum(dim=1).to(torch.float32)  # events per token [t]
        axes[0].bar(range(n), counts[:n].numpy(), bottom=bottom.numpy(), label=f"{layer.name} ({layer.kind})")
        bottom += counts[:n]
        axes[1].plot(range(full), counts[:full].numpy(), lw=0.8, label=f"{layer.name} ({layer.kind})")
    axes[0].set_xticks(range(n))
    axes[0].set_xticklabels(rec.tokens[:n], rotation=90, fontsize="small")
    axes[0].set_xlim(-0.5, n - 0.5)
    axes[0].set_xlabel("input word (test split)")
    units = sum(layer.units for layer in neurons)
    axes[0].set_ylabel(f"events (active units of {units})")
    axes[0].set_title(f"Events per token, first {n} words of the test split (stacked over layers)")
    axes[0].legend(fontsize="small")
    axes[1].set_xlabel("token of the test stream")
    axes[1].set_ylabel("events (active units) per layer")
    axes[1].set_title(f"Events per token over the first {full} tokens of the test split")
    axes[1].set_ylim(bottom=0)
    axes[1].legend(fontsize="small")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_all(rec: Recording, report: dict[str, Any], run_dir: Path) -> list[str]:
    names = ["raster.png", "activity.png", "training.png", "energy.png"]
    _draw_raster(rec, run_dir / names[0])
    _draw_activity_over_time(rec, run_dir / names[1])
    _draw_training(rec, run_dir / names[2])
    _draw_energy(report, run_dir / names[3])
    if rec.per == "token":
        names.append("tokens.png")
        _draw_tokens(rec, run_dir / names[4])
    return names


def write_report(run_dir: str | Path, *, plots: bool = True, samples: int = 256, data_dir: str | None = None,
                 profile: str = DEFAULT_PROFILE) -> dict[str, Any]:
    """Write ``report.json`` and ``report.md`` into ``run_dir`` (and, with ``plots``, the PNGs).

    PNGs: ``raster.png`` (a test sample's spike raster, EGRU event raster or GRU/LSTM heatmap),
    ``activity.png`` (per-layer activity over time), ``training.png`` (loss and activity sparsity
    over training), ``energy.png`` (estimated energy, dense vs event-driven) and, for language
    models, ``tokens.png`` (events per token with the words). ``plots=False`` only computes
    numbers and never imports matplotlib (what ``ranvier train`` does at the end of a run).
    Returns the report dict; ``report["files"]`` lists what was written.
    """
    run_dir = Path(run_dir)
    rec = _record(load_run(run_dir, data_dir=data_dir), samples)
    report = _build(rec, profile)
    images = _plot_all(rec, report, run_dir) if plots else []
    report["files"] = ["report.json", "report.md", *images]
    atomic_write_text(run_dir / "report.json", json.dumps(report, indent=2, allow_nan=False))
    atomic_write_text(run_dir / "report.md", markdown(report, images))
    return report
