"""e-prop (ranvier.learning.eprop) equals autodiff of the same factorised gradient.

The reference is BPTT through the very same LIF/ALIF layer with the recurrent spike pathway
``z_{t−1} → I_t`` and the reset stop-gradient'ed (the reference code's
``numerical_verification_eprop_hardcoded_vs_autodiff``, SCIENCE.md §7.2), so the only thing that
differs is *how* the gradient is computed: forward in time from eligibility traces versus
backward through the stored graph.
"""
import pytest
import torch
import torch.nn.functional as F

from ranvier import ALIF, EPROP_CONVENTION, LIF, LSNN_CONVENTION, Convention, LeakyReadout, firing_rate_loss
from ranvier.learning.eprop import EProp
from ranvier.neurons.readout import exp_filter
from ranvier.sparse.masks import effective_weight, set_mask

MIXED = Convention(scale_input=True, reset_by_adaptive=True, normalize_by_adaptive=False,
                   spike_from_previous=False, adapt_one_minus_rho=True)


class _FeedbackLinear(torch.autograd.Function):
    """``z W^T`` whose backward sends the error to ``z`` through ``B`` instead of ``W^T``."""

    @staticmethod
    def forward(ctx, z, weight, feedback):
        ctx.save_for_backward(z, feedback)
        return z @ weight.t()

    @staticmethod
    def backward(ctx, grad_y):
        z, feedback = ctx.saved_tensors
        return grad_y @ feedback.t(), torch.einsum("tbo,tbh->oh", grad_y, z), None


def network(kind, convention, *, hidden=7, inputs=4, n_refractory=2, tau_mem=None, bias=False):
    tau_mem = tau_mem if tau_mem is not None else torch.linspace(3.0, 30.0, hidden, dtype=torch.float64)
    common = dict(tau_mem=tau_mem, threshold=0.4, n_refractory=n_refractory, convention=convention, bias=bias)
    if kind == "lif":
        core = LIF(inputs, hidden, **common)
    else:
        beta = torch.full((hidden,), 0.3, dtype=torch.float64)
        beta[:2] = 0.0  # an LSNN-like mix of plain and adaptive units
        core = ALIF(inputs, hidden, tau_adapt=torch.linspace(10.0, 80.0, hidden, dtype=torch.float64), beta=beta, **common)
    readout = LeakyReadout(hidden, 3, tau_out=8.0)
    core.double(), readout.double()
    with torch.no_grad():
        core.input_weight.mul_(12.0 if convention.scale_input else 1.5)
        if core.bias is not None:
            core.bias.normal_(0.0, 0.1)
    return core, readout


def autodiff_eprop(core, readout, x, labels, *, k, rate_reg, target_rate, feedback=None):
    """BPTT with ``stop_gradient`` on z_{t−1} in the input current and the reset."""
    core.detach_reset = True
    xs = x.transpose(0, 1)
    state = core.initial_state(x.shape[0])
    w_in = effective_weight(core, "input_weight")
    w_rec = effective_weight(core, "recurrent_weight")
    step = core.make_neuron_step()
    zs = []
    for x_t in xs.unbind(0):
        current = x_t @ w_in.t() + state.z.detach() @ w_rec.t()
        if core.bias is not None:
            current = current + core.bias
        z, state = step(current, state)
        zs.append(z)
    z = torch.stack(zs)
    if feedback is None:
        y = readout(z)
    else:
        y = exp_filter(_FeedbackLinear.apply(z, effective_weight(readout.linear, "weight"), feedback), readout.decay)
        y = y + readout.linear.bias
    logits = y[-k:].mean(0)
    loss = F.cross_entropy(logits, labels) + rate_reg * firing_rate_loss(z, target_rate)
    params = [core.input_weight, core.recurrent_weight, readout.linear.weight, readout.linear.bias]
    names = ["core.input_weight", "core.recurrent_weight", "readout.linear.weight", "readout.linear.bias"]
    if core.bias is not None:
        params.append(core.bias)
        names.append("core.bias")
    grads = torch.autograd.grad(loss, params)
    core.detach_reset = False
    return dict(zip(names, grads)), z.detach()


def inputs(batch=5, steps=30, n_in=4):
    x = (torch.rand(batch, steps, n_in, dtype=torch.float64) < 0.3).double()
    return x, torch.randint(0, 3, (batch,))


