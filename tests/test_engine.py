"""The event-driven runtime against the torch models it freezes.

Exactness, and where it stops:

* LIF/ALIF in float64 with *dyadic* weights and inputs (multiples of 2⁻¹², small enough that
  every product and partial sum is a float64 exactly): every matrix-vector sum is then exact in
  any order, so whatever summation order torch's BLAS and the engine's gather use, the results
  must be **bit-identical**; this checks all the rest (neuron update, reset, refractoriness,
  adaptation, event lists, CSR storage, readout filter, decision) with nothing to hide behind.
* LIF/ALIF with general float64 weights (random or trained): the only difference left is the
  order of the terms of a sum, so states agree to 1e-12 and spikes are identical.
* EGRU in float64: torch evaluates sigmoid/tanh with SLEEF's vectorised functions and lerp with
  a fused multiply-add, the engine with libm and two roundings; both are accurate to about one
  unit in the last place, so states agree to 1e-12 and events are identical.
* The classifier's decision averages the last k readout outputs; for k > 1 torch's vectorised
  reduction adds them in its own order, so that mean agrees to 1e-14 (k = 1: bit-identical).
* float32: outputs agree to 1e-5 (absolute and relative) on the fixed seeds below, where no
  membrane lands within float32 rounding of its threshold (a spike flip there is legitimate).
"""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ranvier import ALIF, EGRU, LIF, Convention
from ranvier.engine import (GraphError, Session, Weights, freeze, generate, load_graph, perplexity)
from ranvier.engine.graph import SPARSE_BELOW
from ranvier.models.classifier import SequenceClassifier
from ranvier.neurons.readout import LeakyReadout
from ranvier.sparse import get_mask, set_mask

FAST = settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
STORAGE = {"auto": SPARSE_BELOW, "dense": 0.0, "csr": 1.0}


def dyadic(t: torch.Tensor, bits: int = 12) -> torch.Tensor:
    return torch.round(t * 2.0 ** bits) / 2.0 ** bits


def sparsify(module, name, density, gen):
    """Mask ``module.<name>`` to about ``density`` non-zero entries (keeping an existing mask)."""
    weight = getattr(module, name)
    mask = (torch.rand(weight.shape, generator=gen, dtype=torch.float64) < density).to(weight.dtype)
    old = get_mask(module, name)
    set_mask(module, name, mask if old is None else mask * old)


def spiking_classifier(kind, n_in, hidden, n_out, *, convention, n_refractory, dt, bias, recurrent, tau_out,
                       readout_steps, repeat, density, seed, exact):
    gen = torch.Generator().manual_seed(seed)
    tau = 2.0 + 30.0 * torch.rand(hidden, generator=gen)
    common = dict(tau_mem=tau, threshold=0.1, n_refractory=n_refractory, dt=dt, convention=convention, bias=bias,
                  recurrent=recurrent)
    if kind == "lif":
        core = LIF(n_in, hidden, **common)
    else:
        beta = torch.where(torch.rand(hidden, generator=gen) < 0.5, 0.0, 1.0)
        core = ALIF(n_in, hidden, tau_adapt=5.0 + 100.0 * torch.rand(hidden, generator=gen), beta=beta, **common)
    readout = LeakyReadout(hidden, n_out, tau_out=tau_out)
    model = SequenceClassifier(core, readout, spiking=True, readout_steps=readout_steps, repeat=repeat).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) / max(1.0, p.shape[-1] ** 0.5) * 2.0)
        if core.recurrent_weight is not None:
            core.recurrent_weight.mul_(core.recurrent_mask)  # keep the no-autapse convention of the layer
    if density < 1.0:
        sparsify(core, "input_weight", density, gen)
        if recurrent:
            sparsify(core, "recurrent_weight", density, gen)
        sparsify(readout.linear, "weight", density, gen)
    if exact:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(dyadic(p))
    return model


