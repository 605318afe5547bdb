"""Energy **estimates** from operation counts: named profiles whose every constant has a source.

Nothing here is a measurement. An estimate multiplies counted operations and modelled memory
accesses by per-operation energies from the literature; it leaves out static/leakage power,
control, instruction fetch, interconnect and everything else a real chip spends. Published
measurements are kept apart (:data:`SPINNAKER2_EGRU_MEASUREMENTS`) and only ever shown *beside*
an estimate (:func:`spinnaker2_sanity_check`).

Model (per sample, i.e. per inference of one sequence; all counts from :mod:`.synops`):

* **dense execution** (clock-driven, every weight used at every step, as a GPU/CPU matmul):
  ``E = Dense·E_MAC + Dense·E_mem(weights) + E_state + E_elementwise``. Binary spikes are still
  multiplied, so every dense op is a MAC.
* **event-driven execution** (only non-zero inputs are sent, only their non-zero weights are
  read, e.g. CSR rows as on SpiNNaker 2):
  ``E = MACs·E_MAC + ACs·E_AC + (MACs + ACs)·E_mem(weights) + E_state + E_elementwise``.
* ``E_mem(weights)``: one 32-bit word read per synaptic operation (no reuse across the batch or
  time: the batch-1 streaming case) from ``weight_memory`` ("sram", "dram" or "register").
* ``E_state = neuron_updates · state_words · 2 · E_mem(state)``: each neuron update reads and
  writes its state words (LIF: v; ALIF: v, b; EGRU: h) in ``state_memory``.
* ``E_elementwise = mults·E_mult + adds·E_add`` (:func:`~ranvier.metrics.egru_elementwise_ops`);
  nonlinearities and compares are not costed.

Training step (:func:`estimate_training_energy`): the forward estimate, plus backward MACs
(``2·Dense`` dense, ``2·Dense·(1 − β̃)`` with sparse BPTT; :func:`~ranvier.metrics.training_cost`)
each with a MAC and one weight-memory access, plus the activations stored for BPTT (written
once, read once, in ``activation_memory``; only the ``1 − β̃`` fraction with sparse BPTT).
The optimizer update is not included.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .synops import ElementwiseOps, SynOps, egru_elementwise_ops, training_cost

__all__ = [
    "EnergyConstant",
    "EnergyProfile",
    "HOROWITZ_45NM_FP32",
    "HOROWITZ_45NM_INT32",
    "PROFILES",
    "get_profile",
    "EnergyEstimate",
    "estimate_inference_energy",
    "estimate_training_energy",
    "compare_dense_event",
    "PublishedMeasurement",
    "SPINNAKER2_EGRU_SOURCE",
    "SPINNAKER2_EGRU_MEASUREMENTS",
    "EGRUStackSpec",
    "SPINNAKER2_EGRU_MODEL",
    "egru_stack_synops",
    "SanityCheck",
    "spinnaker2_sanity_check",
]

Memory = Literal["register", "sram", "dram"]
Mode = Literal["dense", "event"]

HOROWITZ_SOURCE = (
    "M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, 45 nm, "
    "0.9 V; as tabulated in S. Han et al., 'Learning both Weights and Connections for Efficient "
    "Neural Networks', NeurIPS 2015, Fig. 1 (secondary copy: shared/design/SCIENCE.md §8)"
)


@dataclass(frozen=True)
class EnergyConstant:
    """One energy per operation or per 32-bit access, in picojoules, with where it comes from.

    ``convention`` is True for a value composed by a community convention rather than read
    from the cited table (e.g. MAC = mult + add).
    """

    pj: float
    source: str
    convention: bool = False


@dataclass(frozen=True)
class EnergyProfile:
    """A named set of per-operation energies (pJ). Memory energies are per 32-bit word."""

    name: str
    description: str
    mult: EnergyConstant
    add: EnergyConstant
    mac: EnergyConstant
    ac: EnergyConstant
    register: EnergyConstant
    sram: EnergyConstant
    dram: EnergyConstant

    def memory(self, kind: Memory) -> EnergyConstant:
        """The access energy of ``"register"``, ``"sram"`` or ``"dram"``."""
        if kind not in ("register", "sram", "dram"):
            raise ValueError(f"memory must be 'register', 'sram' or 'dram', got {kind!r}")
        return getattr(self, kind)

    def constants(self) -> dict[str, EnergyConstant]:
        """``{name: EnergyConstant}`` of every constant, for tables and reports."""
        return {k: getattr(self, k) for k in ("mult", "add", "mac", "ac", "register", "sram", "dram")}


_MEMORY_45NM = dict(
    register=EnergyConstant(1.0, f"32-bit register file access: {HOROWITZ_SOURCE}"),
    sram=EnergyConstant(5.0, f"32-bit SRAM cache access (half of 10 pJ per 64-bit read of an 8 kB cache): {HOROWITZ_SOURCE}"),
    dram=EnergyConstant(640.0, f"32-bit DRAM access: {HOROWITZ_SOURCE}"),
)

HOROWITZ_45NM_FP32 = EnergyProfile(
    name="horowitz45nm-fp32",
    description="45 nm, 0.9 V, 32-bit float arithmetic (Horowitz 2014 via Han et al. 2015)",
    mult=EnergyConstant(3.7, f"32-bit float MULT: {HOROWITZ_SOURCE}"),
    add=EnergyConstant(0.9, f"32-bit float ADD: {HOROWITZ_SOURCE}"),
    mac=EnergyConstant(4.6, "convention: fp32 MAC = fp32 MULT 3.7 pJ + fp32 ADD 0.9 pJ, the usual SNN-literature "
                            "figure (not stated in the EGRU papers; SCIENCE.md §8 marks it unverified)", convention=True),
    ac=EnergyConstant(0.9, "convention: an accumulate for a binary spike = one fp32 ADD (0.9 pJ)", convention=True),
    **_MEMORY_45NM,
)

HOROWITZ_45NM_INT32 = EnergyProfile(
    name="horowitz45nm-int32",
    description="45 nm, 0.9 V, 32-bit integer arithmetic (Horowitz 2014 via Han et al. 2015)",
    mult=EnergyConstant(3.1, f"32-bit int MULT: {HOROWITZ_SOURCE}"),
    add=EnergyConstant(0.1, f"32-bit int ADD: {HOROWITZ_SOURCE}"),
    mac=EnergyConstant(3.2, "convention: int32 MAC = int32 MULT 3.1 pJ + int32 ADD 0.1 pJ", convention=True),
    ac=EnergyConstant(0.1, "convention: an accumulate for a binary spike = one int32 ADD (0.1 pJ)", convention=True),
    **_MEMORY_45NM,
)

PROFILES: dict[str, EnergyProfile] = {p.name: p for p in (HOROWITZ_45NM_FP32, HOROWITZ_45NM_INT32)}


def get_profile(profile: str | EnergyProfile) -> EnergyProfile:
    """A profile by name (see ``PROFILES``) or the profile itself."""
    if isinstance(profile, EnergyProfile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown energy profile {profile!r}; known: {sorted(PROFILES)}") from None


@dataclass(frozen=True)
class EnergyEstimate:
    """An energy **estimate** (never a measurement), per sample, with its parts in pJ."""

    what: str  # "inference" or "training step", per sample
    mode: str  # "dense" or "event"
    profile: str
    parts_pj: tuple[tuple[str, float], ...]
    kind: str = field(default="estimate", init=False)

    @property
    def total_pj(self) -> float:
        return float(sum(v for _, v in self.parts_pj))

    @property
    def total_j(self) -> float:
        return self.total_pj * 1e-12

    def parts(self) -> dict[str, float]:
        """``{part: pJ}``."""
        return dict(self.parts_pj)

    def __str__(self) -> str:
        return f"estimate ({self.profile}, {self.mode} execution): {self.total_j:.4g} J per sample per {self.what}"


def _check_mode(mode: str) -> None:
    if mode not in ("dense", "event"):
        raise ValueError(f"mode must be 'dense' or 'event', got {mode!r}")


def _forward_parts(
    ops: SynOps,
    p: EnergyProfile,
    mode: str,
    neuron_updates: float,
    state_words: int,
    elementwise: ElementwiseOps | None,
    weight_memory: Memory,
    state_memory: Memory,
) -> list[tuple[str, float]]:
    _check_mode(mode)
    if mode == "dense":
        parts = [("synaptic MACs", ops.dense * p.mac.pj), ("weight reads", ops.dense * p.memory(weight_memory).pj)]
    else:
        parts = [
            ("synaptic MACs", ops.effective_macs * p.mac.pj),
            ("synaptic ACs", ops.effective_acs * p.ac.pj),
            ("weight reads", ops.effective * p.memory(weight_memory).pj),
        ]
    parts.append(("neuron state read+write", neuron_updates * state_words * 2 * p.memory(state_memory).pj))
    if elementwise is not None:
        parts.append(("elementwise mults", elementwise.mults * p.mult.pj))
        parts.append(("elementwise adds", elementwise.adds * p.add.pj))
    return parts


def estimate_inference_energy(
    ops: SynOps,
    profile: str | EnergyProfile = "horowitz45nm-fp32",
    *,
    mode: Mode = "event",
    neuron_updates: float = 0.0,
    state_words: int = 1,
    elementwise: ElementwiseOps | None = None,
    weight_memory: Memory = "sram",
    state_memory: Memory = "sram",
) -> EnergyEstimate:
    """Estimated energy of one inference (one sample, whole sequence), per the module's model.

    Args:
        ops: synaptic operations (:func:`~ranvier.metrics.linear_synops` and friends, summed
            over layers); the per-sample counts are used.
        profile: a name from ``PROFILES`` or an :class:`EnergyProfile`.
        mode: ``"dense"`` (Dense·(E_MAC + E_mem)) or ``"event"`` (MACs·E_MAC + ACs·E_AC +
            (MACs + ACs)·E_mem).
        neuron_updates: neuron state updates per sample (e.g. ``T·H`` summed over layers, or
            :func:`~ranvier.metrics.membrane_updates`); state_words: words per neuron state.
        elementwise: extra elementwise work per sample (EGRU gates).
        weight_memory, state_memory: where weights / neuron states live.

    Example::

        >>> e = estimate_inference_energy(SynOps(mac_total=1000, ac_total=2000, dense_total=10000))
        >>> round(e.total_pj, 6)   # 1000·4.6 + 2000·0.9 + 3000·5 (SRAM weight reads)
        21400.0
    """
    p = get_profile(profile)
    parts = _forward_parts(ops, p, mode, neuron_updates, state_words, elementwise, weight_memory, state_memory)
    return EnergyEstimate("inference", mode, p.name, tuple(parts))


def estimate_training_energy(
    ops: SynOps,
    backward_sparsity: float = 0.0,
    profile: str | EnergyProfile = "horowitz45nm-fp32",
    *,
    mode: Mode = "event",
    neuron_updates: float = 0.0,
    state_words: int = 1,
    stored_words: float | None = None,
    elementwise: ElementwiseOps | None = None,
    weight_memory: Memory = "sram",
    state_memory: Memory = "sram",
    activation_memory: Memory = "dram",
) -> EnergyEstimate:
    """Estimated energy of one training step, per sample: forward + backward + BPTT storage.

    ``mode="dense"``: dense forward, backward ``2·Dense`` MACs, every stored activation.
    ``mode="event"``: event-driven forward, sparse backward ``2·Dense·(1 − β̃)`` MACs, and only
    the ``1 − β̃`` fraction of activations stored (units inside the pseudo-derivative window).
    Each backward MAC costs ``E_MAC + E_mem(weights)``; each stored word a write and a read in
    ``activation_memory``. ``stored_words`` defaults to ``neuron_updates · state_words``.
    The optimizer update is not included.

    Example::

        >>> ops = SynOps(mac_total=100, ac_total=0, dense_total=100)
        >>> e = estimate_training_energy(ops, 0.5, neuron_updates=10)
        >>> round(e.parts()["backward MACs"], 9)   # 2·100·(1 − 0.5) · 4.6 pJ
        460.0
    """
    p = get_profile(profile)
    parts = _forward_parts(ops, p, mode, neuron_updates, state_words, elementwise, weight_memory, state_memory)
    sparsity = backward_sparsity if mode == "event" else 0.0
    cost = training_cost(ops, sparsity)
    backward = cost.backward_sparse
    stored = (neuron_updates * state_words if stored_words is None else stored_words) * (1.0 - sparsity)
    parts += [
        ("backward MACs", backward * p.mac.pj),
        ("backward weight accesses", backward * p.memory(weight_memory).pj),
        ("BPTT activations write+read", stored * 2 * p.memory(activation_memory).pj),
    ]
    return EnergyEstimate("training step", mode, p.name, tuple(parts))


def compare_dense_event(ops: SynOps, profile: str | EnergyProfile = "horowitz45nm-fp32", **kwargs) -> dict[str, EnergyEstimate]:
    """``{"dense": …, "event": …}`` inference estimates with the same arguments."""
    return {mode: estimate_inference_energy(ops, profile, mode=mode, **kwargs) for mode in ("dense", "event")}


# -- published reference ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PublishedMeasurement:
    """A measured number as published (power × latency), with its source. Not computed by ranvier."""

    platform: str
    power_w: float
    latency_s: float
    energy_j: float
    batch_size: int
    source: str
    note: str = ""


SPINNAKER2_EGRU_SOURCE = (
    "K. K. Nazeer et al., 'Language Modeling on a SpiNNaker2 Neuromorphic Chip', arXiv:2312.09084 "
    "(IEEE AICAS 2024), Table II. SECONDARY SOURCE: values as quoted by two independent third-party "
    "notes (shared/design/SCIENCE.md §6.3); ranvier's authors did not read them in the paper itself"
)

SPINNAKER2_EGRU_MEASUREMENTS: tuple[PublishedMeasurement, ...] = (
    PublishedMeasurement(
        "SpiNNaker2 (1 chip, ~150 PEs, FP32 on Arm Cortex-M4F)", 0.39, 0.17025, 0.0653, 1, SPINNAKER2_EGRU_SOURCE,
        "3-layer EGRU LM on WikiText-2, 95% unstructured weight pruning, CSR weights in PE SRAM; "
        "test perplexity 81.4",
    ),
    PublishedMeasurement(
        "NVIDIA A100", 60.0, 0.0199, 1.1935, 1, SPINNAKER2_EGRU_SOURCE,
        "same model, batch 1; the authors note that GPUs win at larger batch sizes",
    ),
)


@dataclass(frozen=True)
class EGRUStackSpec:
    """Sizes of a stack of EGRU layers (for analytic op counts)."""

    input_size: int
    hidden_sizes: tuple[int, ...]
    weight_sparsity: float
    description: str = ""


SPINNAKER2_EGRU_MODEL = EGRUStackSpec(
    750, (1350, 1350, 750), 0.95,
    "3-layer EGRU, embedding 750, hidden 1350, 95% pruned (SCIENCE.md §6.3). The last layer's size "
    "750 (= embedding, for the tied softmax) is an assumption taken from EvNN's PTB/WT2 recipe; "
    "the decoder (750 × vocabulary) is not counted",
)


def egru_stack_synops(spec: EGRUStackSpec, activity_sparsity: float, *, steps: int = 1) -> SynOps:
    """Expected synaptic operations per sample of a stack of EGRU layers (analytic, batch 1).

    Layer l (input ``I_l``: the embedding for l = 0, else ``H_{l−1}``)::

        Dense_l     = steps · 3H_l · (I_l + H_l)
        effective_l = steps · 3H_l · (1 − s_w) · (I_l · a_l + H_l · (1 − s_a))

    with ``a_0 = 1`` (a dense, graded embedding vector) and ``a_l = 1 − s_a`` above, assuming
    zero weights and active units are independent and uniform (MAC reduction ≈ (1 − s_a)(1 − s_w),
    SCIENCE.md §3.8). Everything is graded, so everything is a MAC. Rounded to integers.
    """
    if not (0.0 <= activity_sparsity <= 1.0 and 0.0 <= spec.weight_sparsity <= 1.0):
        raise ValueError("sparsities must be in [0, 1]")
    density_w, density_a = 1.0 - spec.weight_sparsity, 1.0 - activity_sparsity
    effective = dense = 0.0
    n_in, a_in = spec.input_size, 1.0
    for hidden in spec.hidden_sizes:
        dense += 3 * hidden * (n_in + hidden)
        effective += 3 * hidden * density_w * (n_in * a_in + hidden * density_a)
        n_in, a_in = hidden, density_a
    return SynOps(mac_total=round(steps * effective), ac_total=0, dense_total=round(steps * dense), samples=1)


@dataclass(frozen=True)
class SanityCheck:
    """ranvier's estimates beside published measurements. The estimates are not measurements."""

    measurements: tuple[PublishedMeasurement, ...]
    event_estimate: EnergyEstimate
    dense_estimate: EnergyEstimate
    ops: SynOps
    activity_sparsity: float
    spec: EGRUStackSpec

    @property
    def measured_ratio(self) -> float:
        """Published A100 energy / SpiNNaker 2 energy per inference (≈ 18.3)."""
        return self.measurements[1].energy_j / self.measurements[0].energy_j

    @property
    def estimated_ratio(self) -> float:
        """Estimated dense / event-driven energy per inference."""
        return self.dense_estimate.total_j / self.event_estimate.total_j

    def table(self) -> str:
        """A markdown table: measured (published) and estimated (ranvier) energy per inference."""
        m_spinn, m_gpu = self.measurements
        rows = [
            "| platform / model | kind | energy per inference (J) | measured ÷ estimate |",
            "|---|---|---|---|",
            f"| {m_spinn.platform} | published measurement (secondary source) | {m_spinn.energy_j:.4g} | |",
            f"| {m_gpu.platform} | published measurement (secondary source) | {m_gpu.energy_j:.4g} | |",
            f"| event-driven, weights in SRAM ({self.event_estimate.profile}) | ranvier estimate | "
            f"{self.event_estimate.total_j:.4g} | {m_spinn.energy_j / self.event_estimate.total_j:.3g} |",
            f"| dense, weights in DRAM ({self.dense_estimate.profile}) | ranvier estimate | "
            f"{self.dense_estimate.total_j:.4g} | {m_gpu.energy_j / self.dense_estimate.total_j:.3g} |",
            "",
            f"Ratio dense ÷ event: measured {self.measured_ratio:.3g}, estimated {self.estimated_ratio:.3g}. "
            f"Estimates assume activity sparsity {self.activity_sparsity:.2f} and weight sparsity "
            f"{self.spec.weight_sparsity:.2f}, one token per inference, and count only arithmetic and "
            "the modelled memory accesses: no static power, control or idle time, which dominate the "
            "measured numbers at batch 1. Source of the measurements: " + SPINNAKER2_EGRU_SOURCE + ".",
        ]
        return "\n".join(rows)


