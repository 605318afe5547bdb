"""Fused kernels (ranvier.kernels) against the pure-torch reference, in float64.

Spikes must be equal and every gradient (input, input and recurrent weights, bias, initial
state) must agree to 1e-6 relative, over neuron kind × convention × reset × mask × shapes.
"""
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ranvier import ALIF, EPROP_CONVENTION, LIF, LSNN_CONVENTION, FastSigmoid, PiecewiseLinear, Surrogate
from ranvier.kernels import KernelUnsupportedError
from ranvier.kernels import lif as lif_kernel
from ranvier.sparse.masks import set_mask

F64 = torch.float64
CONVENTIONS = {"lsnn": LSNN_CONVENTION, "eprop": EPROP_CONVENTION}
# "reset" axis: how the reset term (and the refractory period after it) enters the dynamics.
RESETS = {"subtract": {}, "detached": {"detach_reset": True}, "refractory": {"n_refractory": 2}}
SHAPES = dict(T=st.integers(1, 14), B=st.integers(1, 5), I=st.integers(1, 4), H=st.integers(1, 9),
              surrogate=st.sampled_from([PiecewiseLinear(), PiecewiseLinear(gamma=0.7, width=0.5), FastSigmoid(10.0)]),
              dt=st.sampled_from([1.0, 0.5]), seed=st.integers(0, 2**16))


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
    for k, (a, b) in enumerate(zip(g_r, g_k)):
        if a is None:
            assert b is None or not b.any(), f"gradient {k}"
            continue
        scale = a.abs().max().clamp(min=1e-12)
        assert ((a - b).abs().max() / scale) <= 1e-6, f"gradient {k}: {(a - b).abs().max() / scale}"
    return z_r


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("reset", list(RESETS))
@pytest.mark.parametrize("convention", list(CONVENTIONS))
@pytest.mark.parametrize("cls", [LIF, ALIF])
@settings(max_examples=3, deadline=None)
@given(**SHAPES)
def test_kernel_equals_reference(cls, convention, reset, masked, T, B, I, H, surrogate, dt, seed):
    kw = dict(convention=CONVENTIONS[convention], surrogate=surrogate, dt=dt, **RESETS[reset])
    if cls is ALIF:
        kw.update(beta=1.5, tau_adapt=30.0)
    ref, ker = make_pair(cls, I, H, **kw)
    assert_same(ref, ker, T, B, seed, masked=masked)


@pytest.mark.parametrize("weight_grad", ["gemm", "sparse"])
@pytest.mark.parametrize("cls", [LIF, ALIF])
def test_kernel_equals_reference_long_and_active(cls, weight_grad, monkeypatch):
    """A longer run with many spikes, several threads' batch slices and self-connections; the
    recurrent-weight gradient both as one GEMM and as the sparse row loop."""
    monkeypatch.setattr(lif_kernel, "SPARSE_WEIGHT_GRAD_MAX_ACTIVITY", 1.0 if weight_grad == "sparse" else 0.0)
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
