"""Learnable delays (ranvier.layers.delay): exact shifts, gradients, chunking, memory."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from ranvier.layers import Delay, DelayedLinear
from ranvier.layers.delay import delay_shift, delayed_linear

from conftest import REPO


def hard_shift(x, k):
    """x(t − k) with zeros before t = 0, for one whole k per channel ([T, B, C])."""
    out = torch.zeros_like(x)
    for c, kc in enumerate(k.tolist()):
        if kc < x.shape[0]:
            out[kc:, :, c] = x[: x.shape[0] - kc, :, c]
    return out


def reference_delayed_linear(x, w, d):
    """Σ_i w_ij x_i(t − d_ij) by interpolating every synapse on its own (materialises [T, B, O, I])."""
    steps = x.shape[0]
    k = d.detach().floor()
    f = d - k
    k = k.long()
    xpad = torch.cat([torch.zeros(int(k.max()) + 2, *x.shape[1:], dtype=x.dtype), x])
    pad = int(k.max()) + 2
    t = torch.arange(steps)[:, None, None]  # [T, 1, 1]
    rows = t + pad - k[None]  # [T, O, I]
    idx_i = torch.arange(x.shape[-1])[None, None, :].expand_as(rows)
    now = xpad[rows, :, idx_i]  # [T, O, I, B]
    before = xpad[rows - 1, :, idx_i]
    shifted = (1 - f)[None, ..., None] * now + f[None, ..., None] * before
    return torch.einsum("toib,oi->tbo", shifted, w)


def test_integer_delay_is_an_exact_hard_shift():
    x = torch.randn(12, 3, 5)
    layer = Delay(5, max_delay=10.0)
    k = torch.tensor([0, 1, 3, 7, 10])
    with torch.no_grad():
        layer.delay.copy_(k.float())
    y, _ = layer(x)
    assert torch.equal(y, hard_shift(x, k))


def test_integer_per_synapse_delays_are_hard_shifts():
    x = torch.randn(9, 2, 4, dtype=torch.float64)
    w = torch.randn(3, 4, dtype=torch.float64)
    k = torch.randint(0, 6, (3, 4))
    out, _ = delayed_linear(x, w, k.double())
    expected = torch.zeros(9, 2, 3, dtype=torch.float64)
    for j in range(3):
        for i in range(4):
            expected[:, :, j] += w[j, i] * hard_shift(x[:, :, i:i + 1], k[j, i:i + 1])[:, :, 0]
    torch.testing.assert_close(out, expected, rtol=1e-13, atol=1e-13)


def test_fractional_delay_interpolates_between_whole_shifts():
    x = torch.randn(10, 2, 3)
    d = torch.tensor([0.25, 2.5, 4.75])
    y, _ = delay_shift(x, d)
    k, f = d.floor().long(), d - d.floor()
    expected = (1 - f) * hard_shift(x, k) + f * hard_shift(x, k + 1)
    torch.testing.assert_close(y, expected)


def away_from_integers(shape, high, dtype=torch.float64):
    """Delays whose fractions are in [0.2, 0.8], so finite differences never cross a whole step."""
    return (torch.randint(0, high, shape).to(dtype) + 0.2 + 0.6 * torch.rand(shape, dtype=dtype))


def test_delay_gradient_matches_finite_differences():
    x = torch.randn(8, 2, 3, dtype=torch.float64, requires_grad=True)
    d = away_from_integers((3,), 4).requires_grad_()
    history = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, d, h: delay_shift(x, d, h)[0], (x, d, history))


def test_delayed_linear_gradient_matches_finite_differences():
    x = torch.randn(7, 2, 4, dtype=torch.float64)
    x[2] = 0.0  # a silent step: skipped when accumulating weight/delay gradients, still gets ∂L/∂x
    x.requires_grad_()
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    d = away_from_integers((3, 4), 5).requires_grad_()
    history = torch.randn(5, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, d, h: delayed_linear(x, w, d, h)[0], (x, w, d, history))


def test_delay_gradient_is_minus_the_time_derivative_of_the_shifted_input():
    """SCIENCE.md §4.3: ∂L/∂d = Σ_t δ(t)·(−∂_t x̃(t − d)); for x̃ piecewise linear that slope is x(t−k) − x(t−k−1)."""
    x = torch.randn(10, 1, 1, dtype=torch.float64)
    d = torch.tensor([2.4], dtype=torch.float64, requires_grad=True)
    delta = torch.randn(10, 1, 1, dtype=torch.float64)
    (delay_shift(x, d)[0] * delta).sum().backward()
    slope = hard_shift(x, torch.tensor([2])) - hard_shift(x, torch.tensor([3]))
    torch.testing.assert_close(d.grad, -(delta * slope).sum().reshape(1))


def test_delayed_linear_equals_the_per_synapse_reference_with_gradients():
    x = (torch.rand(11, 3, 6, dtype=torch.float64) < 0.3).double().requires_grad_()
    w = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    d = (torch.rand(4, 6, dtype=torch.float64) * 6).requires_grad_()
    out, _ = delayed_linear(x, w, d)
    ref = reference_delayed_linear(x, w, d)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, w, d), g)
    ref_grads = torch.autograd.grad(ref, (x, w, d), g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cls", ["delay", "linear"])
def test_chunks_with_history_equal_the_whole_sequence(cls):
    x = torch.randn(13, 2, 5, dtype=torch.float64)
    layer = (Delay(5, 6.5) if cls == "delay" else DelayedLinear(5, 3, 6.5)).double()
    with torch.no_grad():
        layer.delay.uniform_(0, 6.5)
    whole, _ = layer(x)
    first, history = layer(x[:4])
    second, _ = layer(x[4:], history)
    torch.testing.assert_close(torch.cat([first, second]), whole)


def test_delays_are_projected_into_range_and_readable():
    layer = DelayedLinear(3, 2, max_delay=5.0)
    with torch.no_grad():
        layer.delay.copy_(torch.tensor([[-1.0, 2.5, 9.0], [0.0, 5.0, 4.9]]))
    layer(torch.randn(4, 1, 3))
    assert torch.equal(layer.delay.detach(), torch.tensor([[0.0, 2.5, 5.0], [0.0, 5.0, 4.9]]))
    assert torch.equal(layer.delays, layer.delay.detach()) and not layer.delays.requires_grad
    default = Delay(100, max_delay=10.0)
    assert 0.0 <= float(default.delays.min()) and float(default.delays.max()) <= 4.0  # U(0, 4)


def test_batch_first_matches_time_major():
    layer = DelayedLinear(4, 3, 3.0)
    x = torch.randn(6, 2, 4)
    bf = DelayedLinear(4, 3, 3.0, batch_first=True)
    bf.load_state_dict(layer.state_dict())
    torch.testing.assert_close(bf(x.transpose(0, 1))[0].transpose(0, 1), layer(x)[0])


def test_bad_inputs_get_clear_errors():
    layer = DelayedLinear(3, 2, 4.0)
    with pytest.raises(ValueError, match="features"):
        layer(torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match="NaN"):
        layer(torch.full((5, 2, 3), float("nan")))
    with pytest.raises(ValueError, match="history"):
        layer(torch.randn(5, 2, 3), torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="max_delay"):
        Delay(3, max_delay=-1.0)
    with pytest.raises(ValueError, match=">= 0"):
        delayed_linear(torch.randn(4, 1, 3), torch.ones(2, 3), -torch.ones(2, 3))
    with pytest.raises(ValueError, match=">= 0"):
        delay_shift(torch.randn(4, 1, 3), torch.tensor([0.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="delay must have shape"):
        delay_shift(torch.randn(4, 1, 3), torch.zeros(2))


def saved_bytes(max_delay, n_in=64, n_out=48, steps=6, batch=2):
    """Bytes autograd keeps for the backward pass of one DelayedLinear call."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    layer = DelayedLinear(n_in, n_out, max_delay)
    with torch.no_grad():
        layer.delay.uniform_(0, max_delay)  # every whole shift 0..D_max occurs
    x = torch.randn(steps, batch, n_in)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    return total