@pytest.mark.parametrize("rows", ["row-sparse", "dense", "mixed"])
@pytest.mark.parametrize("kind", ["lif", "alif"])
@pytest.mark.parametrize("convention", [EPROP_CONVENTION, LSNN_CONVENTION, MIXED], ids=["eprop", "lsnn", "mixed"])
def test_eprop_equals_autodiff_of_factorised_gradient(kind, convention, rows):
    core, readout = network(kind, convention, bias=True)
    x, labels = inputs()
    k, rate_reg, target = 3, 0.7, 0.05
    eprop = EProp(core, readout, rate_reg=rate_reg, target_rate=target)
    # the trace is updated row by row (rows with ψ ≠ 0) or all at once; "mixed" switches between them
    eprop.dense_above = {"row-sparse": 1.0, "dense": -1.0, "mixed": 0.1}[rows]
    logits, state = eprop.classification_gradients(x, labels, readout_steps=k)
    got = eprop.gradients(state)
    want, z = autodiff_eprop(core, readout, x, labels, k=k, rate_reg=rate_reg, target_rate=target)
    # the check means something: the network spikes, sits in refractory periods, and learns
    assert 0.02 < z.mean() < 0.5
    assert ((z[1:] > 0) & (z[:-1] > 0)).sum() == 0  # n_refractory = 2 silenced every next step
    for name, g in want.items():
        assert g.abs().max() > 1e-4, name
        torch.testing.assert_close(got[name], g, rtol=0, atol=1e-6, msg=name)
        assert (got[name] - g).abs().max() < 1e-12 * max(1.0, g.abs().max().item())
    with torch.no_grad():
        ref = readout(torch.stack([z_ for z_ in z]))[-k:].mean(0)
    torch.testing.assert_close(logits, ref, rtol=0, atol=1e-12)


def test_eprop_respects_masks_and_shared_decay():
    core, readout = network("alif", EPROP_CONVENTION, tau_mem=12.0)
    set_mask(core, "recurrent_weight", (torch.rand(7, 7) < 0.5).double() * core.recurrent_mask)
    set_mask(core, "input_weight", (torch.rand(7, 4) < 0.7).double())
    set_mask(readout.linear, "weight", (torch.rand(3, 7) < 0.6).double())
    x, labels = inputs()
    eprop = EProp(core, readout)
    _, state = eprop.classification_gradients(x, labels, readout_steps=1)
    got = eprop.gradients(state)
    want, _ = autodiff_eprop(core, readout, x, labels, k=1, rate_reg=0.0, target_rate=0.0)
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, rtol=0, atol=1e-6, msg=name)
    assert (got["core.recurrent_weight"][core.recurrent_mask == 0] == 0).all()
    assert (got["core.input_weight"][core.input_mask == 0] == 0).all()
    assert (got["readout.linear.weight"][readout.linear.mask == 0] == 0).all()


@pytest.mark.parametrize("mode", ["random", "adaptive"])
def test_random_and_adaptive_feedback_match_feedback_alignment_autodiff(mode):
    core, readout = network("lif", EPROP_CONVENTION)
    x, labels = inputs()
    eprop = EProp(core, readout, feedback=mode, feedback_decay=0.1)
    _, state = eprop.classification_gradients(x, labels, readout_steps=2)
    got = eprop.gradients(state)
    want, _ = autodiff_eprop(core, readout, x, labels, k=2, rate_reg=0.0, target_rate=0.0,
                             feedback=eprop.feedback_weight.detach())
    symmetric, _ = autodiff_eprop(core, readout, x, labels, k=2, rate_reg=0.0, target_rate=0.0)
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, rtol=0, atol=1e-6, msg=name)
    assert not torch.allclose(got["core.recurrent_weight"], symmetric["core.recurrent_weight"], atol=1e-4)
    if mode == "adaptive":  # B gets W_out's update (transposed) plus its decay
        torch.testing.assert_close(got["feedback_weight"],
                                   want["readout.linear.weight"].t() + 0.1 * eprop.feedback_weight.detach())
    else:
        assert "feedback_weight" not in got


def test_online_memory_does_not_grow_with_sequence_length():
    core, readout = network("alif", EPROP_CONVENTION)
    eprop = EProp(core, readout)

    def state_bytes(steps):
        x, labels = inputs(steps=steps)
        _, state = eprop.classification_gradients(x, labels)
        assert state.trace_rows is None or state.trace_rows.numel() <= 5 * 7  # rows of the last step: at most B·H
        fixed = [t for name, t in state._asdict().items() if isinstance(t, torch.Tensor) and name != "trace_rows"]
        return sum(t.numel() * t.element_size() for t in [*fixed, *state.neuron])

    assert state_bytes(5) == state_bytes(80)


