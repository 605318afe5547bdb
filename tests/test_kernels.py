"""Fused kernels (ranvier.kernels) against the pure-torch reference, in float64.

Spikes must be equal and every gradient (input, input and recurrent weights, bias, initial
state) must agree to 1e-6 relative, over neuron kind × convention × reset × mask × shapes.
"""
import copy
import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ranvier import (
    ALIF,
    EPROP_CONVENTION,
    LIF,
    LSNN_CONVENTION,
    FastSigmoid,
    PiecewiseLinear,
    Surrogate,
)
from ranvier.kernels import KernelUnsupportedError
from ranvier.kernels import lif as lif_kernel
from ranvier.sparse.masks import set_mask

F64 = torch.float64
# (the third: reset by the adaptive threshold without normalising by it, as benchmarks/speed.py
# runs ALIF; the kernel keeps A for every step but not the surrogate argument)
CONVENTIONS = {"lsnn": LSNN_CONVENTION, "eprop": EPROP_CONVENTION,
               "reset-by-A": dataclasses.replace(EPROP_CONVENTION, reset_by_adaptive=True)}
# How the kernels compute a step's recurrent product: always one GEMM over the batch slice, always
# the sparse gathers and dot products, or switching by activity (the default).
PRODUCTS = {"gemm": 0.0, "loops": 2.0, "auto": lif_kernel.GEMM_MIN_ACTIVITY}
# "reset" axis: how the reset term (and the refractory period after it) enters the dynamics.
RESETS = {"subtract": {}, "detached": {"detach_reset": True}, "refractory": {"n_refractory": 2}}
SHAPES = dict(T=st.integers(1, 14), B=st.integers(1, 5), I=st.integers(1, 4), H=st.integers(1, 9),
              surrogate=st.sampled_from([PiecewiseLinear(), PiecewiseLinear(gamma=0.7, width=0.5), FastSigmoid(10.0)]),
              dt=st.sampled_from([1.0, 0.5]), seed=st.integers(0, 2**16), product=st.sampled_from(list(PRODUCTS)))


def make_pair(cls, I, H, **kw):
    ref = cls(I, H, backend="reference", bias=True, threshold=0.3, **kw).double()
    ker = copy.deepcopy(ref)
    ker.backend = "kernel"
    return ref, ker


def random_state(layer, B, gen):
    state = layer.initial_state(B, dtype=F64)
    fields = []
    for name, value in zip(state._fields, state):
        if name == "refractory":
            fields.append(torch.randint(0, 3, value.shape, generator=gen).to(F64))
        elif name == "z":  # spikes are 0 or 1/dt, but any value must work
            fields.append((torch.rand(value.shape, generator=gen, dtype=F64) < 0.3).to(F64).requires_grad_())
        else:
            fields.append((torch.rand(value.shape, generator=gen, dtype=F64) * 0.5).requires_grad_())
    return type(state)(*fields)


def run_and_grad(layer, x, state, weights):
    x = x.clone().requires_grad_()
    z, final = layer(x, state)
    loss = (z * weights[0]).sum() + (final.v * weights[1]).sum() + (final.z * weights[2]).sum()
    if hasattr(final, "b"):
        loss = loss + (final.b * weights[3]).sum()
    inputs = [x, layer.input_weight, layer.bias] + ([layer.recurrent_weight] if layer.recurrent_weight is not None else [])
    inputs += [s for name, s in zip(state._fields, state) if name != "refractory"]
    return z, final, torch.autograd.grad(loss, inputs, allow_unused=True)


def assert_grads_close(reference, kernel, rtol=1e-6):
    """Every gradient within ``rtol`` of the reference, relative to its largest entry."""
    for k, (a, b) in enumerate(zip(reference, kernel)):
        if a is None:
            assert b is None or not b.any(), f"gradient {k}"
            continue
        scale = a.abs().max().clamp(min=1e-12)
        assert ((a - b).abs().max() / scale) <= rtol, f"gradient {k}: {(a - b).abs().max() / scale}"