def test_saved_memory_does_not_grow_with_the_delay_range_times_synapses():
    small, large = saved_bytes(4.0), saved_bytes(400.0)
    # only the history grows (⌈D_max⌉ × B × in floats); never D_max × in × out
    assert large - small <= (400 - 4) * 2 * 64 * 4
    assert large < 0.1 * 400 * 64 * 48 * 4  # a dense [out, in, D_max] kernel


PEAK_SCRIPT = textwrap.dedent("""
    import resource, sys, torch
    from ranvier.layers import DelayedLinear
    torch.set_num_threads(1)
    n = 256
    x = torch.rand(8, 2, n).lt(0.5).float()

    def run(d_max):
        layer = DelayedLinear(n, n, d_max)
        with torch.no_grad():
            layer.delay.uniform_(0, d_max)
        layer(x)[0].sum().backward()

    run(2.0)  # warm-up with a small range: allocator pools and code paths
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(float(sys.argv[1]))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
""")


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_peak_memory_of_a_large_delay_range_stays_far_below_a_dense_kernel():
    """Forward + backward with D_max = 512 and delays spread over all of it, in a fresh process:
    a dense in × out × D_max float32 kernel would be 128 MiB; the peak grows by a few MiB at most."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    growth_kib = int(subprocess.run([sys.executable, "-c", PEAK_SCRIPT, "512"], capture_output=True, text=True,
                                    env=env, check=True, timeout=120).stdout.split()[-1])
    dense_kib = 256 * 256 * 512 * 4 / 1024
    assert growth_kib < 0.05 * dense_kib, f"peak RSS grew {growth_kib} KiB (dense kernel {dense_kib:.0f} KiB)"


# ------------------------------------------------------------------------------ recurrent delays
from ranvier import ALIF, LIF, DelayedALIF, DelayedLIF  # noqa: E402
from ranvier.neurons.common import EPROP_CONVENTION  # noqa: E402


def unrolled_reference(layer, x):
    """The delayed recurrent layer written out: keep every spike vector in a list and read
    z_i(t − 1 − d_i) from it by explicit interpolation; one neuron step per time step."""
    steps, batch, _ = x.shape
    hidden = layer.hidden_size
    w_in, w_rec = layer.input_weight, layer.recurrent_weight * layer.recurrent_mask
    d = layer.recurrent_delay
    k = d.detach().floor().long()
    f = d - k
    neuron_step = layer.make_neuron_step()
    state = type(layer).__mro__[2].initial_state(layer, batch, dtype=x.dtype)  # the plain LIF/ALIF state
    spikes = []

    def past(t):  # z(t), zero before the start
        return spikes[t] if t >= 0 else torch.zeros(batch, hidden, dtype=x.dtype)

    out = []
    for t in range(steps):
        delayed = torch.stack([(1 - f[i]) * past(t - 1 - int(k[i]))[:, i] + f[i] * past(t - 2 - int(k[i]))[:, i]
                               for i in range(hidden)], dim=1)
        z, state = neuron_step(x[t] @ w_in.t() + delayed @ w_rec.t(), state)
        spikes.append(z)
        out.append(z)
    return torch.stack(out)


@pytest.mark.parametrize("cls", [DelayedLIF, DelayedALIF])
def test_recurrent_delays_equal_an_unrolled_reference(cls):
    torch.manual_seed(3)
    layer = cls(4, 6, max_delay=5.0, delay_init=(0.0, 5.0), threshold=0.3, convention=EPROP_CONVENTION).double()
    with torch.no_grad():
        layer.recurrent_weight.mul_(4.0)
    x = (torch.rand(25, 3, 4, dtype=torch.float64) < 0.4).double() * 2.0
    z, _ = layer(x)
    ref = unrolled_reference(layer, x)
    assert z.sum() > 10  # the test means something only if there are spikes to delay
    torch.testing.assert_close(z, ref, rtol=0, atol=0)
    g = torch.randn_like(z)
    params = [layer.input_weight, layer.recurrent_weight, layer.recurrent_delay]
    grads = torch.autograd.grad(z, params, g)
    ref_grads = torch.autograd.grad(ref, params, g)
    assert grads[2].abs().sum() > 0
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("plain, delayed", [(LIF, DelayedLIF), (ALIF, DelayedALIF)])
def test_zero_recurrent_delay_is_the_plain_layer(plain, delayed):
    a = plain(3, 5, threshold=0.2)
    b = delayed(3, 5, threshold=0.2, max_delay=3.0)
    b.load_state_dict({**a.state_dict(), "recurrent_delay": torch.zeros(5)})
    x = torch.randn(20, 2, 3)
    torch.testing.assert_close(b(x)[0], a(x)[0], rtol=0, atol=0)
    za, sa = a.trajectory(x)
    zb, sb = b.trajectory(x)
    torch.testing.assert_close(sb.v, sa.v, rtol=0, atol=0)


def test_recurrent_delay_chunks_equal_the_whole_sequence_and_state_is_checked():
    layer = DelayedLIF(3, 5, max_delay=4.5, delay_init=(0.0, 4.5), threshold=0.2).double()
    x = torch.randn(16, 2, 3, dtype=torch.float64)
    whole, _ = layer(x)
    first, state = layer(x[:7])
    second, _ = layer(x[7:], state)
    torch.testing.assert_close(torch.cat([first, second]), whole, rtol=0, atol=0)
    with pytest.raises(ValueError, match="history"):
        layer(x, state._replace(history=state.history[1:]))  # one step short
    with pytest.raises(ValueError, match="recurrent"):
        DelayedLIF(3, 5, max_delay=2.0, recurrent=False)