def torch_reference(model: SequenceClassifier, x: np.ndarray):
    """Per-step spikes/states, readout outputs and logits of the torch model (batch 1)."""
    xs = torch.from_numpy(x).unsqueeze(1)  # [T, 1, I]
    with torch.no_grad():
        logits, _ = model(xs.transpose(0, 1))
        seq = xs.repeat_interleave(model.repeat, dim=0) if model.repeat > 1 else xs
        if isinstance(model.core, (LIF, ALIF)):
            z, states = model.core.trajectory(seq)
            fields = {name: getattr(states, name)[:, 0].numpy() for name in states._fields}
        else:
            z, states = model.core.egru.trajectory(seq)
            fields = {name: getattr(states[-1], name)[:, 0].numpy() for name in ("c", "y", "o")}
        outputs = model.readout(z)[:, 0].numpy()
    return fields, outputs, logits[0].numpy()


def engine_run(model, x, **freeze_kwargs):
    graph = freeze(model, **freeze_kwargs)
    session = Session(graph)
    result = session.run(x, record=True)
    logits = session.classify(x)
    return graph, result, logits


# ------------------------------------------------------------------------------ LIF / ALIF
conventions = st.builds(Convention, st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans(),
                        st.sampled_from(["subtract", "zero"]))


@FAST
@given(kind=st.sampled_from(["lif", "alif"]), convention=conventions, n_refractory=st.sampled_from([0, 2]),
       dt=st.sampled_from([1.0, 0.5]), bias=st.booleans(), recurrent=st.booleans(),
       tau_out=st.sampled_from([0.0, 5.0]), readout_steps=st.sampled_from([1, 3, 0]), repeat=st.sampled_from([1, 2]),
       density=st.sampled_from([1.0, 0.3, 0.05]), storage=st.sampled_from(list(STORAGE)),
       input_scale=st.sampled_from([2.0 ** -6, 1.0, 8.0]),
       shape=st.tuples(st.integers(1, 8), st.integers(1, 24), st.integers(1, 4), st.integers(1, 25)),
       seed=st.integers(0, 2 ** 16))
def test_spiking_classifier_is_bit_exact_with_dyadic_weights(kind, convention, n_refractory, dt, bias, recurrent,
                                                             tau_out, readout_steps, repeat, density, storage,
                                                             input_scale, shape, seed):
    n_in, hidden, n_out, steps = shape
    model = spiking_classifier(kind, n_in, hidden, n_out, convention=convention, n_refractory=n_refractory, dt=dt,
                               bias=bias, recurrent=recurrent, tau_out=tau_out, readout_steps=readout_steps,
                               repeat=repeat, density=density, seed=seed, exact=True)
    x = dyadic(torch.randn(steps, n_in, generator=torch.Generator().manual_seed(seed + 1),
                           dtype=torch.float64) * input_scale).numpy()
    fields, outputs, logits = torch_reference(model, x)
    graph, result, engine_logits = engine_run(model, x, sparse_below=STORAGE[storage])
    state = result.states[0]
    for name in ("v", "z", "refractory") + (("b",) if kind == "alif" else ()):
        np.testing.assert_array_equal(state[name], fields[name], err_msg=name)
    np.testing.assert_array_equal(result.outputs, outputs)
    if readout_steps == 1 or len(outputs) == 1:
        np.testing.assert_array_equal(engine_logits, logits)
    else:  # a mean over several steps: torch's reduction adds them in its own (vectorised) order
        np.testing.assert_allclose(engine_logits, logits, rtol=1e-14, atol=1e-15)
    for t, indices in enumerate(result.events[0]):  # the event list is exactly the units that spiked
        np.testing.assert_array_equal(indices, np.flatnonzero(fields["z"][t]))
    np.testing.assert_array_equal(result.event_counts[:, 0], (fields["z"] != 0).sum(1))
    weights = graph.layers[0].input_weight
    assert weights.sparse == (weights.density <= STORAGE[storage])