def assert_same(ref, ker, T, B, seed, masked=False):
    gen = torch.Generator().manual_seed(seed)
    if masked:
        for layer in (ref, ker):
            g = torch.Generator().manual_seed(seed)
            set_mask(layer, "input_weight", torch.rand(layer.input_weight.shape, generator=g) < 0.7)
            if layer.recurrent_weight is not None:
                set_mask(layer, "recurrent_weight", torch.rand(layer.recurrent_weight.shape, generator=g) < 0.5)
    x = torch.randn(T, B, ref.input_size, generator=gen, dtype=F64) * 2.0
    state = random_state(ref, B, gen)
    H = ref.hidden_size
    weights = [torch.randn(T, B, H, generator=gen, dtype=F64)] + [torch.randn(B, H, generator=gen, dtype=F64) for _ in range(3)]
    z_r, s_r, g_r = run_and_grad(ref, x, state, weights)
    z_k, s_k, g_k = run_and_grad(ker, x, state, weights)
    assert torch.equal(z_r, z_k)
    for name, a, b in zip(s_r._fields, s_r, s_k):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=f"final state {name}")
    assert_grads_close(g_r, g_k)
    return z_r


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("reset", list(RESETS))
@pytest.mark.parametrize("convention", list(CONVENTIONS))
@pytest.mark.parametrize("cls", [LIF, ALIF])
@settings(max_examples=3, deadline=None)
@given(**SHAPES)
def test_kernel_equals_reference(cls, convention, reset, masked, T, B, I, H, surrogate, dt, seed, product):
    kw = dict(convention=CONVENTIONS[convention], surrogate=surrogate, dt=dt, **RESETS[reset])
    if cls is ALIF:
        kw.update(beta=1.5, tau_adapt=30.0)
    ref, ker = make_pair(cls, I, H, **kw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lif_kernel, "GEMM_MIN_ACTIVITY", PRODUCTS[product])
        assert_same(ref, ker, T, B, seed, masked=masked)


@pytest.mark.parametrize("product", list(PRODUCTS))
@pytest.mark.parametrize("weight_grad", ["gemm", "sparse"])
@pytest.mark.parametrize("cls", [LIF, ALIF])
def test_kernel_equals_reference_long_and_active(cls, weight_grad, product, monkeypatch):
    """A longer run with many spikes, several threads' batch slices and self-connections; the
    recurrent-weight gradient both as one GEMM and as the sparse row loop, the recurrent products
    as GEMMs, as loops, and switching between them."""
    monkeypatch.setattr(lif_kernel, "SPARSE_WEIGHT_GRAD_MAX_ACTIVITY", 1.0 if weight_grad == "sparse" else 0.0)
    monkeypatch.setattr(lif_kernel, "GEMM_MIN_ACTIVITY", PRODUCTS[product])
    torch.set_num_threads(2)
    ref, ker = make_pair(cls, 3, 16, self_connections=True, tau_mem=5.0)
    z = assert_same(ref, ker, T=60, B=7, seed=3)
    assert 0.05 < z.mean() < 0.9  # the comparison exercised spikes and silence


def test_kernel_without_recurrence_and_per_neuron_constants():
    tau = torch.linspace(2.0, 30.0, 6)
    ref, ker = make_pair(ALIF, 2, 6, recurrent=False, tau_mem=tau, beta=torch.linspace(0, 2, 6))
    assert_same(ref, ker, T=9, B=3, seed=1)


def test_gradcheck_membrane_path():
    """Finite differences apply where no pseudo-derivative is involved: a high threshold keeps
    every unit silent and outside the surrogate's support, so v_T is linear in the currents, the
    weights and the initial state (including the initial spikes, through the reset)."""
    layer = LIF(2, 4, threshold=50.0, surrogate=PiecewiseLinear(width=0.1)).double()
    k = lif_kernel._constants(layer, F64)
    T, B = 5, 3
    cur = torch.randn(T, B, 4, dtype=F64, requires_grad=True)
    w = (layer.recurrent_weight.detach().clone()).requires_grad_()
    v0 = torch.randn(B, 4, dtype=F64, requires_grad=True)
    z0 = torch.rand(B, 4, dtype=F64, requires_grad=True)
    zero = torch.zeros(B, 4, dtype=F64)

    def v_final(cur, w, v0, z0):
        z, v, _, _ = lif_kernel.SpikingRecurrentFunction.apply(cur, w, v0, z0, zero, zero, k)
        return v + z.sum(0)

    assert torch.autograd.gradcheck(v_final, (cur, w, v0, z0))


