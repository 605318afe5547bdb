"""EGRU: GRU equivalence, literal reference, golden trajectories, gradients, sparsity, validation."""
import math

import pytest
import torch

from ranvier import PiecewiseLinear, Surrogate
from ranvier.neurons.egru import (EGRU, EGRUCell, EGRUState, activity_sparsity, backward_sparsity,
                                  egru_step)

MODES = [("threshold", "after"), ("threshold", "before"), ("event", "after"), ("event", "before")]


def _copy_from_gru(egru: EGRU, gru: torch.nn.GRU) -> None:
    """torch orders gate chunks [r, z, n]; ranvier (EvNN) orders them [z, r, g]."""
    def reorder(w):
        r, z, n = w.chunk(3, 0)
        return torch.cat([z, r, n], 0)

    with torch.no_grad():
        for name, p in gru.named_parameters():
            getattr(egru, name).copy_(reorder(p))


# ---------------------------------------------------------------- equivalences with a GRU
@pytest.mark.parametrize("num_layers,batch_first,bias,reset", [
    (1, False, True, "threshold"), (3, False, True, "threshold"), (2, True, True, "event"), (2, False, False, "threshold"),
])
def test_without_event_gating_equals_torch_gru(num_layers, batch_first, bias, reset):
    gru = torch.nn.GRU(4, 6, num_layers, bias=bias, batch_first=batch_first).double()
    egru = EGRU(4, 6, num_layers, bias=bias, batch_first=batch_first, reset=reset, _event_gating=False).double()
    _copy_from_gru(egru, gru)
    x = torch.randn(3, 9, 4, dtype=torch.float64)  # [B, T, I] or [T, B, I]
    batch = x.shape[0] if batch_first else x.shape[1]
    h0 = torch.randn(num_layers, batch, 6, dtype=torch.float64)
    zeros = torch.zeros(batch, 6, dtype=torch.float64)
    out_ref, h_ref = gru(x, h0)
    out, state = egru(x, [EGRUState(h0[k], h0[k], zeros, zeros, zeros) for k in range(num_layers)])
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    for k in range(num_layers):
        torch.testing.assert_close(state[k].c, h_ref[k], rtol=0, atol=1e-10)
        torch.testing.assert_close(state[k].y, h_ref[k], rtol=0, atol=1e-10)
        assert torch.all(state[k].o == 1)


def test_without_event_gating_gradients_equal_torch_gru():
    gru = torch.nn.GRU(3, 5, 2).double()
    egru = EGRU(3, 5, 2, _event_gating=False).double()
    _copy_from_gru(egru, gru)
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    for model in (gru, egru):
        out, _ = model(x)
        (out ** 2).sum().backward()
    for name, p in gru.named_parameters():
        r, z, n = p.grad.chunk(3, 0)
        torch.testing.assert_close(getattr(egru, name).grad, torch.cat([z, r, n], 0), rtol=0, atol=1e-10)


def literal_reference(x, layers, reset, reset_gate):
    """SCIENCE.md §3.2/§3.3 written out term by term, independent of ranvier's code.

    ``layers`` holds (W_ih, W_hh, b_ih, b_hh, thr) per layer. Written with the paper's update gate
    u = 1 − z (so c = u·g + (1 − u)·c), to check the z/u convention as well.
    """
    T, B, _ = x.shape
    out = x
    for W, R, b, rb, thr in layers:
        H = R.shape[1]
        c, y = torch.zeros(B, H, dtype=x.dtype), torch.zeros(B, H, dtype=x.dtype)
        ys, os = [], []
        for t in range(T):
            wx = out[t] @ W.T + b
            Wz, Wr, Wg = wx[:, :H], wx[:, H:2 * H], wx[:, 2 * H:]
            Rz, Rr, Rg = R[:H], R[H:2 * H], R[2 * H:]
            bz, br, bg = rb[:H], rb[H:2 * H], rb[2 * H:]
            u = 1.0 - torch.sigmoid(Wz + y @ Rz.T + bz)
            r = torch.sigmoid(Wr + y @ Rr.T + br)
            if reset_gate == "after":
                g = torch.tanh(Wg + r * (y @ Rg.T + bg))
            else:
                g = torch.tanh(Wg + (r * y) @ Rg.T + bg)
            if reset == "event":  # paper Eq. 2: c_t = u g + (1 − u) c_{t−1} − y_{t−1}; y_t = c_t H(c_t − ϑ)
                c = u * g + (1.0 - u) * c - y
                o = (c > thr).double()
                y = c * o
            else:  # EvNN code: soft reset by the threshold
                c_hat = u * g + (1.0 - u) * c
                o = (c_hat > thr).double()
                y = c_hat * o
                c = c_hat - o * thr
            ys.append(y)
            os.append(o)
        out = torch.stack(ys)
    return out, torch.stack(os)


