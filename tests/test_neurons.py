"""LIF/ALIF: golden trajectories, equivalences, gradients, and input/state validation."""
import math

import numpy as np
import pytest
import torch

from ranvier import (ALIF, EPROP_CONVENTION, LIF, LSNN_CONVENTION, ALIFState, FastSigmoid, LIFState,
                     PiecewiseLinear, Surrogate)

TAU_HALF = 1.0 / math.log(2.0)  # exp(−1/τ) = 0.5: decays of one half keep hand calculations exact


def single_neuron(cls, **kw):
    layer = cls(1, 1, recurrent=False, tau_mem=TAU_HALF, **kw).double()
    with torch.no_grad():
        layer.input_weight.fill_(1.0)
    return layer


# ---------------------------------------------------------------- golden trajectories (by hand)
def test_lif_golden_trajectory_lsnn():
    # v_t = ½v + ½·1 − z_{t−1}·0.3 ;  z_t = H((v_{t−1} − 0.3)/0.3)
    layer = single_neuron(LIF, threshold=0.3)
    z, states = layer.trajectory(torch.ones(5, 1, 1, dtype=torch.float64))
    assert z.flatten().tolist() == [0, 1, 1, 1, 1]
    torch.testing.assert_close(states.v.flatten(), torch.tensor([0.5, 0.75, 0.575, 0.4875, 0.44375], dtype=torch.float64))


def test_lif_golden_trajectory_refractory():
    layer = single_neuron(LIF, threshold=0.3, n_refractory=1)
    z, states = layer.trajectory(torch.ones(5, 1, 1, dtype=torch.float64))
    assert z.flatten().tolist() == [0, 1, 0, 1, 0]
    torch.testing.assert_close(states.v.flatten(), torch.tensor([0.5, 0.75, 0.575, 0.7875, 0.59375], dtype=torch.float64))


def test_alif_golden_trajectory_lsnn():
    # b_t = ½b + ½z_{t−1}; A_t = 0.3 + b_t; v_t = ½v + ½ − z_{t−1}A_t; z_t = H((v_{t−1} − A_t)/A_t)
    layer = single_neuron(ALIF, threshold=0.3, beta=1.0, tau_adapt=TAU_HALF)
    z, states = layer.trajectory(torch.ones(5, 1, 1, dtype=torch.float64))
    assert z.flatten().tolist() == [0, 1, 0, 0, 1]
    torch.testing.assert_close(states.v.flatten(), torch.tensor([0.5, 0.75, 0.075, 0.5375, 0.76875], dtype=torch.float64))
    torch.testing.assert_close(states.b.flatten(), torch.tensor([0.0, 0.0, 0.5, 0.25, 0.125], dtype=torch.float64))


def test_alif_golden_trajectory_eprop():
    # b_t = ½b + z_{t−1}; A_t = 0.3 + b_t; v_t = ½v + I − z_{t−1}·0.3; z_t = H((v_t − A_t)/0.3), I = 0.5
    layer = single_neuron(ALIF, threshold=0.3, beta=1.0, tau_adapt=TAU_HALF, convention=EPROP_CONVENTION)
    z, states = layer.trajectory(torch.full((5, 1, 1), 0.5, dtype=torch.float64))
    assert z.flatten().tolist() == [1, 0, 0, 1, 0]
    torch.testing.assert_close(states.v.flatten(), torch.tensor([0.5, 0.45, 0.725, 0.8625, 0.63125], dtype=torch.float64))
    torch.testing.assert_close(states.b.flatten(), torch.tensor([0.0, 1.0, 0.5, 0.25, 1.125], dtype=torch.float64))


def numpy_lsnn_reference(x, w_in, w_rec, tau_m, tau_a, beta, thr, n_ref):
    """SCIENCE.md §1.2 written out literally in numpy (independent of ranvier's code)."""
    T, B, _ = x.shape
    H = w_in.shape[0]
    a, r = np.exp(-1 / tau_m), np.exp(-1 / tau_a)
    v, z, b = np.zeros((B, H)), np.zeros((B, H)), np.zeros((B, H))
    last_spike = np.full((B, H), -10**9)
    out = []
    for t in range(T):
        b = r * b + (1 - r) * z
        A = thr + beta * b
        i_t = x[t] @ w_in.T + z @ w_rec.T
        v_new = a * v + (1 - a) * i_t - z * A
        z = ((v - A) / A > 0).astype(float)
        z[(t - last_spike) <= n_ref] = 0.0
        last_spike[z > 0] = t
        v = v_new
        out.append(z)
    return np.stack(out)