@pytest.mark.parametrize("cls", [LIF, ALIF])
def test_loss_on_the_final_membrane_only(cls):
    """When the loss reads only v_T, the spike train's gradient is undefined (the kernel does not
    materialise a zero tensor for it); the backward must still run over every step."""
    ref, ker = make_pair(cls, 3, 6)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(12, 4, 3, generator=gen, dtype=F64) * 2.0
    grads = []
    for layer in (ref, ker):
        _, final = layer(x)
        loss = (final.v * torch.arange(6, dtype=F64)).sum()
        grads.append(torch.autograd.grad(loss, [layer.input_weight, layer.bias, layer.recurrent_weight]))
    assert all(g.abs().sum() > 0 for g in grads[0])
    assert_grads_close(*grads)


def test_gradient_is_zero_outside_the_surrogate_support():
    """Sparse BPTT must not lose gradient: with a narrow support, units far from threshold pass
    none, and the kernel agrees with the reference on which ones."""
    ref, ker = make_pair(LIF, 3, 12, surrogate=PiecewiseLinear(width=0.05))
    assert_same(ref, ker, T=30, B=4, seed=5)


# ---------------------------------------------------------------- dispatch
class Tanhish(Surrogate):
    def derivative(self, x):
        return 1 - torch.tanh(x) ** 2

    def primitive(self, x):
        return torch.tanh(x)


def test_auto_uses_the_kernel_on_cpu(monkeypatch):
    calls = []
    original = lif_kernel.run
    monkeypatch.setattr(lif_kernel, "run", lambda *a: calls.append(1) or original(*a))
    LIF(3, 5)(torch.randn(4, 2, 3))
    assert calls == [1]
    LIF(3, 5, backend="reference")(torch.randn(4, 2, 3))
    assert calls == [1]


def test_auto_falls_back_for_unsupported_and_kernel_raises():
    x = torch.randn(6, 2, 3, dtype=F64)
    auto = ALIF(3, 5, surrogate=Tanhish(), threshold=0.1).double()
    ref = copy.deepcopy(auto)
    ref.backend = "reference"
    assert torch.equal(auto(x)[0], ref(x)[0])
    forced = copy.deepcopy(auto)
    forced.backend = "kernel"
    with pytest.raises(KernelUnsupportedError, match="surrogate Tanhish"):
        forced(x)
    with pytest.raises(ValueError, match="unknown backend"):
        LIF(3, 5, backend="fast")


def test_zero_reset_falls_back_to_the_reference():
    # The hard reset of issue 10 (the NIR one) is not in the kernel: auto must not ignore it.
    from ranvier.neurons.common import Convention
    x = torch.randn(9, 2, 3, dtype=F64)
    layer = LIF(3, 5, threshold=0.1, convention=Convention(reset="zero")).double()
    ref = copy.deepcopy(layer)
    ref.backend = "reference"
    assert torch.equal(layer(x)[0], ref(x)[0])
    layer.backend = "kernel"
    with pytest.raises(KernelUnsupportedError, match="reset='zero'"):
        layer(x)


def test_float32_kernel_matches_reference_closely():
    ref = LIF(4, 32, backend="reference", threshold=0.3, tau_mem=5.0)
    ker = copy.deepcopy(ref)
    ker.backend = "kernel"
    x = torch.randn(40, 8, 4) * 2
    z_r, s_r = ref(x)
    z_k, s_k = ker(x)
    assert (z_r != z_k).float().mean() < 1e-3  # float32 rounding may flip a spike at threshold
    ref_grad = torch.autograd.grad(ref(x)[1].v.sum(), ref.recurrent_weight)[0]
    ker_grad = torch.autograd.grad(ker(x)[1].v.sum(), ker.recurrent_weight)[0]
    torch.testing.assert_close(ker_grad, ref_grad, rtol=1e-3, atol=1e-4)
    assert torch.isfinite(s_k.v).all()


# ---------------------------------------------------------------- EGRU
# The EGRU kernel's paths: the compiled loop with gathers and dot products, the same loop with a
# GEMM per step for every recurrent product (reset gate after), and the wide-layer fallback
# without MKL that calls the loop one step at a time with torch matmuls in between (forced here).
# (STEPWISE_MIN_HIDDEN, GEMM_MIN_ACTIVITY, COMPACT_MAX_FIRING): the recurrent-weight gradient
# over the units that fired only (1.0) or over all of them (0.0 unless none fired) is covered too
EGRU_PATHS = {"loop": (None, 2.0, 1.0), "loop-gemm": (None, 0.0, 0.0), "stepwise": (1, 0.2, 0.6)}