@pytest.mark.parametrize("reset,reset_gate", MODES)
def test_matches_literal_reference(reset, reset_gate):
    torch.manual_seed(2)
    egru = EGRU(3, 7, 2, reset=reset, reset_gate=reset_gate, threshold_mean=-1.5).double()
    with torch.no_grad():
        for name, p in egru.named_parameters():
            if name.startswith("bias"):
                p.normal_(0.0, 0.3)  # non-zero biases tell "r ⊙ (R y + b)" from "R (r ⊙ y) + b"
    x = torch.randn(25, 4, 3, dtype=torch.float64) * 2
    y, states = egru.trajectory(x)
    layers = [(getattr(egru, f"weight_ih_l{k}").detach(), getattr(egru, f"weight_hh_l{k}").detach(),
               getattr(egru, f"bias_ih_l{k}").detach(), getattr(egru, f"bias_hh_l{k}").detach(),
               egru.threshold_values()[k].detach()) for k in range(2)]
    y_ref, o_ref = literal_reference(x, layers, reset, reset_gate)
    assert 0.05 < states[0].o.mean() < 0.95 and 0.05 < states[1].o.mean() < 0.95  # events actually happen
    torch.testing.assert_close(states[1].o, o_ref, rtol=0, atol=0)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- golden trajectories (by hand)
def one_unit(reset):
    """1 unit, ϑ = σ(0) = 0.5. z and r see nothing but zero weights: z = r = σ(0) = 0.5.
    The candidate reads the input and (with weight 1) the recurrent input through the reset
    gate: g_t = tanh(x_t + r·(1·y_{t−1})) = tanh(x_t + 0.5·y_{t−1})."""
    egru = EGRU(1, 1, reset=reset).double()
    with torch.no_grad():
        egru.weight_ih_l0.copy_(torch.tensor([[0.0], [0.0], [1.0]]))
        egru.weight_hh_l0.copy_(torch.tensor([[0.0], [0.0], [1.0]]))
        egru.bias_ih_l0.zero_()
        egru.bias_hh_l0.zero_()
        egru.threshold_logit_l0.zero_()
    return egru


def golden_input(y_expected):
    # x_t = atanh(0.8) − 0.5·y_{t−1} makes g_t = 0.8 at every step IF the recurrent input is the
    # event output y (not c), so the hand calculation below only needs ĉ = 0.5·c_{t−1} + 0.4.
    y_prev = [0.0] + y_expected[:-1]
    return torch.tensor([math.atanh(0.8) - 0.5 * v for v in y_prev], dtype=torch.float64).view(-1, 1, 1)