def spinnaker2_sanity_check(
    profile: str | EnergyProfile = "horowitz45nm-fp32",
    *,
    activity_sparsity: float = 0.85,
    spec: EGRUStackSpec = SPINNAKER2_EGRU_MODEL,
) -> SanityCheck:
    """Put ranvier's estimate for the SpiNNaker 2 EGRU language model beside the published numbers.

    Per inference = one token at batch 1 (:func:`egru_stack_synops`, ``steps=1``). Event-driven:
    weights in SRAM (as on SpiNNaker 2's PEs); dense: weights read from DRAM at every token (as
    a GPU at batch 1). Both add one state read+write per unit (SRAM) and the EGRU elementwise work.
    ``activity_sparsity`` is not given for the pruned model in our source; 0.85 is an assumption
    (EGRU language models reach ≈ 80–90 %, SCIENCE.md §3.7). A sanity check of the model's
    scale, not a measurement and not a prediction of either chip's energy.
    """
    ops = egru_stack_synops(spec, activity_sparsity)
    units = sum(spec.hidden_sizes)
    common = dict(neuron_updates=float(units), state_words=1, elementwise=egru_elementwise_ops(1, units),
                  state_memory="sram")
    event = estimate_inference_energy(ops, profile, mode="event", weight_memory="sram", **common)
    dense = estimate_inference_energy(ops, profile, mode="dense", weight_memory="dram", **common)
    return SanityCheck(SPINNAKER2_EGRU_MEASUREMENTS, event, dense, ops, activity_sparsity, spec)