def set_egru_path(mp, path):
    from ranvier.kernels import egru as egru_kernel

    stepwise_min_hidden, gemm_min_activity, compact_max_firing = EGRU_PATHS[path]
    mp.setattr(egru_kernel, "STEPWISE_MIN_HIDDEN", stepwise_min_hidden)
    mp.setattr(egru_kernel, "GEMM_MIN_ACTIVITY", gemm_min_activity)
    mp.setattr(egru_kernel, "COMPACT_MAX_FIRING", compact_max_firing)


@pytest.mark.parametrize("path", list(EGRU_PATHS))
def test_float32_egru_kernel_matches_reference_closely(path, monkeypatch):
    """float32 takes the vectorised exp for σ and tanh: outputs and gradients stay within float32
    rounding of the reference (an event may flip where ĉ lands on its threshold)."""
    from ranvier import EGRU

    set_egru_path(monkeypatch, path)
    torch.manual_seed(0)
    ref = EGRU(5, 48, threshold_mean=-1.0, backend="reference")
    ker = copy.deepcopy(ref)
    ker.backend = "kernel"
    x = torch.randn(30, 6, 5) * 2
    y_r, _ = ref(x)
    y_k, _ = ker(x)
    assert 0.05 < (y_r != 0).float().mean() < 0.95  # events present, and silence
    assert ((y_r != 0) != (y_k != 0)).float().mean() < 1e-3
    torch.testing.assert_close(y_k, y_r, rtol=1e-4, atol=1e-5)
    g_r = torch.autograd.grad(ref(x)[0].pow(2).sum(), ref.weight_hh_l0)[0]
    g_k = torch.autograd.grad(ker(x)[0].pow(2).sum(), ker.weight_hh_l0)[0]
    torch.testing.assert_close(g_k, g_r, rtol=1e-3, atol=1e-4)


EGRU_OPTIONS = {
    "code": {},
    "paper": {"reset": "event", "reset_gate": "before"},
    "event-after": {"reset": "event"},
    "threshold-before": {"reset_gate": "before"},
    "zoneout": {"zoneout": 0.3},
    "dropconnect-2layers": {"dropconnect": 0.3, "num_layers": 2, "dropout": 0.2},
    "beta-nobias-fastsigmoid": {"threshold_init": "beta", "threshold_mean": 0.3, "bias": False,
                                "surrogate": FastSigmoid(5.0)},
    "narrow-support": {"epsilon": 4.0, "gamma": 0.5},
}


def egru_grads(layer, x, state, weights, train):
    from ranvier import EGRU  # noqa: F401

    layer.train(train)
    torch.manual_seed(11)  # the same dropout / zoneout / DropConnect draws for both backends
    x = x.clone().requires_grad_()
    y, finals = layer(x, state)
    loss = (y * weights[0]).sum() + sum((f * w).sum() for s in finals for f, w in zip(s, weights[1:]))
    inputs = [x, *layer.parameters()] + [t for s in state for t in (s.c, s.y, s.trace)]
    return y, finals, torch.autograd.grad(loss, inputs, allow_unused=True)


