"""Exact real-time recurrent learning (RTRL) for one EGRU or ALIF layer, dense and sparse
(SCIENCE.md §5.3).

RTRL carries the *influence matrix* ``M_t = ∂s_t/∂θ`` of the state ``s_t`` forward in time::

    M_t = J_t·M_{t−1} + M̄_t,    J_t = ∂s_t/∂s_{t−1},    M̄_t = ∂s_t/∂θ (immediate)
    dL/dθ = Σ_t (∂L/∂y_t)·∂y_t/∂θ

so the gradient is exact, online, and needs memory independent of the sequence length; the price
is the product ``J_t·M_{t−1}``, ``O(n²·|θ|) = O(n⁴)`` per step. Here ``θ`` are the layer's
weights (input and recurrent, ``W ⊙ mask``; biases and thresholds are not trained by RTRL).

Where the sparsity comes from. Both models couple units only through an *event output* ``y``
(EGRU: ``y = o·ĉ``; ALIF: spikes ``z``), and every other dependence is unit-local (diagonal).
So ``J_t = Λ_t + A_t·D_{t−1}`` with ``Λ_t`` diagonal (per unit, per state component), ``A_t`` the
recurrent weights scaled per row, and ``D_{t−1} = ∂y_{t−1}/∂s_{t−1}`` diagonal. ``D`` is zero for a
unit that neither emitted an event nor sits in the pseudo-derivative window (EGRU:
``o + ĉ·o' = 0``; ALIF: ``ψ = 0``). Hence:

- **activity sparsity**: ``A_t·(D_{t−1}M_{t−1})`` needs only the rows of the event influence
  ``M^y = D·M`` of the active units ``𝒜_{t−1}``: ``n·|𝒜|·|θ|`` instead of ``n²·|θ|``;
- **parameter sparsity**: masked weights have no column in ``M`` (``|θ|`` shrinks to the number of
  unmasked weights), and ``A_t`` has the zeros of the recurrent mask, so the product is a sparse
  (COO) × dense product over ``nnz(A_t[:, 𝒜])`` entries.

The columns are fixed when the RTRL object is built: build a new one after changing a mask
(e.g. after a DEEP R rewiring step). The savings multiply. ``sparse=False`` runs the same recursion densely (all rows, all columns, a
dense ``J``) as the reference; ``tests/test_rtrl.py`` checks that both equal BPTT (autograd on the
layer) to 1e-6 in float64 and that what the sparse version skips is exactly zero in the dense one.
Note that the influence of the *internal* state (EGRU ``ĉ``, ALIF ``v`` and ``b``) is not
row-sparse: a silent unit's state still depends on θ through its active inputs. What activity
sparsity saves is the product, which dominates.

Every step records the operations (multiply-adds) it performed, the number of active units, and,
with ``measure=True``, the density of the influence matrices (:class:`RTRLStats`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..neurons.alif import ALIF
from ..neurons.egru import EGRU, EGRUState, egru_step
from ..neurons.lif import LIF
from ..sparse.masks import effective_weight, get_mask

__all__ = ["RTRLStats", "EGRURTRL", "ALIFRTRL", "RTRLState"]


@dataclass
class RTRLStats:
    """Per-step counts of one RTRL run (lists, one entry per step).

    ``ops_product``: multiply-adds of ``A_t·M^y_{t−1}`` (the O(n⁴) term); ``ops_other``: every other
    multiply-add on the influence matrices (diagonal part, immediate term, event influence,
    gradient); ``active``: units with a non-zero event derivative (rows of ``M^y`` used);
    ``density_state`` / ``density_event``: non-zero fraction of the state and event influence
    matrices over *all* ``n × |θ_full|`` entries (with ``measure=True``).
    """

    ops_product: list[int] = field(default_factory=list)
    ops_other: list[int] = field(default_factory=list)
    active: list[int] = field(default_factory=list)
    density_state: list[float] = field(default_factory=list)
    density_event: list[float] = field(default_factory=list)

    def ops(self) -> list[int]:
        return [a + b for a, b in zip(self.ops_product, self.ops_other)]


class RTRLState(NamedTuple):
    layer: NamedTuple  # the layer's own state (EGRUState / ALIFState / LIFState) [B, H] fields
    influence: tuple[Tensor, ...]  # influence matrices of the state components, [B, H, P] each
    event_derivative: Tensor  # ∂y_t/∂s_t of the last step (the diagonal D_t) [B, H]
    grad: Tensor  # accumulated dL/dθ over the P parameter columns [P]


class _RTRLBase(nn.Module):
    """Parameter columns, the sparse/dense event-influence product, gradient bookkeeping."""

    weight_names: tuple[str, str]

    def _setup_columns(self, layer: nn.Module, sparse: bool) -> None:
        self.__dict__["layer"] = layer  # not a submodule: RTRL trains a layer it does not own
        self.sparse = sparse
        self.stats = RTRLStats()
        n = self.hidden_size
        index_parts, unit, gate, pre, which = [], [], [], [], []
        offset = 0
        for k, name in enumerate(self.weight_names):
            weight = getattr(layer, name)
            rows, cols = weight.shape
            mask = get_mask(layer, name)
            keep = torch.ones(rows, cols, dtype=torch.bool, device=weight.device) if (mask is None or not sparse) else mask != 0
            r, c = keep.nonzero(as_tuple=True)
            index_parts.append(offset + r * cols + c)
            unit.append(r % n)
            gate.append(r // n)
            pre.append(c + (0 if k == 0 else self.input_size))
            which.append(torch.full_like(r, k))
            offset += rows * cols
        self.n_full = offset  # |θ| with every weight
        self.register_buffer("columns", torch.cat(index_parts), persistent=False)  # flat index of each column
        self.register_buffer("column_unit", torch.cat(unit), persistent=False)  # the unit whose state it drives
        self.register_buffer("column_gate", torch.cat(gate), persistent=False)
        self.register_buffer("column_pre", torch.cat(pre), persistent=False)  # index into [x_t, y_{t−1}]
        self.register_buffer("column_which", torch.cat(which), persistent=False)  # 0: input, 1: recurrent weight
        masks = [get_mask(layer, name) for name in self.weight_names]
        flat = [m.reshape(-1) if m is not None else torch.ones_like(getattr(layer, nm)).reshape(-1)
                for m, nm in zip(masks, self.weight_names)]
        self.register_buffer("column_mask", torch.cat(flat)[self.columns], persistent=False)

    @property
    def n_params(self) -> int:
        """Columns of the influence matrix (unmasked weights when sparse, all weights when dense)."""
        return self.columns.numel()

    def _immediate(self, coef: Tensor, pre: Tensor) -> Tensor:
        """``M̄`` values ``[B, P]``: column ``p`` (weight ``W[g·n + k, j]``) gets ``coef[b, which, g, k]·pre[b, j]``."""
        c = coef[:, self.column_which, self.column_gate, self.column_unit]  # [B, P]
        return c * pre[:, self.column_pre] * self.column_mask

    def _event_product(self, recurrent: Tensor, row_scale: Tensor | None, rows: Tensor,
                       active: Tensor) -> tuple[Tensor, int]:
        """``Σ_g row_scale_g ⊙ (R_g[:, 𝒜] @ M^y[𝒜])`` with ``R`` = ``recurrent`` ``[G·n, n]`` and
        ``rows`` = ``M^y[𝒜]`` ``[B, |𝒜|, P]`` (every unit when dense).

        Dense: ``J`` is formed as a dense ``[n, n]`` matrix per sample and multiplied with all rows;
        sparse: only the active columns of ``J``, as a sparse (COO) matrix when it is sparse. Returns
        ``(out [B, n, P], multiply-adds)``.
        """
        batch, _, p = rows.shape
        n = self.hidden_size
        groups = recurrent.shape[0] // n
        if active.numel() == 0:
            return rows.new_zeros(batch, n, p), 0
        cols = recurrent[:, active].reshape(groups, n, -1)[None]  # [1, G, n, |𝒜|]
        jac = (cols * row_scale[..., None]).sum(1) if row_scale is not None else cols.sum(1).expand(batch, -1, -1)
        if not self.sparse:
            return torch.bmm(jac, rows), batch * n * active.numel() * p
        out, ops = [], 0
        for b in range(batch):
            nnz = int(torch.count_nonzero(jac[b]))
            ops += nnz * p
            if nnz < 0.5 * jac[b].numel():
                out.append(torch.sparse.mm(jac[b].to_sparse(), rows[b]))
            else:
                out.append(jac[b] @ rows[b])
        return (out[0][None] if batch == 1 else torch.stack(out)), ops

    def _active(self, event_derivative: Tensor) -> Tensor:
        return (event_derivative != 0).any(0).nonzero(as_tuple=True)[0]

    def _all_or_active(self, derivative: Tensor) -> Tensor:
        if self.sparse:
            return self._active(derivative)
        return torch.arange(derivative.shape[1], device=derivative.device)

    @torch.no_grad()
    def accumulate(self, state: RTRLState, grad_y: Tensor) -> RTRLState:
        """Add ``(∂L/∂y_t)·∂y_t/∂θ`` for the last step; ``grad_y`` ``[B, H]`` is the loss gradient
        with respect to the layer's event output of that step."""
        active = self._all_or_active(state.event_derivative)
        rows = self._event_rows(state, active)  # ∂y_t/∂θ of the active units [B, |𝒜|, P]
        self.stats.ops_other[-1] += rows.numel()
        return state._replace(grad=state.grad + torch.einsum("ba,bap->p", grad_y[:, active], rows))

    def gradients(self, state: RTRLState) -> dict[str, Tensor]:
        """The accumulated gradient per weight name, in the weights' shapes (zero where masked)."""
        full = state.grad.new_zeros(self.n_full)
        full[self.columns] = state.grad
        out, offset = {}, 0
        for name in self.weight_names:
            w = getattr(self.layer, name)
            out[name] = full[offset:offset + w.numel()].view_as(w)
            offset += w.numel()
        return out

    def influence_density(self, state: RTRLState) -> tuple[float, float]:
        """Non-zero fraction of the state influence and the event influence ``D·M`` over all
        ``n × |θ_full|`` entries (masked columns count as zero)."""
        m = state.influence
        total = sum(t.numel() for t in m) // self.n_params * self.n_full
        nz_state = sum(int(torch.count_nonzero(t)) for t in m)
        event = self._event_rows(state, torch.arange(self.hidden_size, device=state.grad.device))
        nz_event = int(torch.count_nonzero(event))
        return nz_state / total, nz_event / (event.numel() // self.n_params * self.n_full)

    def _record(self, ops_product: int, ops_other: int, active: int, state: RTRLState, measure: bool) -> None:
        s = self.stats
        s.ops_product.append(ops_product)
        s.ops_other.append(ops_other)
        s.active.append(active)
        if measure:
            dens_state, dens_event = self.influence_density(state)
            s.density_state.append(dens_state)
            s.density_event.append(dens_event)

    def state_bytes(self, state: RTRLState) -> int:
        """Bytes held by an RTRL state: what online learning needs to keep, whatever ``T`` is."""
        tensors = [*state.layer, *state.influence, state.event_derivative, state.grad]
        return sum(t.numel() * t.element_size() for t in tensors)


# ================================================================================ EGRU
class EGRURTRL(_RTRLBase):
    r"""Exact RTRL for a one-layer :class:`~ranvier.EGRU` (EvNN code form, SCIENCE.md §3.3).

    State ``s_t = ĉ_t`` (the state before the reset; ``c_t = ĉ_t − o_t·ϑ`` and ``y_t = o_t·ĉ_t`` are
    functions of it), so with ``o' = surrogate'(ĉ − ϑ)``::

        D_t = ∂y_t/∂ĉ_t = o_t + ĉ_t·o'_t                  (0 for a silent unit outside the window)
        Λ_t = z_t ⊙ (1 − ϑ·o'_{t−1})                       (∂ĉ_t/∂c_{t−1}·∂c_{t−1}/∂ĉ_{t−1})
        A_t = Σ_g diag(a_g)·R_g,   a_z = (c_{t−1} − g)·z(1 − z),  a_r = (1 − z)(1 − g²)·(R_g y + b)_g·r(1 − r),
                                   a_g = (1 − z)(1 − g²)·r
        M_t = Λ_t ⊙ M_{t−1} + A_t·(D_{t−1} ⊙ M_{t−1}) + M̄_t

    The layer must be in the code form (``reset="threshold"``, ``reset_gate="after"``) with no
    zoneout or DropConnect (RTRL follows one deterministic network).

    Args:
        egru: the layer (``num_layers=1``).
        sparse: exploit activity and weight sparsity (default) or run the dense reference.

    Example::

        >>> egru = EGRU(3, 6)
        >>> rtrl = EGRURTRL(egru)
        >>> state = rtrl.initial_state(2)
        >>> for x_t in torch.randn(5, 2, 3):
        ...     y, state = rtrl.step(x_t, state)
        ...     state = rtrl.accumulate(state, torch.ones_like(y))  # L = Σ_t Σ y_t
        >>> rtrl.gradients(state)["weight_hh_l0"].shape, len(rtrl.stats.ops())
        (torch.Size([18, 6]), 5)
    """

    weight_names = ("weight_ih_l0", "weight_hh_l0")

    def __init__(self, egru: EGRU, *, sparse: bool = True) -> None:
        super().__init__()
        if not isinstance(egru, EGRU):
            raise TypeError(f"EGRURTRL needs an EGRU layer, got {type(egru).__name__}")
        if egru.num_layers != 1:
            raise ValueError(f"RTRL is implemented for one EGRU layer, got num_layers={egru.num_layers}")
        if egru.reset != "threshold" or egru.reset_gate != "after" or not egru._event_gating:
            raise ValueError("RTRL supports the EGRU code form only (reset='threshold', reset_gate='after')")
        if egru.zoneout > 0 or egru.dropconnect > 0:
            raise ValueError("RTRL follows one deterministic network: set zoneout=0 and dropconnect=0")
        self.input_size, self.hidden_size = egru.input_size, egru.hidden_size
        self._setup_columns(egru, sparse)

    def initial_state(self, batch_size: int) -> RTRLState:
        """Zero state and influence for a new sequence (and fresh :attr:`stats`)."""
        self.stats = RTRLStats()
        self.layer._project_thresholds()  # as EGRU.forward does before a sequence
        w = self.layer.weight_hh_l0
        zeros = torch.zeros(batch_size, self.hidden_size, dtype=w.dtype, device=w.device)
        layer_state = EGRUState(*([zeros] * len(EGRUState._fields)))
        influence = torch.zeros(batch_size, self.hidden_size, self.n_params, dtype=w.dtype, device=w.device)
        return RTRLState(layer_state, (influence,), zeros, w.new_zeros(self.n_params))

    def _event_rows(self, state: RTRLState, active: Tensor) -> Tensor:
        """``∂y/∂θ = D ⊙ ∂ĉ/∂θ`` for the units ``active``."""
        return state.event_derivative[:, active, None] * state.influence[0][:, active]

    @torch.no_grad()
    def step(self, x_t: Tensor, state: RTRLState, *, measure: bool = False) -> tuple[Tensor, RTRLState]:
        """One step on ``x_t`` ``[B, I]``: the layer's forward and the influence update.
        Returns ``(y_t, state)`` with ``y_t`` ``[B, H]`` the event output."""
        egru, n = self.layer, self.hidden_size
        old = state.layer
        threshold = egru._threshold_value(egru.threshold_parameters()[0])
        w_ih, w_hh = effective_weight(egru, "weight_ih_l0"), effective_weight(egru, "weight_hh_l0")
        b_ih, b_hh = egru.bias_ih_l0, egru.bias_hh_l0
        wx = F.linear(x_t, w_ih, b_ih)
        y, new = egru_step(wx, old, recurrent_weight=w_hh, recurrent_bias=b_hh, threshold=threshold,
                           **egru._step_kwargs())
        # gates again, for the local derivatives
        rh = F.linear(old.y, w_hh, b_hh)
        zr = torch.sigmoid(wx[:, :2 * n] + rh[:, :2 * n])
        z, r = zr[:, :n], zr[:, n:]
        g = torch.tanh(wx[:, 2 * n:] + r * rh[:, 2 * n:])
        d_z = (old.c - g) * z * (1 - z)
        k_g = (1 - z) * (1 - g * g)
        d_r = k_g * rh[:, 2 * n:] * r * (1 - r)
        coef = torch.stack([torch.stack([d_z, d_r, k_g], 1), torch.stack([d_z, d_r, k_g * r], 1)], 1)  # [B, 2, 3, n]

        m = state.influence[0]  # ∂ĉ_{t−1}/∂θ
        d_old = state.event_derivative  # D_{t−1}
        o_prime_old = egru.surrogate.derivative(old.margin)
        keep = z * (1 - threshold * o_prime_old)  # Λ_t
        batch, _, p = m.shape
        active = self._all_or_active(d_old)
        event = d_old[:, active, None] * m[:, active]  # M^y_{t−1} = D_{t−1} ⊙ M_{t−1}, active rows
        coupling, ops_product = self._event_product(w_hh, coef[:, 1], event, active)
        m_new = coupling.addcmul_(keep[:, :, None], m)  # Λ_t ⊙ M_{t−1} + A_t·M^y_{t−1}
        pre = torch.cat([x_t, old.y], 1)
        values = self._immediate(coef, pre)  # [B, P]
        m_new[:, self.column_unit, torch.arange(p, device=m.device)] += values
        ops_other = batch * n * p + batch * active.numel() * p + batch * p
        d_new = new.o + (new.margin + threshold) * egru.surrogate.derivative(new.margin)
        state = RTRLState(new, (m_new,), d_new, state.grad)
        self._record(ops_product, ops_other, active.numel(), state, measure)
        return y, state


# ================================================================================ ALIF / LIF
class ALIFRTRL(_RTRLBase):
    r"""Exact RTRL for a recurrent :class:`~ranvier.ALIF` (or :class:`~ranvier.LIF`) layer, any
    :class:`~ranvier.Convention`.

    State per unit ``s = (v, b, z)`` (``z`` is part of the state because ``b_{t+1}`` and, with
    ``spike_from_previous``, ``z_{t+1}`` read it). Tangents propagate as::

        δb_t = ρ·δb_{t−1} + g_b·δz_{t−1}                                  (g_b = 1 − ρ or 1)
        δI_t = W_rec·δz_{t−1} + δW·[x_t, z_{t−1}]                          (the coupling, sparse)
        δv_t = α·δv_{t−1} + g_in·δI_t − dt·(R_t·δz_{t−1} + z_{t−1}·δR_t)     (R_t = A_t or v_th)
        δz_t = ψ_t·(δv_src − (1 + u_t·[N = A])·β·δb_t)/N_t                  (ψ = 0 while refractory)

    so ``D_t = ψ_t`` and only units with ``ψ_{t−1} ≠ 0`` take part in ``W_rec·δz_{t−1}``.

    Example::

        >>> rtrl = ALIFRTRL(ALIF(3, 6, threshold=0.1))
        >>> state = rtrl.initial_state(2)
        >>> y, state = rtrl.step(torch.randn(2, 3), state)
        >>> rtrl.gradients(rtrl.accumulate(state, torch.ones_like(y)))["recurrent_weight"].shape
        torch.Size([6, 6])
    """

    weight_names = ("input_weight", "recurrent_weight")

    def __init__(self, layer: nn.Module, *, sparse: bool = True) -> None:
        super().__init__()
        if not isinstance(layer, (ALIF, LIF)):
            raise TypeError(f"ALIFRTRL needs an ALIF or LIF layer, got {type(layer).__name__}")
        if layer.recurrent_weight is None:
            raise ValueError("RTRL needs a recurrent layer (recurrent=True)")
        self.input_size, self.hidden_size = layer.input_size, layer.hidden_size
        self.adaptive = isinstance(layer, ALIF)
        self._setup_columns(layer, sparse)

    def initial_state(self, batch_size: int) -> RTRLState:
        """Zero state and influence for a new sequence (and fresh :attr:`stats`)."""
        self.stats = RTRLStats()
        w = self.layer.recurrent_weight
        zeros = lambda: torch.zeros(batch_size, self.hidden_size, self.n_params, dtype=w.dtype, device=w.device)  # noqa: E731
        influence = (zeros(), zeros(), zeros()) if self.adaptive else (zeros(), zeros())  # (v, z[, b])
        d = torch.zeros(batch_size, self.hidden_size, dtype=w.dtype, device=w.device)
        return RTRLState(self.layer.initial_state(batch_size), influence, d, w.new_zeros(self.n_params))

    def _event_rows(self, state: RTRLState, active: Tensor) -> Tensor:
        """``∂z/∂θ`` (kept as a state component) for the units ``active``."""
        return state.influence[1][:, active]

    @torch.no_grad()
    def step(self, x_t: Tensor, state: RTRLState, *, measure: bool = False) -> tuple[Tensor, RTRLState]:
        """One step on ``x_t`` ``[B, I]``. Returns ``(z_t, state)``."""
        layer, conv, n = self.layer, self.layer.convention, self.hidden_size
        old = state.layer
        w_rec = effective_weight(layer, "recurrent_weight")
        current = x_t @ effective_weight(layer, "input_weight").t() + old.z @ w_rec.t()
        if layer.bias is not None:
            current = current + layer.bias
        z, new = layer.make_neuron_step()(current, old)

        dt, v_th = layer.dt, layer.threshold
        alpha = torch.exp(-dt / layer.tau_mem)
        gain_in = (1 - alpha) if conv.scale_input else torch.ones_like(alpha)
        m_v, m_z = state.influence[0], state.influence[1]
        batch, _, p = m_v.shape
        psi_old = state.event_derivative
        active = self._all_or_active(psi_old)
        ops_other = 0

        if self.adaptive:
            rho = torch.exp(-dt / layer.tau_adapt)
            gain_b = (1 - rho) if conv.adapt_one_minus_rho else torch.ones_like(rho)
            m_b = rho[:, None] * state.influence[2]
            m_b[:, active] += gain_b[active, None] * m_z[:, active]
            ops_other += batch * n * p + batch * active.numel() * p
            adaptive_threshold = v_th + layer.beta * new.b
        else:
            adaptive_threshold = v_th
        coupling, ops_product = self._event_product(w_rec, None, m_z[:, active], active)
        pre = torch.cat([x_t, old.z], 1)
        coupling[:, self.column_unit, torch.arange(p, device=m_v.device)] += self._immediate(
            torch.ones(batch, 2, 1, n, dtype=m_v.dtype, device=m_v.device), pre)
        m_v_new = alpha[:, None] * m_v + gain_in[:, None] * coupling
        ops_other += 2 * batch * n * p + batch * p
        # reset −z_{t−1}·R_t·dt: through z_{t−1} (active rows) and, when R_t = A_t, through b_t
        reset = (adaptive_threshold * torch.ones_like(old.z)) if conv.reset_by_adaptive else v_th.expand_as(old.z)
        m_v_new[:, active] -= dt * reset[:, active, None] * m_z[:, active]
        ops_other += batch * active.numel() * p
        if self.adaptive and conv.reset_by_adaptive:
            spiked = (old.z != 0).any(0).nonzero(as_tuple=True)[0] if self.sparse else torch.arange(n, device=m_v.device)
            m_v_new[:, spiked] -= (dt * layer.beta[spiked] * old.z[:, spiked])[..., None] * m_b[:, spiked]
            ops_other += batch * spiked.numel() * p

        v_source = old.v if conv.spike_from_previous else new.v
        m_source = m_v if conv.spike_from_previous else m_v_new
        norm = adaptive_threshold if conv.normalize_by_adaptive else v_th * torch.ones_like(old.v)
        u = (v_source - adaptive_threshold) / norm
        psi = layer.surrogate.derivative(u) / dt
        if layer.n_refractory > 0:
            psi = torch.where(old.refractory > 0, torch.zeros_like(psi), psi)
        now = self._all_or_active(psi)
        m_z_new = torch.zeros_like(m_z)
        scale = (psi / norm)[:, now, None]
        m_z_new[:, now] = scale * m_source[:, now]
        ops_other += batch * now.numel() * p
        if self.adaptive:
            du_da = (1 + u) if conv.normalize_by_adaptive else torch.ones_like(u)
            m_z_new[:, now] -= (psi * du_da * layer.beta / norm)[:, now, None] * m_b[:, now]
            ops_other += batch * now.numel() * p
        influence = (m_v_new, m_z_new, m_b) if self.adaptive else (m_v_new, m_z_new)
        state = RTRLState(new, influence, psi, state.grad)
        self._record(ops_product, ops_other, active.numel(), state, measure)
        return z, state