def test_golden_trajectory_threshold_reset():
    # ĉ = 0.5·c + 0.4 ; o = H(ĉ − 0.5) ; y = o·ĉ ; c = ĉ − 0.5·o ; trace = 0.9·trace + 0.1·y
    # t1: ĉ = 0.4    → o 0, y 0,     c 0.4,    trace 0
    # t2: ĉ = 0.6    → o 1, y 0.6,   c 0.1,    trace 0.06
    # t3: ĉ = 0.45   → o 0, y 0,     c 0.45,   trace 0.054
    # t4: ĉ = 0.625  → o 1, y 0.625, c 0.125,  trace 0.0486 + 0.0625 = 0.1111
    # t5: ĉ = 0.4625 → o 0, y 0,     c 0.4625, trace 0.09999
    y_hand = [0.0, 0.6, 0.0, 0.625, 0.0]
    y, (s,) = one_unit("threshold").trajectory(golden_input(y_hand))
    f64 = dict(dtype=torch.float64)
    assert s.o.flatten().tolist() == [0, 1, 0, 1, 0]
    torch.testing.assert_close(y.flatten(), torch.tensor(y_hand, **f64))
    torch.testing.assert_close(s.c.flatten(), torch.tensor([0.4, 0.1, 0.45, 0.125, 0.4625], **f64))
    torch.testing.assert_close(s.margin.flatten(), torch.tensor([-0.1, 0.1, -0.05, 0.125, -0.0375], **f64))
    torch.testing.assert_close(s.trace.flatten(), torch.tensor([0.0, 0.06, 0.054, 0.1111, 0.09999], **f64))


def test_golden_trajectory_event_reset_paper_eq2():
    # ĉ = 0.5·c + 0.4 − y_{t−1} ; o = H(ĉ − 0.5) ; y = o·ĉ ; c = ĉ
    # t1: ĉ = 0.4               → o 0, y 0,     c 0.4
    # t2: ĉ = 0.2 + 0.4 − 0     → o 1, y 0.6,   c 0.6
    # t3: ĉ = 0.3 + 0.4 − 0.6   → o 0, y 0,     c 0.1     (the −y_{t−1} clears the event)
    # t4: ĉ = 0.05 + 0.4        → o 0, y 0,     c 0.45
    # t5: ĉ = 0.225 + 0.4       → o 1, y 0.625, c 0.625
    # trace: 0, 0.06, 0.054, 0.0486, 0.04374 + 0.0625 = 0.10624
    y_hand = [0.0, 0.6, 0.0, 0.0, 0.625]
    y, (s,) = one_unit("event").trajectory(golden_input(y_hand))
    f64 = dict(dtype=torch.float64)
    assert s.o.flatten().tolist() == [0, 1, 0, 0, 1]
    torch.testing.assert_close(y.flatten(), torch.tensor(y_hand, **f64))
    torch.testing.assert_close(s.c.flatten(), torch.tensor([0.4, 0.6, 0.1, 0.45, 0.625], **f64))
    torch.testing.assert_close(s.margin.flatten(), torch.tensor([-0.1, 0.1, -0.4, -0.05, 0.125], **f64))
    torch.testing.assert_close(s.trace.flatten(), torch.tensor([0.0, 0.06, 0.054, 0.0486, 0.10624], **f64))


# ---------------------------------------------------------------- gradients
class _ZeroSurrogate(Surrogate):
    """Zero pseudo-derivative: events are locally constant, so gradcheck is exact on the smooth paths."""

    def derivative(self, x):
        return torch.zeros_like(x)

    def primitive(self, x):
        return torch.zeros_like(x)


class _SmoothStep(Surrogate):
    """A smooth forward ``σ(4x)`` in place of H: gradcheck then covers every path through o too
    (event output, threshold reset, threshold gradient)."""

    def derivative(self, x):
        s = torch.sigmoid(4 * x)
        return 4 * s * (1 - s)

    def primitive(self, x):
        return torch.sigmoid(4 * x)

    def __call__(self, x):
        return self.primitive(x)


class _StraightThrough(PiecewiseLinear):
    """Same forward and pseudo-derivative built by plain autograd, independent of ranvier's Function."""

    def __call__(self, x):
        heaviside = (x > 0).to(x.dtype)
        return heaviside + self.primitive(x) - self.primitive(x).detach()


def _unrolled(surrogate, reset, reset_gate, zoneout=0.0, masks=None):
    def run(proj, c0, y0, w_hh, b_hh, thr):
        state = EGRUState(c0, y0, torch.zeros_like(c0), 0.3 * y0, torch.zeros_like(c0))
        outs = []
        for t, p in enumerate(proj.unbind(0)):
            _, state = egru_step(p, state, recurrent_weight=w_hh, recurrent_bias=b_hh, threshold=thr,
                                 surrogate=surrogate, reset=reset, reset_gate=reset_gate, zoneout=zoneout,
                                 zoneout_mask=None if masks is None else masks[t])
            outs.append(torch.stack([state.c, state.y, state.trace]))
        return torch.stack(outs)
    return run