@pytest.mark.parametrize("path", list(EGRU_PATHS))
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("option", list(EGRU_OPTIONS))
@settings(max_examples=2, deadline=None)
@given(T=st.integers(1, 12), B=st.integers(1, 5), I=st.integers(1, 4), H=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_egru_kernel_equals_reference(option, train, path, T, B, I, H, seed):
    """Every kernel path (``EGRU_PATHS``), each forced here at small H."""
    with pytest.MonkeyPatch.context() as mp:
        set_egru_path(mp, path)
        _check_egru_kernel_equals_reference(option, train, T, B, I, H, seed)


def _check_egru_kernel_equals_reference(option, train, T, B, I, H, seed):
    from ranvier import EGRU

    kw = dict(EGRU_OPTIONS[option])
    kw.setdefault("threshold_mean", -0.5)  # about 20-40 % events at these sizes
    torch.manual_seed(seed)
    masked = seed % 2 == 0
    ref = EGRU(I, H, backend="reference", **kw).double()
    if masked:
        set_mask(ref, "weight_hh_l0", torch.rand(3 * H, H) < 0.6)
        set_mask(ref, "weight_ih_l0", torch.rand(3 * H, I) < 0.8)
    ker = copy.deepcopy(ref)
    ker.backend = "kernel"
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, I, generator=gen, dtype=F64)
    state = [ref._zero_state(B, x)._replace(
        c=torch.randn(B, H, generator=gen, dtype=F64).requires_grad_(),
        y=(torch.randn(B, H, generator=gen, dtype=F64) * (torch.rand(B, H, generator=gen) < 0.5)).requires_grad_(),
        trace=torch.randn(B, H, generator=gen, dtype=F64).requires_grad_()) for _ in range(ref.num_layers)]
    weights = [torch.randn(T, B, H, generator=gen, dtype=F64)] + [torch.randn(B, H, generator=gen, dtype=F64) for _ in range(5)]
    y_r, f_r, g_r = egru_grads(ref, x, state, weights, train)
    y_k, f_k, g_k = egru_grads(ker, x, state, weights, train)
    assert torch.equal(y_r != 0, y_k != 0)  # the same events
    torch.testing.assert_close(y_k, y_r, rtol=1e-12, atol=1e-12)  # sigmoid/tanh may differ by an ulp
    for s_r, s_k in zip(f_r, f_k):
        assert torch.equal(s_r.o, s_k.o)
        for name, a, b in zip(s_r._fields, s_r, s_k):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=f"final state {name}")
    assert_grads_close(g_r, g_k)


def test_egru_dispatch():
    from ranvier import EGRU
    from ranvier.kernels import egru as egru_kernel

    x = torch.randn(5, 2, 3)
    assert egru_kernel.select(EGRU(3, 4), x, None)
    assert not egru_kernel.select(EGRU(3, 4, backend="reference"), x, None)
    assert egru_kernel.select(EGRU(3, 256), x, None)  # wide layers too
    with pytest.raises(KernelUnsupportedError, match="surrogate Tanhish"):
        EGRU(3, 4, surrogate=Tanhish(), backend="kernel")(x)
    # trajectory() runs the kernel too (its states are rebuilt from ĉ and y), and agrees
    layer = EGRU(3, 4, threshold_mean=-1.0).double()
    xd = x.double()
    y, _ = layer(xd)
    y_traj, states = layer.trajectory(xd)
    torch.testing.assert_close(y, y_traj, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("option", ["code", "paper", "zoneout", "dropconnect-2layers"])
def test_egru_kernel_trajectory_equals_reference(option, train):
    """``trajectory()`` through the kernel: every field of every step's state equals the
    reference's, and so do the gradients of a loss that reads them all, including an activity
    regulariser on ``o`` (the language model's), whose gradient reaches ĉ and ϑ only through
    the pseudo-derivative."""
    from ranvier import EGRU

    kw = dict(EGRU_OPTIONS[option])
    torch.manual_seed(3)
    ref = EGRU(3, 6, backend="reference", threshold_mean=-0.5, **kw).double().train(train)
    ker = copy.deepcopy(ref)
    ker.backend = "kernel"
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(9, 4, 3, generator=gen, dtype=F64) * 2
    weights = [torch.randn(9, 4, 6, generator=gen, dtype=F64) for _ in range(5)]

    def run(layer):
        torch.manual_seed(11)  # the same dropout / zoneout / DropConnect draws
        xg = x.clone().requires_grad_()
        y, states = layer.trajectory(xg)
        loss = (y * weights[0]).sum()
        for s in states:
            loss = loss + sum((f * w).sum() for f, w in zip((s.c, s.trace, s.margin), weights[1:]))
            loss = loss + (s.o.mean() - 0.1) ** 2 + (s.o * weights[4]).sum()
        params = [xg, *layer.parameters()]
        return y, states, torch.autograd.grad(loss, params, allow_unused=True)

    y_r, st_r, g_r = run(ref)
    y_k, st_k, g_k = run(ker)
    assert 0.03 < torch.cat([s.o for s in st_r]).mean() < 0.95  # events and silence
    torch.testing.assert_close(y_k, y_r, rtol=1e-12, atol=1e-12)
    for s_r, s_k in zip(st_r, st_k):
        assert torch.equal(s_r.o, s_k.o)
        for name, a, b in zip(s_r._fields, s_r, s_k):
            assert a.shape == b.shape == (9, 4, 6), name
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=f"trajectory field {name}")
    assert_grads_close(g_r, g_k)