@pytest.mark.parametrize("n_ref", [0, 3])
def test_lsnn_layer_matches_literal_numpy_reference(n_ref):
    torch.manual_seed(1)
    H = 12
    beta = torch.cat([torch.zeros(5), torch.full((7,), 1.8)])
    layer = ALIF(4, H, beta=beta, tau_adapt=50.0, threshold=0.05, n_refractory=n_ref).double()
    x = torch.randn(60, 3, 4, dtype=torch.float64)
    z, _ = layer(x)
    w_rec = (layer.recurrent_weight * layer.recurrent_mask).detach().numpy()
    expected = numpy_lsnn_reference(x.numpy(), layer.input_weight.detach().numpy(), w_rec, 20.0, 50.0,
                                    beta.double().numpy(), 0.05, n_ref)
    assert z.mean() > 0.02  # the comparison is only meaningful if neurons fire
    np.testing.assert_array_equal(z.detach().numpy(), expected)


# ---------------------------------------------------------------- equivalences
LAYERS = [
    lambda **kw: LIF(3, 7, threshold=0.05, **kw),
    lambda **kw: LIF(3, 7, threshold=0.05, n_refractory=2, convention=EPROP_CONVENTION, **kw),
    lambda **kw: ALIF(3, 7, threshold=0.05, **kw),
    lambda **kw: ALIF(3, 7, threshold=0.05, beta=torch.linspace(0, 2, 7), n_refractory=2, **kw),
]


@pytest.mark.parametrize("make", LAYERS)
def test_sequence_equals_cell_in_a_loop(make):
    layer = make()
    x = torch.randn(20, 4, 3)
    z_seq, final = layer(x)
    state, zs = None, []
    for x_t in x:
        z_t, state = layer.cell(x_t, state)
        zs.append(z_t)
    torch.testing.assert_close(torch.stack(zs), z_seq, rtol=0, atol=0)
    # one [T·B, I] matmul vs T small ones round differently: spikes equal, membranes to 1e-6
    for a, b in zip(final, state):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make", LAYERS)