def test_activity_levels_of_the_spiking_test_span_silent_to_busy():
    """The input scales drawn above do give different activity levels (not all silent)."""
    rates = []
    for scale in (2.0 ** -6, 1.0, 8.0):
        model = spiking_classifier("alif", 4, 32, 2, convention=Convention(), n_refractory=0, dt=1.0, bias=False,
                                   recurrent=True, tau_out=0.0, readout_steps=1, repeat=1, density=1.0, seed=3,
                                   exact=True)
        x = dyadic(torch.randn(40, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * scale).numpy()
        rates.append(Session(freeze(model)).run(x).activity[0])
    assert rates[0] < rates[1] < rates[2] and rates[0] < 0.05 and rates[2] > 0.2


@pytest.mark.parametrize("kind", ["lif", "alif"])
def test_spiking_general_weights_float64_to_1e12_with_identical_spikes(kind):
    model = spiking_classifier(kind, 6, 40, 3, convention=Convention(), n_refractory=1, dt=1.0, bias=True,
                               recurrent=True, tau_out=5.0, readout_steps=2, repeat=1, density=0.3, seed=5,
                               exact=False)
    x = np.random.default_rng(0).normal(size=(60, 6)) * 4
    fields, outputs, logits = torch_reference(model, x)
    _, result, engine_logits = engine_run(model, x)
    assert result.activity[0] > 0.02
    np.testing.assert_array_equal(result.states[0]["z"], fields["z"])
    np.testing.assert_allclose(result.states[0]["v"], fields["v"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result.outputs, outputs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(engine_logits, logits, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ EGRU
def egru_classifier(n_in, hidden, n_out, num_layers, *, reset, reset_gate, zoneout, bias, threshold_mean, density,
                    seed, tau_out=0.0):
    from ranvier.models.classifier import _EGRUCore

    torch.manual_seed(seed)
    egru = EGRU(n_in, hidden, num_layers, reset=reset, reset_gate=reset_gate, zoneout=zoneout, bias=bias,
                threshold_mean=threshold_mean, dropout=0.3, dropconnect=0.3)
    model = SequenceClassifier(_EGRUCore(egru), LeakyReadout(hidden, n_out, tau_out=tau_out), spiking=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in egru.named_parameters():
            if name.startswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    if density < 1.0:
        for k in range(num_layers):
            sparsify(egru, f"weight_ih_l{k}", density, gen)
            sparsify(egru, f"weight_hh_l{k}", density, gen)
    return model.double().eval()


def egru_reference(egru: EGRU, x: np.ndarray):
    with torch.no_grad():
        _, states = egru.trajectory(torch.from_numpy(x).unsqueeze(1))
    return [{name: getattr(s, name)[:, 0].numpy() for name in ("c", "y", "o")} for s in states]


@FAST
@given(reset=st.sampled_from(["threshold", "event"]), reset_gate=st.sampled_from(["after", "before"]),
       zoneout=st.sampled_from([0.0, 0.25, 0.75]), bias=st.booleans(), threshold_mean=st.sampled_from([-3.0, -1.0, 1.5]),
       density=st.sampled_from([1.0, 0.3, 0.05]), storage=st.sampled_from(list(STORAGE)),
       shape=st.tuples(st.integers(1, 6), st.integers(1, 20), st.integers(1, 2), st.integers(1, 20)),
       input_scale=st.sampled_from([0.1, 1.0, 5.0]), seed=st.integers(0, 2 ** 16))
def test_egru_float64_matches_torch(reset, reset_gate, zoneout, bias, threshold_mean, density, storage, shape,
                                    input_scale, seed):
    n_in, hidden, num_layers, steps = shape
    model = egru_classifier(n_in, hidden, 3, num_layers, reset=reset, reset_gate=reset_gate, zoneout=zoneout,
                            bias=bias, threshold_mean=threshold_mean, density=density, seed=seed, tau_out=4.0)
    x = np.random.default_rng(seed).normal(size=(steps, n_in)) * input_scale
    reference = egru_reference(model.core.egru, x)
    _, outputs, logits = torch_reference(model, x)
    graph, result, engine_logits = engine_run(model, x, sparse_below=STORAGE[storage])
    for k, (ours, theirs) in enumerate(zip(result.states, reference)):
        np.testing.assert_array_equal(ours["o"], theirs["o"], err_msg=f"events of layer {k}")
        np.testing.assert_allclose(ours["y"], theirs["y"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ours["c"], theirs["c"], rtol=1e-12, atol=1e-12)
        for t, indices in enumerate(result.events[k]):
            np.testing.assert_array_equal(indices, np.flatnonzero(theirs["o"][t]))
    np.testing.assert_allclose(result.outputs, outputs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(engine_logits, logits, rtol=1e-12, atol=1e-12)


def test_egru_stack_graph_outputs_the_events():
    egru = EGRU(3, 12, 2, threshold_mean=-2.0).double().eval()
    x = np.random.default_rng(1).normal(size=(15, 3))
    reference = egru_reference(egru, x)
    result = Session(freeze(egru)).run(x)
    assert result.outputs.shape == (15, 12)
    np.testing.assert_allclose(result.outputs, reference[-1]["y"], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ float32
@pytest.mark.parametrize("kind", ["lif", "alif", "egru"])
def test_float32_within_tolerance(kind):
    if kind == "egru":
        model = egru_classifier(5, 32, 4, 2, reset="threshold", reset_gate="after", zoneout=0.0, bias=True,
                                threshold_mean=-1.0, density=0.3, seed=2, tau_out=5.0).float()
    else:
        model = spiking_classifier(kind, 5, 32, 4, convention=Convention(), n_refractory=0, dt=1.0, bias=True,
                                   recurrent=True, tau_out=5.0, readout_steps=1, repeat=1, density=0.3, seed=2,
                                   exact=False).float()
    x = np.random.default_rng(2).normal(size=(50, 5)).astype(np.float32) * 3
    xs = torch.from_numpy(x).unsqueeze(1)
    with torch.no_grad():
        logits, activity = model(xs.transpose(0, 1))
        outputs = model.readout(activity)[:, 0].numpy()
    graph, result, engine_logits = engine_run(model, x, dtype=np.float32)
    assert graph.dtype == np.float32 and result.outputs.dtype == np.float32
    assert result.activity[-1] > 0.02
    np.testing.assert_array_equal(result.states[-1]["z" if kind != "egru" else "o"] != 0, activity[:, 0].numpy() != 0)
    np.testing.assert_allclose(result.outputs, outputs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(engine_logits, logits[0].numpy(), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ trained models
def quick_train(model, n_in, steps=8):
    """A few Adam steps on a toy task (class = sign of the summed input), in float64."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 12, n_in, generator=gen, dtype=torch.float64)
    y = (x.sum((1, 2)) > 0).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    losses = []
    for _ in range(steps):
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    assert losses[-1] < losses[0]  # it did learn something
    return model


@pytest.mark.parametrize("kind", ["alif", "egru"])
def test_trained_models_match(kind):
    if kind == "egru":
        model = quick_train(egru_classifier(3, 24, 2, 1, reset="threshold", reset_gate="after", zoneout=0.1, bias=True,
                                            threshold_mean=-1.0, density=0.5, seed=0), 3)
    else:
        model = quick_train(spiking_classifier("alif", 3, 24, 2, convention=Convention(), n_refractory=0, dt=1.0,
                                               bias=True, recurrent=True, tau_out=5.0, readout_steps=1, repeat=1,
                                               density=0.5, seed=0, exact=False), 3)
    x = np.random.default_rng(4).normal(size=(20, 3)) * 2
    _, outputs, logits = torch_reference(model, x)
    _, result, engine_logits = engine_run(model, x)
    assert 0.0 < result.activity[0] < 1.0
    np.testing.assert_allclose(result.outputs, outputs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(engine_logits, logits, rtol=1e-12, atol=1e-12)
    if kind == "alif":  # trained weights rounded onto the dyadic grid: bit-exact again
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(dyadic(p))
        x = dyadic(torch.from_numpy(x)).numpy()
        fields, outputs, logits = torch_reference(model, x)
        _, result, engine_logits = engine_run(model, x)
        np.testing.assert_array_equal(result.states[0]["v"], fields["v"])
        np.testing.assert_array_equal(result.outputs, outputs)
        np.testing.assert_array_equal(engine_logits, logits)


# ------------------------------------------------------------------------------ graph: storage, save, validation
def test_weights_round_trip_and_csr_layout():
    w = np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 3.0, 4.0]])
    csr = Weights.from_matrix(w, sparse_below=1.0)
    assert csr.sparse and csr.nnz == 4
    np.testing.assert_array_equal(csr.indptr, [0, 1, 3, 4])  # column 0 has one entry, column 1 two, column 2 one
    np.testing.assert_array_equal(csr.indices, [1, 0, 2, 2])
    np.testing.assert_array_equal(csr.data, [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(csr.to_matrix(), w)
    dense = Weights.from_matrix(w, sparse_below=0.0)
    assert not dense.sparse and dense.dense_t.flags.c_contiguous
    np.testing.assert_array_equal(dense.to_matrix(), w)


def test_save_load_round_trip(tmp_path):
    model = egru_classifier(3, 10, 2, 2, reset="event", reset_gate="before", zoneout=0.2, bias=True,
                            threshold_mean=-1.0, density=0.2, seed=1)
    graph = freeze(model)
    path = graph.save(tmp_path / "model.ranvier")
    loaded = load_graph(path)
    x = np.random.default_rng(0).normal(size=(12, 3))
    a, b = Session(graph).run(x), Session(loaded).run(x)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    assert loaded.summary() == graph.summary()
    assert not list(tmp_path.glob("*.tmp"))
    with open(path, "rb") as fh:  # a safetensors file: 8-byte header length, then a JSON header
        header_len = int.from_bytes(fh.read(8), "little")
        assert fh.read(1) == b"{" and header_len > 0
    (tmp_path / "bad.ranvier").write_bytes(b"not a graph")
    with pytest.raises(GraphError, match="safetensors"):
        load_graph(tmp_path / "bad.ranvier")
    with pytest.raises(FileNotFoundError):
        load_graph(tmp_path / "missing.ranvier")


def test_validate_rejects_broken_graphs():
    base = lambda: freeze(LIF(3, 6, bias=True), sparse_below=1.0)  # noqa: E731 - a fresh graph per case
    graph = base()
    graph.layers[0].threshold = np.full(5, 0.1)
    with pytest.raises(GraphError, match="threshold must have shape"):
        graph.validate()
    graph = base()
    graph.layers[0].threshold = -graph.layers[0].threshold
    with pytest.raises(GraphError, match="positive"):
        graph.validate()
    graph = base()
    graph.layers[0].input_weight.data[0] = np.nan
    with pytest.raises(GraphError, match="NaN"):
        graph.validate()
    graph = base()
    graph.layers[0].input_weight.indptr[1] = 10_000
    with pytest.raises(GraphError, match="indptr"):
        graph.validate()
    graph = base()
    graph.layers[0].bias = graph.layers[0].bias.astype(np.float32)
    with pytest.raises(GraphError, match="float64"):
        graph.validate()
    graph = freeze(EGRU(2, 4))
    graph.layers[0].zoneout = 1.5
    with pytest.raises(GraphError, match="zoneout"):
        graph.validate()
    graph = freeze(EGRU(2, 4, num_layers=2))
    graph.layers[1], graph.layers[0] = graph.layers[0], graph.layers[1]
    with pytest.raises(GraphError, match="fed"):
        graph.validate()


def test_freeze_refuses_what_the_engine_cannot_run():
    from ranvier.models.classifier import _TorchRNN
    from ranvier.models.language import LanguageModel

    gru = SequenceClassifier(_TorchRNN(torch.nn.GRU(3, 4)), LeakyReadout(4, 2), spiking=False)
    with pytest.raises(GraphError, match="dense"):
        freeze(gru)
    with pytest.raises(GraphError, match="LSTM language model"):
        freeze(LanguageModel("lstm", 20, 8, 8, 1))
    with pytest.raises(GraphError, match="event-gated"):
        freeze(EGRU(2, 4, _event_gating=False))
    with pytest.raises(GraphError, match="LIF, ALIF and EGRU"):
        freeze(torch.nn.Linear(2, 3))
    with pytest.raises(GraphError, match="dtype"):
        freeze(LIF(2, 3), dtype=np.float16)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("storage", ["dense", "csr"])
@pytest.mark.parametrize("kind", ["lif", "alif", "egru"])
def test_two_threads_are_bit_identical_to_one(kind, storage, dtype, monkeypatch):
    from ranvier.engine import run as engine_run_module

    monkeypatch.setattr(engine_run_module, "PARALLEL_MIN_WORK", 0)  # every product takes the two-thread path
    torch.manual_seed(0)
    if kind == "egru":
        model = EGRU(6, 24, 2, threshold_mean=-2.0).double().eval()
    else:
        model = (LIF if kind == "lif" else ALIF)(6, 24, threshold=0.05).double()
    graph = freeze(model, sparse_below=STORAGE[storage]).astype(dtype)
    x = np.random.default_rng(3).normal(size=(40, 6)) * 2
    one, two = Session(graph).run(x, record=True), Session(graph, threads=2).run(x, record=True)
    assert one.event_counts.sum() > 0
    np.testing.assert_array_equal(one.outputs, two.outputs)
    for a, b in zip(one.states, two.states):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    with pytest.raises(ValueError, match="threads"):
        Session(graph, threads=3)


def test_layers_whose_weights_exceed_l2_split_from_less_work():
    from ranvier.engine import run as engine_run_module

    torch.manual_seed(0)
    small = Session(freeze(EGRU(8, 32), dtype=np.float32), threads=2)._layers[0]
    large = Session(freeze(EGRU(512, 512), dtype=np.float32), threads=2)._layers[0]  # 2 × 3 MiB of weights
    assert small.min_work == engine_run_module.PARALLEL_MIN_WORK
    assert large.min_work == engine_run_module.PARALLEL_MIN_WORK_STREAMED < engine_run_module.PARALLEL_MIN_WORK


def test_csr_weights_reach_the_kernels_with_unsigned_pointers_and_indices():
    # signed column pointers cost a negative-index test per non-zero in numba's scatter loop
    egru = EGRU(16, 16).eval()
    set_mask(egru, "weight_hh_l0", torch.rand(48, 16) < 0.1)
    layer = Session(freeze(egru, dtype=np.float32))._layers[0]
    _, indptr, indices, _ = layer.whh
    assert indptr.size > 0 and indptr.dtype == np.uint64 and indices.dtype == np.uint16


def test_session_rejects_bad_input_and_resets():
    session = Session(freeze(LIF(3, 8, threshold=0.05)))
    with pytest.raises(ValueError, match="shape"):
        session.step(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        session.step(np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="empty"):
        session.run(np.zeros((0, 3)))
    with pytest.raises(TypeError, match="Graph"):
        Session(LIF(3, 8))
    x = np.random.default_rng(0).normal(size=(10, 3)) * 5
    first = session.run(x).outputs
    assert session.event_counts == [len(session.events[0])]
    session.reset()
    np.testing.assert_array_equal(session.run(x).outputs, first)
    np.testing.assert_array_equal(Session(freeze(LIF(3, 8)).astype(np.float32)).step(x[0]).dtype, np.float32)


# ------------------------------------------------------------------------------ language models
def test_lm_session_matches_torch_and_generates():
    from ranvier.models.language import LanguageModel

    torch.manual_seed(0)
    model = LanguageModel("egru", 30, 8, 12, 2, egru_options=dict(threshold_mean=-1.0)).double().eval()
    tokens = np.random.default_rng(0).integers(0, 30, size=(25, 2))
    with torch.no_grad():
        logits, _, _ = model(torch.from_numpy(tokens))
        reference = torch.nn.functional.cross_entropy(logits[:-1].reshape(-1, 30),
                                                      torch.from_numpy(tokens[1:]).reshape(-1)).item()
    session = Session(freeze(model))
    assert session.folded  # a small vocabulary: the embedding is folded into the first layer
    engine_logits = session.run(tokens[:, 0]).outputs
    np.testing.assert_allclose(engine_logits, logits[:, 0].numpy(), rtol=1e-12, atol=1e-12)
    unfolded = Session(freeze(model), fold_embedding=False)
    assert not unfolded.folded
    np.testing.assert_allclose(unfolded.run(tokens[:, 0]).outputs, engine_logits, rtol=1e-12, atol=1e-12)
    from ranvier.engine import run as engine_run_module

    with pytest.MonkeyPatch.context() as mp:  # two threads everywhere (decoder halves included): bit-identical
        mp.setattr(engine_run_module, "PARALLEL_MIN_WORK", 0)
        np.testing.assert_array_equal(Session(freeze(model), threads=2).run(tokens[:, 0]).outputs, engine_logits)
    result = perplexity(session, tokens)
    assert result["tokens"] == 24 * 2
    assert abs(result["loss"] - reference) < 1e-12
    with pytest.raises(ValueError, match="vocabulary"):
        session.step(30)
    with pytest.raises(TypeError, match="token id"):
        session.step(np.zeros(8))
    session.reset()
    greedy = generate(session, [1, 2, 3], 5, temperature=0.0)
    assert len(greedy.tokens) == 5 and len(greedy.step_seconds) == 8 and len(greedy.event_counts[0]) == 2
    session.reset()
    again = generate(session, [1, 2, 3], 5, temperature=0.0)
    assert again.tokens == greedy.tokens
    untied = LanguageModel("egru", 30, 8, 12, 1)  # hidden ≠ embedding: a projection before the tied decoder
    graph = freeze(untied)
    assert graph.head.projection is not None and graph.head.tied


def test_tiny_trained_ptb_lm_perplexity_equals_torch(tmp_path, data_dir):
    """A tiny EGRU trained for a few steps on real PTB: the engine's perplexity over validation
    streams equals the torch evaluation (``train_lm``'s own ``_perplexity``) in float64 and float32."""
    from tiny_configs import tiny_lm

    from ranvier.train_lm import LanguageModelJob

    job = LanguageModelJob(tiny_lm(data_dir, tmp_path, "egru", threshold_mean=-3.0))
    optimizer = torch.optim.Adam(job.model.parameters(), lr=job.cfg.lr)
    for step in range(4):
        loss, _ = job.loss(step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    limit = 60
    for dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        job.model.to(dtype)
        torch_result = job._perplexity(job.valid_data, limit=limit)  # 10 streams of `limit` predictions
        engine = perplexity(Session(freeze(job.model, dtype=dtype)), job.valid_data[:limit + 1].numpy())
        assert engine["tokens"] == limit * job.valid_data.shape[1]
        assert abs(engine["ppl"] / torch_result["ppl"] - 1.0) < tolerance, (dtype, engine["ppl"], torch_result["ppl"])
        activity = 1.0 - torch_result["activity_sparsity"]
        assert 0.01 < activity < 0.99 and abs(np.mean(engine["activity"]) - activity) < 1e-3


# ------------------------------------------------------------------------------ command line
def test_cli_run_classifies_a_sample_with_latency_and_events(tmp_path, capsys):
    from ranvier import cli
    from ranvier.config import build_config
    from ranvier.train import fit

    run_dir = tmp_path / "alif"
    fit(build_config(dict(task="mnist1d", model="alif", hidden_size=16, batch_size=64, epochs=1, max_steps=3,
                          progress=False, threads=1, out=str(run_dir))))
    capsys.readouterr()
    assert cli.main(["run", str(run_dir), "--sample", "2", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "ALIF 16 units" in out and "step   39:" in out and "events" in out and "µs" in out
    prediction = int(out.split("prediction ")[1].split()[0])
    torch_prediction = int(out.split("torch model: ")[1].split(")")[0])
    assert prediction == torch_prediction
    assert cli.main(["run", str(run_dir), "--sample", "100000"]) == 2
    assert "--sample must lie in" in capsys.readouterr().err
    assert cli.main(["generate", str(run_dir), "--prompt", "the"]) == 2
    assert "needs a language model" in capsys.readouterr().err


def test_cli_generate_prints_tokens_latency_and_events(tmp_path, capsys, data_dir):
    from tiny_configs import tiny_lm

    from ranvier import cli
    from ranvier.checkpoint import save_checkpoint
    from ranvier.config import to_toml
    from ranvier.train_lm import LanguageModelJob

    cfg = tiny_lm(data_dir, tmp_path, "egru", threshold_mean=-3.0)
    job = LanguageModelJob(cfg)  # an untrained model in a run directory is enough for the command
    cfg.run_dir().mkdir(parents=True)
    (cfg.run_dir() / "config.toml").write_text(to_toml(cfg))
    save_checkpoint(cfg.run_dir() / "checkpoint.safetensors", job.model, meta={"step": 0})
    assert cli.main(["generate", str(cfg.run_dir()), "--prompt", "the market qwzx", "--tokens", "4",
                     "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert "(read as <unk>): qwzx" in out and "tokens/s" in out
    lines = [line for line in out.splitlines() if line.startswith(("prompt", "token "))]
    assert len(lines) == 3 + 4 and all("µs, events" in line and "/24" in line for line in lines)
    assert out.splitlines()[-2].startswith("the market qwzx")
    assert cli.main(["run", str(cfg.run_dir())]) == 2