@pytest.mark.parametrize("path", list(EGRU_PATHS))
def test_egru_gradcheck_without_events(path, monkeypatch):
    """With thresholds far above |ĉ| and a narrow support there are no events and no
    pseudo-derivative, so the layer is a smooth gated recurrence and finite differences apply
    (gates, candidate, zoneout-free update, trace, initial state)."""
    import numpy as np

    from ranvier.kernels import _egru_numba as enb
    from ranvier.kernels import egru as egru_kernel

    set_egru_path(monkeypatch, path)
    T, B, H = 4, 2, 3
    gen = torch.Generator().manual_seed(0)
    proj = torch.randn(T, B, 3 * H, generator=gen, dtype=F64, requires_grad=True)
    w = (torch.randn(3 * H, H, generator=gen, dtype=F64) * 0.5).requires_grad_()
    b = torch.randn(3 * H, generator=gen, dtype=F64, requires_grad=True)
    thr = torch.full((H,), 5.0, dtype=F64, requires_grad=True)
    c0 = torch.randn(B, H, generator=gen, dtype=F64, requires_grad=True)
    tr0 = torch.randn(B, H, generator=gen, dtype=F64, requires_grad=True)
    y0 = torch.zeros(B, H, dtype=F64)
    consts = np.array([0.7, 0.01, 0.0, 0.1], dtype=np.float64)
    for before in (0, 1):
        flags = np.array([0, before, 1, enb.ZONEOUT_NONE, enb.PIECEWISE_LINEAR, 0], dtype=np.int64)

        def f(proj, w, b, thr, c0, tr0):
            y, chat, trace = egru_kernel.EGRUFunction.apply(proj, w, b, thr, c0, y0, tr0, None, consts, flags)
            return chat, trace

        assert torch.autograd.gradcheck(f, (proj, w, b, thr, c0, tr0))


def test_inference_without_grad_keeps_one_step_buffers_and_agrees():
    """Under no_grad the kernels store nothing per step for a backward; results are unchanged."""
    from ranvier import EGRU

    x = torch.randn(25, 3, 4, dtype=F64)
    for make in (lambda b: ALIF(4, 6, threshold=0.3, backend=b), lambda b: EGRU(4, 6, threshold_mean=-1.0, backend=b)):
        torch.manual_seed(0)
        ref = make("reference").double()
        ker = copy.deepcopy(ref)
        ker.backend = "kernel"
        with torch.no_grad():
            (y_r, s_r), (y_k, s_k) = ref(x), ker(x)
        torch.testing.assert_close(y_k, y_r, rtol=1e-12, atol=1e-12)
        for a, b in zip(s_r if isinstance(s_r, tuple) and not isinstance(s_r, list) else s_r[0],
                        s_k if isinstance(s_k, tuple) and not isinstance(s_k, list) else s_k[0]):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_kernel_runs_in_a_forked_child():
    """The thread pool of the parent does not exist in a fork (DataLoader workers): no hang."""
    import multiprocessing as mp

    torch.set_num_threads(2)
    layer = LIF(3, 8)
    layer(torch.randn(4, 4, 3))  # the parent now has a pool
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        result = pool.apply_async(_forked_run)
        assert result.get(timeout=60) == (4, 4, 8)


def _forked_run():
    torch.set_num_threads(2)
    return tuple(LIF(3, 8)(torch.randn(4, 4, 3))[0].shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b_transposed", [False, True])
def test_gemm_acc_matches_numpy(dtype, b_transposed):
    """The in-loop GEMM (``c += a @ b``, row-major, ``b`` optionally given as ``bᵀ``) on
    non-square shapes, so that a swapped dimension or leading dimension shows."""
    import numpy as np

    from ranvier.kernels import _blas

    gen = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(*shape, generator=gen, dtype=dtype).numpy() for shape in ((5, 7), (7, 3), (5, 3)))
    expected = c + a @ b
    _blas.gemm_acc(_blas.gemm_for(dtype), a, np.ascontiguousarray(b.T) if b_transposed else b, c, b_transposed,
                   _blas.gemm_scratch(a))
    np.testing.assert_allclose(c, expected, rtol=1e-5 if dtype == torch.float32 else 1e-12)