def test_two_chunks_equal_one_run(make):
    layer = make()
    x = torch.randn(30, 2, 3)
    z_all, final_all = layer(x)
    z1, s1 = layer(x[:13])
    z2, s2 = layer(x[13:], s1)
    torch.testing.assert_close(torch.cat([z1, z2]), z_all, rtol=0, atol=0)
    for a, b in zip(final_all, s2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("make", LAYERS)
def test_batch_first_equivalence(make):
    torch.manual_seed(3)
    tm = make()
    torch.manual_seed(3)
    bf = make(batch_first=True)
    x = torch.randn(15, 5, 3)
    z_tm, s_tm = tm(x)
    z_bf, s_bf = bf(x.transpose(0, 1))
    torch.testing.assert_close(z_bf.transpose(0, 1), z_tm, rtol=0, atol=0)
    for a, b in zip(s_tm, s_bf):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_no_self_connections_by_default():
    layer = ALIF(2, 6)
    assert torch.all(torch.diagonal(layer.recurrent_weight * layer.recurrent_mask) == 0)
    z, _ = layer(torch.randn(5, 2, 2))
    z.sum().backward()
    assert torch.all(torch.diagonal(layer.recurrent_weight.grad * layer.recurrent_mask) == 0)
    assert torch.diagonal(ALIF(2, 6, self_connections=True).recurrent_mask).all()


# ---------------------------------------------------------------- gradients
class _ZeroSurrogate(Surrogate):
    """Zero pseudo-derivative: the layer is then piecewise smooth and gradcheck is exact."""

    def derivative(self, x):
        return torch.zeros_like(x)

    def primitive(self, x):
        return torch.zeros_like(x)


class _StraightThrough(PiecewiseLinear):
    """Same forward and pseudo-derivative built by plain autograd, independent of ranvier's Function."""

    def __call__(self, x):
        heaviside = (x > 0).to(x.dtype)
        return heaviside + self.primitive(x) - self.primitive(x).detach()


@pytest.mark.parametrize("cls", [LIF, ALIF])
@pytest.mark.parametrize("convention", [LSNN_CONVENTION, EPROP_CONVENTION])
def test_gradcheck_float64_smooth_paths(cls, convention):
    """With a zero pseudo-derivative the spikes are locally constant, so finite differences
    check every smooth path (membrane, adaptation, reset, input and recurrent currents)."""
    layer = cls(3, 5, threshold=0.05, surrogate=_ZeroSurrogate(), convention=convention).double()
    readout = torch.randn(5, dtype=torch.float64)

    def membrane_readout(x, v0, w_in, w_rec):
        zeros = torch.zeros(2, 5, dtype=torch.float64)
        state = layer.State(v0, *([zeros] * (len(layer.State._fields) - 1)))
        currents = torch.einsum("tbi,hi->tbh", x, w_in)  # what SpikingRecurrent._prepare computes
        step = layer.make_neuron_step()
        outputs = []
        for current in currents.unbind(0):
            current = current + state.z @ (w_rec * layer.recurrent_mask).t()
            _, state = step(current, state)
            outputs.append((state.v * readout).sum(-1))
        return torch.stack(outputs)

    x = torch.randn(12, 2, 3, dtype=torch.float64, requires_grad=True)
    v0 = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    w_in = layer.input_weight.detach().clone().requires_grad_(True)
    w_rec = layer.recurrent_weight.detach().clone().requires_grad_(True)
    # the functional re-run must agree with the module itself
    with torch.no_grad():
        zeros = torch.zeros(2, 5, dtype=torch.float64)
        _, states = layer.trajectory(x, layer.State(v0, *([zeros] * (len(layer.State._fields) - 1))))
        torch.testing.assert_close(membrane_readout(x, v0, w_in, w_rec), (states.v * readout).sum(-1))
    assert torch.autograd.gradcheck(membrane_readout, (x, v0, w_in, w_rec), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", [LIF, ALIF])
def test_surrogate_gradient_matches_straight_through_autograd(cls):
    torch.manual_seed(5)
    ref = cls(3, 9, threshold=0.05, n_refractory=1).double()
    st = cls(3, 9, threshold=0.05, n_refractory=1, surrogate=_StraightThrough()).double()
    st.load_state_dict(ref.state_dict())
    x = torch.randn(25, 4, 3, dtype=torch.float64)
    target = torch.randn(25, 4, 9, dtype=torch.float64)
    grads = []
    for layer in (ref, st):
        z, _ = layer(x)
        ((z - target) ** 2).sum().backward()
        grads.append([p.grad.clone() for p in (layer.input_weight, layer.recurrent_weight)])
    assert grads[0][0].abs().sum() > 0
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fast_sigmoid_layer_trains_gradients_flow():
    layer = ALIF(3, 6, surrogate=FastSigmoid(), threshold=0.05)
    z, _ = layer(torch.randn(10, 2, 3))
    z.sum().backward()
    assert layer.input_weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("cls,state_cls", [(LIF, LIFState), (ALIF, ALIFState)])
def test_wrong_state_shape_raises(cls, state_cls):
    layer = cls(3, 5)
    bad = state_cls(*[torch.zeros(2, 4)] * len(state_cls._fields))
    with pytest.raises(ValueError, match=r"state\.v has shape \(2, 4\) but must be \(2, 5\)"):
        layer(torch.randn(6, 2, 3), bad)
    good_for_other_batch = layer.initial_state(3)
    with pytest.raises(ValueError, match="must be"):
        layer(torch.randn(6, 2, 3), good_for_other_batch)
    with pytest.raises(TypeError, match="state must be"):
        layer(torch.randn(6, 2, 3), (torch.zeros(2, 5),))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_input_rejected(bad):
    x = torch.randn(5, 2, 3)
    x[2, 1, 0] = bad
    with pytest.raises(ValueError, match="NaN"):
        ALIF(3, 4)(x)


def test_finite_input_whose_sum_overflows_is_accepted():
    """The NaN/inf check sums first; a sum that overflows from finite values is not an error."""
    z, _ = ALIF(3, 4)(torch.full((5, 2, 3), 3e38))
    assert z.shape == (5, 2, 4)


@pytest.mark.parametrize("x,match", [
    (torch.randn(5, 3), "3 dims"),
    (torch.randn(5, 2, 4), "4 features"),
    (torch.zeros(5, 2, 3, dtype=torch.long), "floating-point"),
    (torch.zeros(0, 2, 3), "empty"),
])
def test_bad_inputs_rejected(x, match):
    with pytest.raises((ValueError, TypeError), match=match):
        LIF(3, 4)(x)


def test_per_neuron_vector_shape_checked():
    with pytest.raises(ValueError, match="beta must be a scalar or have shape"):
        ALIF(3, 4, beta=torch.ones(5))


def test_time_constants_and_thresholds_are_in_state_dict():
    keys = set(ALIF(3, 4).state_dict())
    assert {"tau_mem", "tau_adapt", "beta", "threshold", "input_weight", "recurrent_weight"} <= keys
