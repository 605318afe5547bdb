"""Online e-prop for recurrent LIF/ALIF layers (Bellec et al. 2020; SCIENCE.md §7).

e-prop factorises the loss gradient of a recurrent spiking network as

    dE/dW_ji ≈ Σ_t L_j^t · ē_ji^t                                            (SCIENCE.md §7.2)

where ``e_ji^t = ∂z_j^t/∂W_ji`` is an *eligibility trace*, computed forward in time from the
neuron's own state only (local in space and time), ``ē`` is ``e`` low-pass filtered with the
readout's decay κ, and ``L_j^t = Σ_k B_jk ∂E/∂y_k^t`` is a *learning signal* sent back through
fixed feedback weights ``B``. The only dependence that e-prop drops is the one through the
recurrent spikes: ``z_{t−1}`` feeding ``I_t`` (and the reset, as in the reference code); the
neuron's own path ``z_{t−1} → b_t`` is kept. The result equals BPTT on the same network with those
two pathways ``stop_gradient``-ed (the reference's ``numerical_verification_eprop_hardcoded_vs_
autodiff``), which is what ``tests/test_eprop.py`` checks to 1e-6 in float64.

State per synapse (``[B, H, N]``, ``N`` = inputs + recurrent units + 1 for a bias), updated one
time step at a time, so memory does not grow with the sequence length ``T``:

- ``ε^v`` (eligibility vector of the membrane potential), ``ε^b`` (of the adaptation, ALIF only),
- ``e = ε^z`` (the eligibility trace of the last step, which ``ε^b`` of the next step needs),
- ``ē`` (the trace filtered with the readout decay κ), and the sum of ``ē`` over the steps whose
  learning signal has not been delivered yet.

With the e-prop convention (:data:`~ranvier.EPROP_CONVENTION`, dt = 1) the recursion is exactly
SCIENCE.md §7.2::

    ψ_j^t      = γ/v_th · max(0, 1 − |(v_j^t − A_j^t)/v_th|)      (0 while refractory)
    ε^v_ji,t   = α_j·ε^v_ji,t−1 + z_i^{t−1}       (= z̄_i^{t−1}, the α-filtered presynaptic spikes)
    ε^a_ji,t   = ρ_j·ε^a_ji,t−1 + e_ji^{t−1}      (= ψ z̄ + (ρ − ψβ) ε^a of §7.2, one step later)
    e_ji^t     = ψ_j^t · (ε^v_ji,t − β_j·ε^a_ji,t)
    ē_ji^t     = κ·ē_ji^{t−1} + (1 − κ)·e_ji^t

The other :class:`~ranvier.Convention` switches (input scaling (1 − α), the (1 − ρ) factor,
reset by ``A_t``, normalising by ``A_t``, spikes from ``v_{t−1}``) change only the local
derivatives, and are handled too, so the LSNN presets train with e-prop unchanged.

Learning signals (``feedback``): ``"symmetric"`` (``B = W_outᵀ``, the exact partial derivative),
``"random"`` (a fixed random ``B``), ``"adaptive"`` (``B`` starts random and receives the same
update as ``W_outᵀ``, plus ``feedback_decay·B``). A firing-rate regulariser
``rate_reg·Σ_j (mean z_j − target)²`` contributes ``Σ_t ∂R/∂z_j^t·e_ji^t``; its learning signal
depends on the rate over the whole sequence, so the unfiltered traces are summed over time and
batch (one ``[H, N]`` tensor) and weighted at the end.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.recurrent import check_input
from ..neurons.alif import ALIF
from ..neurons.lif import LIF
from ..neurons.readout import LeakyReadout
from ..sparse.masks import effective_weight, get_mask

__all__ = ["FEEDBACK_MODES", "EPropState", "EProp", "gradient_as_loss"]

FEEDBACK_MODES = ("symmetric", "random", "adaptive")


class EPropState(NamedTuple):
    neuron: NamedTuple  # LIFState | ALIFState of the layer, [B, H] fields
    eps_v: Tensor  # [B, H, N] (or [B, 1, N] when every unit has the same α and nothing couples v to b)
    eps_b: Tensor | None  # [B, H, N], ALIF only
    trace: Tensor  # e_t = ∂z_t/∂W (local) [B, H, N]
    trace_rows: Tensor | None  # the rows (sample·H + unit) of ``trace`` that may be non-zero; None: all
    filtered: Tensor  # ē_t [B, H, N]
    readout: Tensor  # z̃_t = κ·z̃_{t−1} + (1 − κ)·z_t [B, H]: the readout is y_t = W z̃_t + b
    window_trace: Tensor  # Σ ē over the steps collected since the last delivery [B, H, N]
    window_readout: Tensor  # Σ z̃ over the same steps [B, H]
    window_steps: int
    trace_sum: Tensor  # Σ_{t,b} e_t [H, N] (firing-rate regulariser)
    spike_sum: Tensor  # Σ_{t,b} z_t [H]
    steps: int  # time steps run
    grad_core: Tensor  # accumulated dE/dW for [W_in | W_rec | bias] [H, N]
    grad_readout_weight: Tensor  # [O, H]
    grad_readout_bias: Tensor  # [O]


class EProp(nn.Module):
    r"""Online e-prop for a recurrent :class:`~ranvier.LIF` or :class:`~ranvier.ALIF` layer and a
    :class:`~ranvier.LeakyReadout`.

    Runs the network one step at a time (no autograd graph), keeps eligibility vectors and
    filtered traces, and turns learning signals into gradients for the layer's ``input_weight``,
    ``recurrent_weight`` and ``bias`` and the readout's weight and bias. Weight masks
    (``input_mask``, ``recurrent_mask``, ``linear.mask``) are respected: masked weights act not
    and get zero gradient.

    Args:
        core: the recurrent layer (LIF or ALIF, any :class:`~ranvier.Convention`).
        readout: the leaky readout (its decay κ filters the traces).
        feedback: ``"symmetric"``, ``"random"`` or ``"adaptive"`` (see the module docstring).
        filter_traces: filter ``e`` with κ (exact for a leaky readout); ``False`` uses ``e`` itself.
        rate_reg, target_rate: weight and target (spikes per unit per step) of the firing-rate
            regulariser (:func:`~ranvier.firing_rate_loss`).
        feedback_decay: adaptive feedback only: weight decay added to ``B``'s gradient.
        generator: random generator for the random/adaptive feedback matrix.

    Example::

        >>> from ranvier import EPROP_CONVENTION
        >>> core, readout = ALIF(3, 8, threshold=0.5, convention=EPROP_CONVENTION), LeakyReadout(8, 2)
        >>> eprop = EProp(core, readout)
        >>> logits, state = eprop.classification_gradients(torch.randn(4, 10, 3), torch.tensor([0, 1, 1, 0]))
        >>> eprop.accumulate_grad(state)
        >>> core.recurrent_weight.grad.shape, logits.shape
        (torch.Size([8, 8]), torch.Size([4, 2]))
    """

    def __init__(self, core: nn.Module, readout: LeakyReadout, *, feedback: str = "symmetric",
                 filter_traces: bool = True, rate_reg: float = 0.0, target_rate: float = 0.01,
                 feedback_decay: float = 0.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(core, (LIF, ALIF)):
            raise TypeError(f"e-prop supports LIF and ALIF layers, got {type(core).__name__}")
        if not isinstance(readout, LeakyReadout):
            raise TypeError(f"e-prop needs a LeakyReadout, got {type(readout).__name__}")
        if readout.linear.in_features != core.hidden_size:
            raise ValueError(f"readout takes {readout.linear.in_features} inputs but the layer has {core.hidden_size} units")
        if feedback not in FEEDBACK_MODES:
            raise ValueError(f"unknown feedback {feedback!r}; choose one of {', '.join(FEEDBACK_MODES)}")
        if rate_reg < 0 or feedback_decay < 0:
            raise ValueError("rate_reg and feedback_decay must be >= 0")
        # Not registered as submodules: EProp is attached to a model it does not own.
        self.__dict__["core"], self.__dict__["readout"] = core, readout
        self.feedback = feedback
        self.filter_traces = filter_traces
        self.rate_reg = float(rate_reg)
        self.target_rate = float(target_rate)
        self.feedback_decay = float(feedback_decay)
        self.adaptive = isinstance(core, ALIF)
        # Above this fraction of (sample, unit) rows with ψ ≠ 0, a step updates the whole trace
        # tensor at once instead of gathering rows (both compute the same; only speed differs).
        self.dense_above = 0.25
        self.n_pre = core.input_size + (core.hidden_size if core.recurrent_weight is not None else 0) + (core.bias is not None)
        if feedback != "symmetric":
            w = readout.linear.weight
            b = torch.randn(core.hidden_size, readout.linear.out_features, generator=generator, dtype=w.dtype) / core.hidden_size ** 0.5
            b = b.to(w.device)
            if feedback == "adaptive":
                self.feedback_weight = nn.Parameter(b)
            else:
                self.register_buffer("feedback_weight", b)
        else:
            self.feedback_weight = None

    # ---------------------------------------------------------------------------------- state
    def initial_state(self, batch_size: int) -> EPropState:
        core, readout = self.core, self.readout
        w = core.input_weight
        h, n, o = core.hidden_size, self.n_pre, readout.linear.out_features
        zeros = lambda *shape: torch.zeros(*shape, dtype=w.dtype, device=w.device)  # noqa: E731
        alpha = torch.exp(-core.dt / core.tau_mem)
        couples_v_to_b = self.adaptive and core.convention.reset_by_adaptive
        shared_v = bool((alpha == alpha[0]).all()) and not couples_v_to_b
        return EPropState(
            neuron=core.initial_state(batch_size), eps_v=zeros(batch_size, 1 if shared_v else h, n),
            eps_b=zeros(batch_size, h, n) if self.adaptive else None, trace=zeros(batch_size, h, n),
            trace_rows=torch.zeros(0, dtype=torch.long, device=w.device),
            filtered=zeros(batch_size, h, n), readout=zeros(batch_size, h), window_trace=zeros(batch_size, h, n),
            window_readout=zeros(batch_size, h), window_steps=0, trace_sum=zeros(h, n), spike_sum=zeros(h), steps=0,
            grad_core=zeros(h, n), grad_readout_weight=zeros(o, h), grad_readout_bias=zeros(o))

    # ---------------------------------------------------------------------------------- one step
    @torch.no_grad()
    def step(self, x_t: Tensor, state: EPropState, *, collect: bool = False) -> tuple[Tensor, EPropState]:
        """Advance one time step on input ``x_t`` ``[B, I]``: network, traces and readout.

        Returns ``(y_t, state)``, ``y_t`` ``[B, O]`` the readout (as :class:`~ranvier.LeakyReadout`
        computes it). The per-synapse tensors of ``state`` are updated in place (online: the
        memory stays constant). With ``collect=True`` the step's filtered traces are added to the window
        whose learning signal the next :meth:`deliver` applies.
        """
        core, conv = self.core, self.core.convention
        old = state.neuron
        if x_t.dim() != 2 or x_t.shape != (old.v.shape[0], core.input_size):
            raise ValueError(f"x_t must be [batch={old.v.shape[0]}, {core.input_size}], got {tuple(x_t.shape)}")
        pre = [x_t]
        current = x_t @ effective_weight(core, "input_weight").t()
        if core.recurrent_weight is not None:
            current = current + old.z @ effective_weight(core, "recurrent_weight").t()
            pre.append(old.z)
        if core.bias is not None:
            current = current + core.bias
            pre.append(torch.ones_like(x_t[:, :1]))
        pre_t = torch.cat(pre, dim=1)[:, None, :]  # [B, 1, N]
        z, new = core.make_neuron_step()(current, old)

        # local derivatives of z_t (the same expressions as integrate_and_fire computes)
        dt, v_th = core.dt, core.threshold
        alpha = torch.exp(-dt / core.tau_mem)
        adaptive_threshold = v_th + core.beta * new.b if self.adaptive else v_th
        v_source = old.v if conv.spike_from_previous else new.v
        norm = adaptive_threshold if conv.normalize_by_adaptive else v_th
        u = (v_source - adaptive_threshold) / norm
        psi = core.surrogate.derivative(u) / dt  # dz_t/du_t
        if core.n_refractory > 0:
            psi = torch.where(old.refractory > 0, torch.zeros_like(psi), psi)

        # eligibility vectors: ε_t = (∂h_t/∂h_{t−1}) ε_{t−1} + ∂h_t/∂W, with z_{t−1} → I_t and the
        # reset stopped; h = (v, b, z), every derivative elementwise per neuron. The [B, H, N]
        # tensors are updated in place, and the trace e_t = ψ_t·(…) only in the rows (sample, unit)
        # where ψ_t ≠ 0: with sparse activity most rows are zero, and only the decays of ε^v, ε^b
        # and ē touch every synapse.
        batch, hidden, n_pre = state.trace.shape
        eps_v, eps_b, trace = state.eps_v, state.eps_b, state.trace
        trace_rows = trace.view(-1, n_pre)  # row r = (sample r // H, unit r % H)
        rows_prev, rows = state.trace_rows, psi.reshape(-1).nonzero().squeeze(1)
        dense = rows.numel() > self.dense_above * batch * hidden  # gathering most rows costs more than it saves
        scale = psi / norm  # ∂z/∂v = ψ/N
        if self.adaptive:  # ∂u/∂A = −(1 + u·[N = A])/N, ∂A/∂b = β
            du_da = (1.0 + u) if conv.normalize_by_adaptive else torch.ones_like(u)
            scale_b = psi * du_da * core.beta / norm
        alpha_v = alpha[:1] if eps_v.shape[1] == 1 else alpha  # shared ε^v: every α is the same
        gain_pre = (1.0 - alpha_v)[:, None] * pre_t if conv.scale_input else pre_t
        if self.adaptive:  # ε^b_t = ρ·ε^b_{t−1} + g_b·e_{t−1} (b_t reads the unit's own z_{t−1})
            rho = torch.exp(-dt / core.tau_adapt)
            eps_b.mul_(rho[:, None])
            gain_b = (1.0 - rho) if conv.adapt_one_minus_rho else torch.ones_like(rho)
            if rows_prev is None:
                eps_b.addcmul_(trace, gain_b[:, None])
            else:
                eps_b.view(-1, n_pre).index_add_(0, rows_prev, gain_b[rows_prev % hidden, None] * trace_rows[rows_prev])
        if conv.spike_from_previous:  # z_t reads v_{t−1}: its eligibility vector before the update
            if dense:
                torch.mul(eps_v, scale[:, :, None], out=trace)
            else:
                source = _rows(eps_v, rows, hidden).clone()
        torch.addcmul(gain_pre, eps_v, alpha_v[:, None], out=eps_v)
        if self.adaptive and conv.reset_by_adaptive:  # v_t − z_{t−1}·A_t·dt sees b_t through A_t
            spiked = old.z.reshape(-1).nonzero().squeeze(1)
            coef = (-dt * core.beta * old.z).reshape(-1)[spiked, None]
            eps_v.view(-1, n_pre).index_add_(0, spiked, coef * eps_b.view(-1, n_pre)[spiked])
        kappa = self.readout.decay
        filter_traces = self.filter_traces and kappa > 0
        if dense:  # every row at once, in place
            if not conv.spike_from_previous:
                torch.mul(eps_v, scale[:, :, None], out=trace)
            if self.adaptive:
                trace.addcmul_(eps_b, -scale_b[:, :, None])
            filtered = state.filtered.lerp_(trace, 1.0 - kappa) if filter_traces else trace
            if self.rate_reg > 0:
                state.trace_sum.add_(trace.sum(0))
            rows = None
        else:  # only the rows with ψ ≠ 0
            if not conv.spike_from_previous:
                source = _rows(eps_v, rows, hidden)
            values = scale.reshape(-1)[rows, None] * source
            if self.adaptive:
                values -= scale_b.reshape(-1)[rows, None] * eps_b.view(-1, n_pre)[rows]
            if rows_prev is None:
                trace.zero_()
            else:
                trace_rows.index_fill_(0, rows_prev, 0.0)
            trace_rows.index_copy_(0, rows, values)
            if filter_traces:  # ē_t = κ·ē_{t−1} + (1 − κ)·e_t
                filtered = state.filtered.mul_(kappa)
                filtered.view(-1, n_pre).index_add_(0, rows, (1.0 - kappa) * values)
            else:
                filtered = trace
            if self.rate_reg > 0:
                state.trace_sum.index_add_(0, rows % hidden, values)

        readout = kappa * state.readout + (1.0 - kappa) * z if kappa > 0 else z
        y = readout @ effective_weight(self.readout.linear, "weight").t() + self.readout.linear.bias
        window_readout, window_steps = state.window_readout, state.window_steps
        if collect:
            state.window_trace.add_(filtered)
            window_readout, window_steps = window_readout + readout, window_steps + 1
        state = state._replace(
            neuron=new, eps_v=eps_v, eps_b=eps_b, trace=trace, trace_rows=rows, filtered=filtered, readout=readout,
            window_readout=window_readout, window_steps=window_steps, spike_sum=state.spike_sum + z.sum(0),
            steps=state.steps + 1)
        return y, state

    # ---------------------------------------------------------------------------------- learning
    def feedback_matrix(self) -> Tensor:
        """``B`` ``[H, O]``: ``W_outᵀ`` (masked) for symmetric feedback, else the feedback weights."""
        if self.feedback_weight is None:
            return effective_weight(self.readout.linear, "weight").t()
        return self.feedback_weight

    @torch.no_grad()
    def deliver(self, state: EPropState, error: Tensor) -> EPropState:
        """Apply the learning signal for the collected steps and empty the window.

        ``error`` ``[B, O]`` is ``∂E/∂y_t``, the same for every collected step (one step for a
        loss at every time step; the last ``k`` steps for a loss on their mean). The layer gets
        ``Σ_b L_bj·Σ_t ē_bji,t`` with ``L = error·Bᵀ``; the readout gets its exact gradient.
        """
        if state.window_steps == 0:
            raise RuntimeError("deliver: no step was collected since the last delivery (step(..., collect=True))")
        signal = error @ self.feedback_matrix().t()  # [B, H]: L_j = Σ_k B_jk ∂E/∂y_k
        state = state._replace(
            grad_core=state.grad_core + torch.einsum("bh,bhn->hn", signal, state.window_trace),
            grad_readout_weight=state.grad_readout_weight + error.t() @ state.window_readout,
            grad_readout_bias=state.grad_readout_bias + state.window_steps * error.sum(0),
            window_readout=torch.zeros_like(state.window_readout), window_steps=0)
        state.window_trace.zero_()
        return state

    @torch.no_grad()
    def gradients(self, state: EPropState) -> dict[str, Tensor]:
        """The accumulated gradients by parameter name (``"core.input_weight"``, ...), masks
        applied, the firing-rate term added."""
        core, linear = self.core, self.readout.linear
        grad = state.grad_core
        if self.rate_reg > 0 and state.steps > 0:
            samples = state.steps * state.neuron.v.shape[0]
            rate = state.spike_sum / samples  # firing_rate_loss: mean over time and batch
            grad = grad + (self.rate_reg * 2.0 * (rate - self.target_rate) / samples)[:, None] * state.trace_sum
        i, h = core.input_size, core.hidden_size
        out = {"core.input_weight": _masked(core, "input_weight", grad[:, :i])}
        if core.recurrent_weight is not None:
            out["core.recurrent_weight"] = _masked(core, "recurrent_weight", grad[:, i:i + h])
        if core.bias is not None:
            out["core.bias"] = grad[:, -1].clone()
        out["readout.linear.weight"] = _masked(linear, "weight", state.grad_readout_weight)
        out["readout.linear.bias"] = state.grad_readout_bias.clone()
        if self.feedback == "adaptive":
            out["feedback_weight"] = out["readout.linear.weight"].t() + self.feedback_decay * self.feedback_weight.detach()
        return out

    def parameters_by_name(self) -> dict[str, Tensor]:
        """The tensors :meth:`gradients` refers to, under the same names."""
        core, linear = self.core, self.readout.linear
        named = {"core.input_weight": core.input_weight, "core.recurrent_weight": core.recurrent_weight,
                 "core.bias": core.bias, "readout.linear.weight": linear.weight, "readout.linear.bias": linear.bias,
                 "feedback_weight": self.feedback_weight if self.feedback == "adaptive" else None}
        return {k: v for k, v in named.items() if v is not None}

    def accumulate_grad(self, state: EPropState) -> None:
        """Add :meth:`gradients` to the parameters' ``.grad``, so any torch optimizer can step."""
        params = self.parameters_by_name()
        for name, g in self.gradients(state).items():
            p = params[name]
            p.grad = g.clone() if p.grad is None else p.grad + g

    # ---------------------------------------------------------------------------------- classification
    def classification_gradients(self, x: Tensor, labels: Tensor, *, readout_steps: int = 1,
                                 repeat: int = 1) -> tuple[Tensor, EPropState]:
        """Run a batch ``x`` ``[B, T, I]`` online and deliver the cross-entropy learning signal.

        The prediction is the mean readout over the last ``readout_steps`` steps (all when 0), as
        in :class:`~ranvier.models.classifier.SequenceClassifier`; each input step is presented
        ``repeat`` times. The loss is the batch mean. Returns ``(logits, state)``; the gradients
        are in the state (:meth:`gradients`, :meth:`accumulate_grad`).
        """
        check_input(x, self.core.input_size, "x")
        if labels.shape != x.shape[:1]:
            raise ValueError(f"labels must be [batch] = {tuple(x.shape[:1])}, got {tuple(labels.shape)}")
        xs = x.transpose(0, 1)
        if repeat > 1:
            xs = xs.repeat_interleave(repeat, dim=0)
        steps = xs.shape[0]
        k = readout_steps if 0 < readout_steps <= steps else steps
        state = self.initial_state(x.shape[0])
        for t, x_t in enumerate(xs.unbind(0)):
            _, state = self.step(x_t, state, collect=t >= steps - k)
        linear = self.readout.linear
        logits = (state.window_readout / k) @ effective_weight(linear, "weight").t() + linear.bias
        error = (torch.softmax(logits, -1) - F.one_hot(labels, logits.shape[-1]).to(logits.dtype)) / (x.shape[0] * k)
        return logits.detach(), self.deliver(state, error)