def test_blas_found_in_torch_on_x86_linux():
    """torch's x86 Linux wheels link MKL; if the kernels stop finding it they silently lose their
    dense path, so this machine type must find it."""
    import platform

    from ranvier.kernels import _blas

    if platform.system() != "Linux" or platform.machine() != "x86_64":
        pytest.skip("MKL is looked for in torch's x86 Linux builds")
    assert _blas.AVAILABLE


def test_openmp_found_in_torch_on_linux():
    """The slices run on torch's OpenMP threads (``_threads.py``); if libgomp stops being found
    they fall back to a thread pool that waits for a core behind torch's spinning worker."""
    import sys

    from ranvier.kernels import _threads

    if not sys.platform.startswith("linux"):
        pytest.skip("torch links libgomp on Linux")
    assert _threads.USE_OPENMP


@pytest.mark.parametrize("route", ["openmp", "pool"])
@pytest.mark.parametrize("cls", [LIF, ALIF])
def test_threads_route_matches_one_thread(cls, route, monkeypatch):
    """Two, three or four batch slices, on torch's OpenMP threads or on the pool, give the
    one-thread result: the same spikes, and the state and weight gradient up to the summation
    order of the GEMMs over other slice shapes. More slices than threads checks that every
    slice runs."""
    from ranvier.kernels import _threads

    if route == "openmp" and not _threads.USE_OPENMP:
        pytest.skip("no libgomp in this torch build")
    monkeypatch.setattr(_threads, "USE_OPENMP", route == "openmp")
    torch.manual_seed(0)
    layer = cls(4, 24, tau_mem=5.0, backend="kernel").double()
    x = torch.randn(20, 9, 4, dtype=torch.float64) * 3

    def run():
        layer.zero_grad()
        z, state = layer(x)
        (z.sum() + state.v.pow(2).sum()).backward()
        return z.detach(), state.v.detach(), layer.recurrent_weight.grad.clone()

    torch.set_num_threads(1)
    expected = run()
    for chunks in (2, 3, 4):
        monkeypatch.setattr(_threads, "num_chunks", lambda batch, c=chunks: min(c, batch))
        monkeypatch.setattr(lif_kernel, "num_chunks", lambda batch, c=chunks: min(c, batch))
        torch.set_num_threads(2)
        z, v, grad = run()
        assert torch.equal(z, expected[0])
        torch.testing.assert_close(v, expected[1], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, expected[2], rtol=1e-12, atol=1e-12)


def test_an_error_inside_a_slice_reaches_the_caller():
    """An exception in a slice running on another thread is raised by ``run_chunks``."""
    from ranvier.kernels import _threads

    def fail_on_second(k, start, end):
        if k == 1:
            raise ValueError(f"slice {k} ({start}:{end})")

    with pytest.raises(ValueError, match="slice 1"):
        _threads.run_chunks(fail_on_second, 8, 2)


def test_keep_freed_memory_on_linux():
    """glibc accepts the settings (the training loop and benchmarks/speed.py rely on it), and
    large blocks still allocate, free and reallocate afterwards."""
    import sys

    from ranvier.core.allocator import keep_freed_memory

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt")
    assert keep_freed_memory()
    for _ in range(3):
        block = torch.ones(40 * 2**20 // 4)  # 40 MiB: above glibc's largest mmap threshold
        assert block.sum() == block.numel()
        del block


def test_event_weight_grad_skips_silent_units_exactly(monkeypatch):
    """The recurrent-weight gradient over the units that fired equals the full product, with
    silent columns exactly zero, whichever way it is computed (events of an initial state may be
    negative, so the check is ``!= 0``, not ``> 0``)."""
    from ranvier.kernels import egru as egru_kernel

    gen = torch.Generator().manual_seed(0)
    d_out = torch.randn(40, 12, generator=gen, dtype=F64)
    events = torch.rand(40, 6, generator=gen, dtype=F64) * (torch.rand(40, 6, generator=gen) < 0.3)
    events[:, [1, 4]] = 0.0  # two units without an event
    events[0, 2] = -0.5
    events[:, 5] = 0.0
    events[7, 5] = -0.25  # a unit whose only event is negative
    for limit in (0.0, 1.0):
        monkeypatch.setattr(egru_kernel, "COMPACT_MAX_FIRING", limit)
        out = egru_kernel.event_weight_grad(d_out, events)
        assert out.shape == (12, 6) and out.is_contiguous()
        torch.testing.assert_close(out, d_out.t() @ events, rtol=1e-12, atol=1e-12)
        assert not out[:, [1, 4]].any()