def _gradcheck_inputs(T=5, B=2, H=4):
    g = torch.Generator().manual_seed(11)
    f64 = dict(dtype=torch.float64, generator=g)
    return (torch.randn(T, B, 3 * H, **f64), 0.5 * torch.randn(B, H, **f64), 0.5 * torch.randn(B, H, **f64),
            torch.randn(3 * H, H, **f64) / 2, 0.1 * torch.randn(3 * H, **f64), 0.2 + 0.1 * torch.rand(H, **f64))


@pytest.mark.parametrize("reset,reset_gate", MODES)
def test_gradcheck_smooth_paths_zero_surrogate(reset, reset_gate):
    inputs = [t.requires_grad_(True) for t in _gradcheck_inputs()]
    assert torch.autograd.gradcheck(_unrolled(_ZeroSurrogate(), reset, reset_gate), inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("reset,reset_gate", MODES)
def test_gradcheck_all_paths_smooth_step(reset, reset_gate):
    inputs = [t.requires_grad_(True) for t in _gradcheck_inputs()]
    assert torch.autograd.gradcheck(_unrolled(_SmoothStep(), reset, reset_gate), inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("zoneout_kind", ["train_mask", "eval_expectation"])
def test_gradcheck_zoneout(zoneout_kind):
    inputs = [t.requires_grad_(True) for t in _gradcheck_inputs()]
    masks = torch.bernoulli(torch.full((5, 2, 4), 0.6, dtype=torch.float64)) if zoneout_kind == "train_mask" else None
    fn = _unrolled(_SmoothStep(), "threshold", "after", zoneout=0.3, masks=masks)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


def _grads(model, x, target):
    model.zero_grad()
    y, _ = model(x)
    ((y - target) ** 2).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("reset,reset_gate", MODES)
def test_pseudo_derivative_matches_straight_through_autograd(reset, reset_gate):
    torch.manual_seed(5)
    kw = dict(num_layers=2, reset=reset, reset_gate=reset_gate, threshold_mean=-1.0)
    ref = EGRU(3, 8, **kw).double()
    st = EGRU(3, 8, **kw, surrogate=_StraightThrough(gamma=0.7, width=1.0)).double()
    zero = EGRU(3, 8, **kw, surrogate=_ZeroSurrogate()).double()
    st.load_state_dict(ref.state_dict())
    zero.load_state_dict(ref.state_dict())
    x = torch.randn(20, 3, 3, dtype=torch.float64)
    target = torch.randn(20, 3, 8, dtype=torch.float64)
    g_ref, g_st, g_zero = _grads(ref, x, target), _grads(st, x, target), _grads(zero, x, target)
    for name in g_ref:
        torch.testing.assert_close(g_ref[name], g_st[name], rtol=1e-10, atol=1e-12)
    # negative control: the pseudo-derivative through o must matter, thresholds included
    assert g_ref["threshold_logit_l0"].abs().sum() > 0
    assert not torch.allclose(g_ref["weight_hh_l0"], g_zero["weight_hh_l0"])
    assert not torch.allclose(g_ref["threshold_logit_l1"], g_zero["threshold_logit_l1"])


# ---------------------------------------------------------------- sparsity
class _RecordingSurrogate(PiecewiseLinear):
    """Logs every argument its pseudo-derivative is evaluated on during the backward pass."""

    def __init__(self, *args, log, **kwargs):
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "log", log)

    def derivative(self, x):
        self.log.append(x.detach().clone())
        return super().derivative(x)


@pytest.mark.parametrize("reset", ["threshold", "event"])
def test_recorded_backward_sparsity_equals_zero_pseudo_derivative_fraction(reset):
    torch.manual_seed(7)
    log = []
    eps = 2.0
    egru = EGRU(4, 16, reset=reset, epsilon=eps, threshold_mean=-1.0,
                surrogate=_RecordingSurrogate(gamma=0.7, width=1.0 / eps, log=log)).double()
    x = torch.randn(30, 5, 4, dtype=torch.float64) * 2
    y, (states,) = egru.trajectory(x)
    y.sum().backward()
    used = torch.stack(log[::-1])  # [T, B, H]: the backward pass visits the steps in reverse
    torch.testing.assert_close(used, states.margin.detach(), rtol=0, atol=0)
    zero_fraction = (egru.surrogate.derivative(used) == 0).double().mean()
    measured = backward_sparsity(states.margin, eps)
    assert 0.05 < float(measured) < 0.95  # non-trivial, so the comparison means something
    assert float(measured) == pytest.approx(float(zero_fraction), abs=0)


def test_sparsity_functions_by_hand():
    o = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    assert float(activity_sparsity(o)) == pytest.approx(0.75)
    # pooling a list weights layers by their number of units: (1 + 0)/(4 + 2) events
    assert float(activity_sparsity([o[:1], torch.zeros(1, 2)])) == pytest.approx(1 - 1 / 6)
    m = torch.tensor([-1.5, -0.5, 0.0, 0.49, 0.5, 2.0])
    assert float(backward_sparsity(m, epsilon=2.0)) == pytest.approx(4 / 6)  # |m| ≥ 0.5: −1.5, −0.5, 0.5, 2.0
    assert float(backward_sparsity(m, epsilon=1.0)) == pytest.approx(2 / 6)  # −1.5, 2.0


# ---------------------------------------------------------------- sequences, chunks, layouts
@pytest.mark.parametrize("reset,reset_gate", MODES)
def test_sequence_equals_cell_loop(reset, reset_gate):
    egru = EGRU(3, 6, reset=reset, reset_gate=reset_gate, threshold_mean=-1.0).double()
    cell = EGRUCell(3, 6, reset=reset, reset_gate=reset_gate).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "threshold_logit"):
            getattr(cell, name).copy_(getattr(egru, name + "_l0"))
    x = torch.randn(15, 4, 3, dtype=torch.float64) * 2
    y_seq, (final,) = egru(x)
    state, ys = None, []
    for x_t in x:
        y_t, state = cell(x_t, state)
        ys.append(y_t)
    assert 0 < final.o.sum() or 0 < y_seq.abs().sum()
    torch.testing.assert_close(torch.stack(ys), y_seq, rtol=0, atol=1e-12)
    for a, b in zip(final, state):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("reset,reset_gate", MODES)