def _rows(eps_v: Tensor, rows: Tensor, hidden: int) -> Tensor:
    """Rows ``(sample·H + unit)`` of ``ε^v`` ``[B, H, N]``, or of a shared ``[B, 1, N]`` one."""
    if eps_v.shape[1] == 1:
        return eps_v[:, 0][rows // hidden]
    return eps_v.reshape(-1, eps_v.shape[-1])[rows]


def _masked(module: nn.Module, name: str, grad: Tensor) -> Tensor:
    mask = get_mask(module, name)
    return grad.clone() if mask is None else grad * mask


def gradient_as_loss(grads: dict[Tensor, Tensor], value: Tensor) -> Tensor:
    """A scalar equal to ``value`` whose ``backward()`` adds ``grads[p]`` to every ``p.grad``.

    This lets a gradient computed outside autograd (e-prop, RTRL) go through any training loop
    that calls ``loss.backward()`` (gradient clipping, DDP and optimizer wrappers included).

    Example::

        >>> w = torch.zeros(2, requires_grad=True)
        >>> gradient_as_loss({w: torch.tensor([1.0, -2.0])}, torch.tensor(0.5)).backward()
        >>> w.grad
        tensor([ 1., -2.])
    """
    inject = sum((p * g.detach()).sum() for p, g in grads.items())
    return value.detach() + inject - inject.detach()