def test_accumulate_grad_adds_to_dot_grad_and_optimizer_steps():
    core, readout = network("lif", EPROP_CONVENTION)
    x, labels = inputs()
    eprop = EProp(core, readout)
    _, state = eprop.classification_gradients(x, labels)
    eprop.accumulate_grad(state)
    first = core.recurrent_weight.grad.clone()
    eprop.accumulate_grad(state)
    torch.testing.assert_close(core.recurrent_weight.grad, 2 * first)
    before = core.recurrent_weight.detach().clone()
    torch.optim.SGD([core.recurrent_weight], lr=0.1).step()
    assert not torch.equal(before, core.recurrent_weight)


def test_bad_inputs_raise_clear_errors():
    core, readout = network("lif", EPROP_CONVENTION)
    with pytest.raises(TypeError, match="LIF and ALIF"):
        EProp(torch.nn.GRU(3, 4), readout)
    with pytest.raises(ValueError, match="unknown feedback"):
        EProp(core, readout, feedback="magic")
    eprop = EProp(core, readout)
    with pytest.raises(ValueError, match="input_size=4"):
        eprop.classification_gradients(torch.zeros(2, 5, 9, dtype=torch.float64), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        eprop.classification_gradients(torch.full((2, 5, 4), float("nan"), dtype=torch.float64), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="x_t must be"):
        eprop.step(torch.zeros(3, 4, dtype=torch.float64), eprop.initial_state(2))
    with pytest.raises(RuntimeError, match="no step was collected"):
        eprop.deliver(eprop.initial_state(2), torch.zeros(2, 3, dtype=torch.float64))


def test_train_with_eprop_resumes_identically(tmp_path, monkeypatch):
    """An interrupted e-prop run (adaptive feedback: B is trained and checkpointed) resumes to
    the same result as an uninterrupted one."""
    from ranvier import train
    from ranvier.config import build_config

    tiny = dict(task="mnist1d", model="lsnn", hidden_size=16, batch_size=64, epochs=1, max_steps=4, checkpoint_every=2,
                progress=False, threads=1, learning="eprop", feedback="adaptive", rate_reg=0.1)
    m = train.fit(build_config({**tiny, "out": str(tmp_path / "a")}))
    assert m["steps"] == 4 and 0.0 <= m["test_accuracy"] <= 1.0
    real_lr = train._learning_rate

    def dying_lr(cfg, step, total, *args):
        if step == 3:
            raise KeyboardInterrupt()
        return real_lr(cfg, step, total, *args)

    monkeypatch.setattr(train, "_learning_rate", dying_lr)
    with pytest.raises(KeyboardInterrupt):
        train.fit(build_config({**tiny, "out": str(tmp_path / "b")}))
    monkeypatch.setattr(train, "_learning_rate", real_lr)
    resumed = train.fit(build_config({**tiny, "out": str(tmp_path / "b")}), resume=True)
    assert resumed["test_accuracy"] == m["test_accuracy"] and resumed["test_loss"] == m["test_loss"]


@pytest.mark.parametrize("model", ["egru", "gru", "lstm"])
def test_train_with_eprop_rejects_models_without_eligibility_traces(model, tmp_path):
    from ranvier import train
    from ranvier.config import build_config

    cfg = build_config(dict(task="mnist1d", model=model, learning="eprop", max_steps=1, out=str(tmp_path), progress=False))
    with pytest.raises(ValueError, match="--learning eprop trains the spiking models"):
        train.fit(cfg)


def test_eprop_job_gradients_equal_eprop(tmp_path):
    """The training job hands exactly EProp's gradients to the optimizer."""
    from ranvier.config import build_config
    from ranvier.learning.eprop_job import make_local_learning_job

    cfg = build_config(dict(task="mnist1d", model="alif", hidden_size=12, batch_size=16, learning="eprop",
                            rate_reg=0.2, max_steps=1, progress=False))
    job = make_local_learning_job(cfg)
    loss, stats = job.loss(0)
    loss.backward()
    index = job._orders[0][:16]
    x, y = job.task.encode(job.task.x_train[index]), job.task.y_train[index]
    _, state = job.eprop.classification_gradients(x, y, readout_steps=job.model.readout_steps)
    want = job.eprop.gradients(state)
    torch.testing.assert_close(job.model.core.recurrent_weight.grad, want["core.recurrent_weight"])
    torch.testing.assert_close(job.model.readout.linear.weight.grad, want["readout.linear.weight"])
    assert stats["loss"] > 0 and abs(loss.item() - stats["loss"]) < 0.2
    with pytest.raises(ValueError, match="unknown learning rule"):
        make_local_learning_job(build_config(dict(task="mnist1d", learning="hebb", max_steps=1)))