def test_two_chunks_equal_one_run(reset, reset_gate):
    egru = EGRU(3, 6, 2, reset=reset, reset_gate=reset_gate, threshold_mean=-1.0).double()
    x = torch.randn(30, 2, 3, dtype=torch.float64) * 2
    y_all, final_all = egru(x)
    y1, s1 = egru(x[:13])
    y2, s2 = egru(x[13:], s1)
    torch.testing.assert_close(torch.cat([y1, y2]), y_all, rtol=0, atol=1e-12)
    for sa, sb in zip(final_all, s2):
        for a, b in zip(sa, sb):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_batch_first_equivalence_and_trajectory():
    torch.manual_seed(3)
    tm = EGRU(3, 5, 2, threshold_mean=-1.0)
    bf = EGRU(3, 5, 2, batch_first=True)
    bf.load_state_dict(tm.state_dict())
    x = torch.randn(12, 4, 3)
    y_tm, s_tm = tm(x)
    y_bf, s_bf = bf(x.transpose(0, 1))
    torch.testing.assert_close(y_bf.transpose(0, 1), y_tm, rtol=0, atol=0)
    for sa, sb in zip(s_tm, s_bf):
        for a, b in zip(sa, sb):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # trajectory() runs the reference step loop, forward() the fused kernel (issue 5): they agree
    # up to float32 rounding of sigmoid/tanh and of the summation order
    y_traj, traj = bf.trajectory(x.transpose(0, 1))
    torch.testing.assert_close(y_traj, y_bf, rtol=1e-5, atol=1e-6)
    assert traj[1].c.shape == (4, 12, 5)  # [B, T, H] with batch_first
    for field_final, field_traj in zip(s_bf[1], traj[1]):
        torch.testing.assert_close(field_traj[:, -1], field_final, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- validation
def test_wrong_state_raises():
    egru = EGRU(3, 5, 2)
    x = torch.randn(6, 2, 3)
    good = egru(x)[1]
    bad = list(good)
    bad[1] = good[1]._replace(trace=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"state\[1\]\.trace has shape \(2, 4\) but must be \(2, 5\)"):
        egru(x, bad)
    with pytest.raises(ValueError, match=r"state\[0\]\.c has shape \(2, 5\) but must be \(3, 5\)"):
        egru(torch.randn(6, 3, 3), good)
    with pytest.raises(ValueError, match="num_layers=2"):
        egru(x, good[:1])
    with pytest.raises(TypeError, match="one EGRUState per layer"):
        egru(x, good[0])
    with pytest.raises(ValueError, match="dtype"):
        egru(x, [EGRUState(*(f.double() for f in s)) for s in good])
    with pytest.raises(ValueError, match=r"state\.y has shape"):
        EGRUCell(3, 5)(torch.randn(2, 3), good[0]._replace(y=torch.zeros(2, 6)))


def test_nan_and_bad_inputs_rejected():
    x = torch.randn(5, 2, 3)
    x[2, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        EGRU(3, 4)(x)
    with pytest.raises(ValueError, match="NaN"):
        EGRUCell(3, 4)(x[2])
    with pytest.raises(ValueError, match="4 features"):
        EGRU(3, 4)(torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match="2 dims"):
        EGRUCell(3, 4)(torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="empty"):
        EGRU(3, 4)(torch.zeros(0, 2, 3))


@pytest.mark.parametrize("kwargs,match", [
    (dict(reset="zero"), "reset"), (dict(reset_gate="middle"), "reset_gate"), (dict(threshold_init="normal"), "threshold_init"),
    (dict(threshold_init="beta", threshold_mean=1.2), r"\(0, 1\)"), (dict(dropconnect=1.5), "dropconnect"),
    (dict(num_layers=0), "num_layers"),
])
def test_bad_options_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EGRU(3, 4, **kwargs)


# ---------------------------------------------------------------- thresholds and parameters
@pytest.mark.parametrize("init,stem", [("sigmoid", "threshold_logit"), ("beta", "threshold")])
def test_thresholds_are_parameters_with_their_own_group(init, stem):
    egru = EGRU(3, 4, 2, threshold_init=init)
    thresholds = egru.threshold_parameters()
    assert [id(p) for p in thresholds] == [id(getattr(egru, f"{stem}_l{k}")) for k in range(2)]
    param_ids = {id(p) for p in egru.parameters()}
    assert all(isinstance(p, torch.nn.Parameter) and id(p) in param_ids for p in thresholds)
    assert {f"{stem}_l0", f"{stem}_l1", "weight_ih_l1", "bias_hh_l1"} <= set(egru.state_dict())
    groups = egru.parameter_groups(lr=1e-3, threshold_lr_multiplier=0.1, weight_decay=0.01)
    assert groups[1]["params"] == thresholds and groups[1]["weight_decay"] == 0.0
    assert groups[1]["lr"] == pytest.approx(1e-4) and groups[0]["weight_decay"] == 0.01
    assert sum(len(g["params"]) for g in groups) == len(list(egru.parameters()))
    opt = torch.optim.AdamW(groups)  # the groups are valid optimizer input
    assert len(opt.param_groups) == 2


def test_checkpoints_of_the_two_threshold_kinds_do_not_mix():
    with pytest.raises(RuntimeError, match="threshold"):
        EGRU(3, 4, threshold_init="beta").load_state_dict(EGRU(3, 4, threshold_init="sigmoid").state_dict())


def test_threshold_initialisations():
    torch.manual_seed(0)
    sig = EGRU(2, 1000, threshold_init="sigmoid", threshold_mean=-1.0)
    raw = sig.threshold_logit_l0.detach()
    assert raw.mean().item() == pytest.approx(-1.0, abs=0.15) and raw.std().item() == pytest.approx(math.sqrt(2), abs=0.1)
    torch.testing.assert_close(sig.threshold_values()[0], torch.sigmoid(sig.threshold_logit_l0))
    beta = EGRU(2, 1000, threshold_init="beta", threshold_mean=0.2)
    thr = beta.threshold_l0.detach()
    assert thr.min() >= 0 and thr.max() <= 1 and thr.mean().item() == pytest.approx(0.2, abs=0.02)
    assert EGRU(2, 1000, threshold_init="beta").threshold_l0.mean().item() == pytest.approx(0.3, abs=0.03)


def test_beta_thresholds_stay_in_unit_interval():
    egru = EGRU(2, 3, threshold_init="beta")
    with torch.no_grad():
        egru.threshold_l0.copy_(torch.tensor([-0.5, 0.4, 1.7]))  # e.g. after an optimizer step
    assert egru.threshold_values()[0].tolist() == [0.0, pytest.approx(0.4), 1.0]
    egru(torch.randn(4, 1, 2))
    assert egru.threshold_l0.tolist() == [0.0, pytest.approx(0.4), 1.0]  # projected as in EvNN


# ---------------------------------------------------------------- regularisers
@pytest.mark.parametrize("option", ["dropout", "dropconnect"])
def test_dropout_and_dropconnect_only_in_training(option):
    torch.manual_seed(4)
    reg = EGRU(3, 8, 2, **{option: 0.5}, threshold_mean=-2.0)
    plain = EGRU(3, 8, 2, threshold_mean=-2.0)
    plain.load_state_dict(reg.state_dict())
    x = torch.randn(10, 4, 3)
    reg.eval()
    torch.testing.assert_close(reg(x)[0], plain(x)[0], rtol=0, atol=0)
    reg.train()
    assert not torch.equal(reg(x)[0], plain(x)[0])


def test_zoneout_training_masks_and_eval_expectation():
    torch.manual_seed(6)
    egru = EGRU(3, 8, zoneout=0.4, threshold_mean=-2.0).double()
    x = torch.randn(10, 4, 3, dtype=torch.float64)
    egru.eval()
    y1, s1 = egru(x)
    y2, _ = egru(x)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    no_zoneout = EGRU(3, 8, threshold_mean=-2.0).double()
    no_zoneout.load_state_dict(egru.state_dict())
    assert not torch.allclose(no_zoneout(x)[1][0].c, s1[0].c)  # eval zoneout is the expectation, not a no-op
    egru.train()
    assert not torch.equal(egru(x)[0], egru(x)[0])


def test_zoneout_step_formulas():
    proj, c0, y0, w_hh, b_hh, thr = _gradcheck_inputs(T=1, B=2, H=3)
    state = EGRUState(c0, y0, torch.zeros_like(c0), torch.zeros_like(c0), torch.zeros_like(c0))
    kw = dict(recurrent_weight=w_hh, recurrent_bias=b_hh, threshold=thr, surrogate=PiecewiseLinear(0.7, 1.0))
    _, plain = egru_step(proj[0], state, **kw)
    _, ones = egru_step(proj[0], state, zoneout_mask=torch.ones_like(c0), **kw)
    _, zeros = egru_step(proj[0], state, zoneout_mask=torch.zeros_like(c0), **kw)
    _, expect = egru_step(proj[0], state, zoneout=0.25, **kw)
    torch.testing.assert_close(ones.margin, plain.margin, rtol=0, atol=0)  # mask 1: take the new value
    torch.testing.assert_close(zeros.margin, c0 - thr, rtol=0, atol=1e-15)  # mask 0: keep c_{t−1}
    c_hat = plain.margin + thr
    torch.testing.assert_close(expect.margin + thr, 0.25 * c0 + 0.75 * c_hat, rtol=0, atol=1e-14)
