"""ranvier.metrics on tiny networks whose expected numbers are worked out by hand in the comments.

These pin NeuroBench 2.3.0's semantics (LANDSCAPE.md §4) without NeuroBench installed;
tests/test_neurobench.py checks the same functions against NeuroBench itself.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import ranvier
from ranvier import metrics
from ranvier.metrics import energy, synops


# -- connection counting: dense linear ----------------------------------------------------------------
# W (O=2, I=3):   [[1, 0, 2],        non-zero weights per input column: col0 1, col1 0, col2 2
#                  [0, 0, 3]]
W = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])


def test_linear_binary_inputs_are_acs() -> None:
    # T=2 calls, B=2 samples.
    # t0: b0 [1,1,0] -> col0 (1) + col1 (0) = 1;  b1 [0,0,1] -> col2 = 2          => 3
    # t1: b0 [1,0,1] -> col0 (1) + col2 (2) = 3;  b1 [0,0,0] -> 0                  => 3
    # all entries in {0,1} -> ACs: 6 in total, 6/2 = 3 per sample.
    # Dense: B·O·I = 2·2·3 = 12 per call, 2 calls = 24, /2 = 12 per sample.
    x = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                      [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    ops = metrics.linear_synops(x, W)
    assert (ops.mac_total, ops.ac_total, ops.dense_total, ops.samples) == (0, 6, 24, 2)
    assert ops.as_neurobench() == {"Effective_MACs": 0.0, "Effective_ACs": 3.0, "Dense": 12.0}


def test_linear_graded_and_negative_spikes() -> None:
    # Same non-zero pattern as above: the counts do not depend on the values, only the class.
    pattern = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                            [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    graded = pattern * torch.tensor([0.5, -2.0, 7.0])
    assert metrics.linear_synops(graded, W).as_neurobench() == {"Effective_MACs": 3.0, "Effective_ACs": 0.0, "Dense": 12.0}
    # −1 is a spike for NeuroBench: t0 with values in {−1, 0, 1} is an AC call (3 ops),
    # t1 with a 0.5 is a MAC call (3 ops): 1.5 MACs and 1.5 ACs per sample.
    mixed = pattern.clone()
    mixed[0, 0, 1] = -1.0
    mixed[1, 0, 2] = 0.5
    ops = metrics.linear_synops(mixed, W)
    assert (ops.mac_total, ops.ac_total) == (3, 3)
    assert ops.as_neurobench() == {"Effective_MACs": 1.5, "Effective_ACs": 1.5, "Dense": 12.0}
    # Forcing the class overrides the per-call test.
    assert metrics.linear_synops(mixed, W, spiking=False).mac_total == 6
    assert metrics.linear_synops(mixed, W, spiking=True).ac_total == 6


def test_linear_mask_positions_and_single_call() -> None:
    # A mask zeroes W[1, 2]: col2 now has 1 non-zero weight. x = [[1, 0, 1]] once (B=1):
    # col0 (1) + col2 (1) = 2 ACs; Dense 1·2·3 = 6 (masked weights still count in Dense).
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    ops = metrics.linear_synops(torch.tensor([[1.0, 0.0, 1.0]]), W, mask=mask)
    assert (ops.ac_total, ops.dense_total, ops.samples) == (2, 6, 1)
    # One call on [B=2, L=2, I]: positions inside a call add up, the divisor is still B = 2.
    # b0: [1,0,0] -> 1, [0,0,1] -> 2;  b1: [0,1,0] -> 0, [1,0,1] -> 3   => 6 ACs, 3 per sample;
    # Dense = 2·2 positions · O·I = 24 -> 12 per sample.
    seq = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]])
    assert metrics.linear_synops(seq[None], W).as_neurobench() == {"Effective_MACs": 0.0, "Effective_ACs": 3.0, "Dense": 12.0}


def _neurobench_reference(x: torch.Tensor, weight: torch.Tensor) -> tuple[int, int, int]:
    """NeuroBench's algorithm, written out: binarised copy of nn.Linear with bias zeroed, per call."""
    mac = ac = dense = 0
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    for call in x:
        spiking = bool(((call == 0) | (call == 1) | (call == -1)).all())
        with torch.no_grad():
            layer.weight.copy_((weight != 0).float())
            layer.bias.zero_()
            ops = int(layer((call != 0).float()).sum())
            layer.weight.fill_(1.0)
            dense += int(layer(torch.ones_like(call)).sum())
        if spiking:
            ac += ops
        else:
            mac += ops
    return mac, ac, dense


def test_linear_matches_neurobench_algorithm_on_random_tensors() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(7, 9, generator=g)
    w[torch.rand(7, 9, generator=g) < 0.4] = 0.0
    x = torch.randn(6, 5, 9, generator=g)
    x[torch.rand(6, 5, 9, generator=g) < 0.5] = 0.0
    x[::2] = (x[::2] > 0).float()  # even steps binary, odd steps graded
    ops = metrics.linear_synops(x, w)
    assert (ops.mac_total, ops.ac_total, ops.dense_total) == _neurobench_reference(x, w)
    assert ops.mac_total > 0 and ops.ac_total > 0


def test_is_spiking_rule() -> None:
    assert metrics.is_spiking(torch.tensor([0.0, 1.0, -1.0]))
    assert metrics.is_spiking(torch.zeros(3))
    assert not metrics.is_spiking(torch.tensor([0.0, 2.0]))
    assert not metrics.is_spiking(torch.tensor([float("nan")]))


def test_synops_addition_and_batches() -> None:
    a = metrics.SynOps(mac_total=4, ac_total=2, dense_total=10, samples=2)
    b = metrics.SynOps(mac_total=1, ac_total=1, dense_total=6, samples=2)
    assert (a + b) == metrics.SynOps(5, 3, 16, 2) == sum([a, b])
    with pytest.raises(ValueError):
        a + metrics.SynOps(samples=3)
    merged = a.merge_batch(metrics.SynOps(mac_total=2, ac_total=0, dense_total=5, samples=1))
    assert merged.as_neurobench() == {"Effective_MACs": 2.0, "Effective_ACs": 2 / 3, "Dense": 5.0}


def test_linear_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError):
        metrics.linear_synops(torch.ones(2, 1, 4), W)
    with pytest.raises(ValueError):
        metrics.linear_synops(torch.ones(3), W)


# -- a masked recurrent LIF layer ---------------------------------------------------------------------
def masked_lif() -> ranvier.LIF:
    # I=2, H=3.  W_in = [[1, 0], [0.5, 0.5], [0, 0]]  -> non-zeros per input column: col0 2, col1 1.
    # W_rec = all ones, mask = no self-connections and mask[0, 2] = 0:
    #   effective W_rec ⊙ M = [[0, 1, 0], [1, 0, 1], [1, 1, 0]]  -> col0 2, col1 2, col2 1.
    layer = ranvier.LIF(2, 3)
    with torch.no_grad():
        layer.input_weight.copy_(torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]]))
        layer.recurrent_weight.fill_(1.0)  # masked entries are non-zero in the raw weight
        layer.recurrent_mask[0, 2] = 0.0
    return layer


def test_masked_recurrent_lif_synops_by_hand() -> None:
    layer = masked_lif()
    x = torch.tensor([[0.3, 0.0], [0.0, 0.0], [0.2, -0.7]]).unsqueeze(1)  # [T=3, B=1, I=2], graded
    z = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]).unsqueeze(1)  # [T, B, H]
    # Input connection (graded -> MACs; the all-zero step t1 is an "AC" call with 0 ops):
    #   t0 [0.3, 0] -> col0 = 2;  t1 -> 0;  t2 [0.2, -0.7] -> col0 2 + col1 1 = 3.     MACs = 5
    # Recurrent connection sees z_{t−1}: t0 zeros -> 0; t1 z0 = [1,0,0] -> col0 = 2;
    #   t2 z1 = [0,1,1] -> col1 2 + col2 1 = 3.                                         ACs = 5
    # Dense: T·(H·I + H·H) = 3·(6 + 9) = 45 (the recurrent matmul runs at t0 too).
    ops = metrics.layer_synops(layer, x, z)
    assert (ops.mac_total, ops.ac_total, ops.dense_total, ops.samples) == (5, 5, 45, 1)
    assert ops == metrics.recurrent_synops(x, z, layer.input_weight, layer.recurrent_weight,
                                           recurrent_mask=layer.recurrent_mask)
    # Without the mask the raw W_rec is all ones (3 non-zeros per column, diagonal included):
    #   t1 z0 = [1,0,0] -> 3;  t2 z1 = [0,1,1] -> 3 + 3 = 6                             ACs = 9
    assert metrics.recurrent_synops(x, z, layer.input_weight, layer.recurrent_weight).ac_total == 9
    # A non-zero initial spike vector z_{−1} = [0, 0, 1] adds col2 = 1 at t0.
    assert metrics.recurrent_synops(x, z, layer.input_weight, layer.recurrent_weight,
                                    recurrent_mask=layer.recurrent_mask, z0=torch.tensor([[0.0, 0.0, 1.0]])).ac_total == 6


def test_masked_lif_connection_sparsity_and_footprint() -> None:
    layer = masked_lif()
    # zeros: W_in 3 of 6 ([0,1], [2,0], [2,1]); W_rec ⊙ M 4 of 9 (3 diagonal + 1 masked) -> 7/15.
    assert metrics.connection_sparsity(layer) == pytest.approx(7 / 15)
    assert metrics.connection_sparsity(layer, decimals=4) == 0.4667
    names = metrics.connection_weights(nn.ModuleDict({"rnn": layer, "out": nn.Linear(3, 2)}))
    assert sorted(names) == ["out.weight", "rnn.input_weight", "rnn.recurrent_weight"]
    # Footprint: params 6 + 9 floats, buffers recurrent_mask 9 + tau_mem 3 + threshold 3 floats;
    # (6 + 9 + 9 + 3 + 3) · 4 bytes = 120.
    assert metrics.footprint(layer) == 120
    assert metrics.parameter_count(layer) == 15


def test_layer_synops_on_a_real_lif_run_is_batch_first_aware() -> None:
    layer = masked_lif()
    layer.batch_first = True
    x = torch.rand(2, 20, 2) * 4.0  # [B, T, I]
    z, _ = layer(x)
    ops = metrics.layer_synops(layer, x, z)
    xs, zs = x.transpose(0, 1), z.transpose(0, 1)
    expected = metrics.recurrent_synops(xs, zs, layer.input_weight, layer.recurrent_weight, recurrent_mask=layer.recurrent_mask)
    assert ops == expected and ops.samples == 2 and ops.ac_total > 0


# -- a tiny EGRU layer --------------------------------------------------------------------------------
# I=2, H=2; gate rows [z0, z1, r0, r1, g0, g1].
W_IH = torch.tensor([[1.0, 0.0], [0.0, 2.0], [5.0, 0.0], [1.0, 1.0], [0.0, 3.0], [4.0, 0.0]])
#   non-zeros per column: col0 rows {0,2,3,5} = 4, col1 rows {1,3,4} = 3
W_HH = torch.tensor([[0.0, 1.0], [0.0, 3.0], [2.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
#   non-zeros per column: col0 rows {2,4} = 2, col1 rows {0,1,4} = 3


def test_egru_synops_by_hand() -> None:
    x = torch.tensor([[0.5, 0.0], [1.0, 1.0], [0.0, -0.25]]).unsqueeze(1)  # [T=3, B=1, I=2]
    y = torch.tensor([[0.0, 0.8], [1.2, 0.0], [0.4, 0.9]]).unsqueeze(1)  # graded events y = o·ĉ
    # Input: t0 [0.5, 0] graded -> col0 = 4 MACs; t1 [1, 1] binary -> 4 + 3 = 7 ACs;
    #        t2 [0, -0.25] graded -> col1 = 3 MACs.                      MACs 7, ACs 7
    # Recurrent (y_{t−1}): t0 zeros -> 0; t1 y0 = [0, 0.8] -> col1 = 3 MACs;
    #        t2 y1 = [1.2, 0] -> col0 = 2 MACs.                          MACs 5
    # Dense: T·(3H·I + 3H·H) = 3·(12 + 12) = 72.
    ops = metrics.egru_synops(x, y, W_IH, W_HH)
    assert (ops.mac_total, ops.ac_total, ops.dense_total, ops.samples) == (12, 7, 72, 1)
    assert metrics.egru_synops(x, y, W_IH, W_HH, spiking=False).mac_total == 19
    # A mask removing W_hh[4, 1] leaves col1 = 2: the t1 recurrent call drops to 2 MACs.
    mask_hh = torch.ones(6, 2)
    mask_hh[4, 1] = 0.0
    assert metrics.egru_synops(x, y, W_IH, W_HH, mask_hh=mask_hh).mac_total == 11

    class TinyEGRU(nn.Module):  # duck-typed like ranvier's EGRU module (weight_ih / weight_hh)
        def __init__(self) -> None:
            super().__init__()
            self.weight_ih = nn.Parameter(W_IH.clone())
            self.weight_hh = nn.Parameter(W_HH.clone())
            self.register_buffer("mask_hh", mask_hh)

    assert metrics.layer_synops(TinyEGRU(), x, y).mac_total == 11
    # connection sparsity: zeros W_ih 5 of 12, W_hh ⊙ mask 8 of 12 -> 13/24
    assert metrics.connection_sparsity(TinyEGRU()) == pytest.approx(13 / 24)
    with pytest.raises(ValueError):
        metrics.egru_synops(x, y, W_IH[:5], W_HH)


def test_stacked_egru_weight_names_are_counted() -> None:
    class StackedEGRU(nn.Module):  # ranvier EGRU layout: weight_ih_l{k} / weight_hh_l{k}, biases ignored
        def __init__(self) -> None:
            super().__init__()
            self.weight_ih_l0 = nn.Parameter(W_IH.clone())  # 5 zeros of 12
            self.weight_hh_l0 = nn.Parameter(W_HH.clone())  # 7 zeros of 12
            self.weight_ih_l1 = nn.Parameter(torch.zeros(6, 2))  # 12 zeros of 12
            self.weight_hh_l1 = nn.Parameter(torch.ones(6, 2))  # 0 zeros of 12
            self.bias_ih_l0 = nn.Parameter(torch.zeros(6))  # not a connection

    weights = metrics.connection_weights(StackedEGRU())
    assert sorted(weights) == ["weight_hh_l0", "weight_hh_l1", "weight_ih_l0", "weight_ih_l1"]
    assert metrics.connection_sparsity(StackedEGRU()) == pytest.approx(24 / 48)


def test_egru_elementwise_ops_by_hand() -> None:
    # Per unit-step: 3 mults (r⊙Rh_g, z⊙h, (1−z)⊙g), 7 adds, 3 nonlinearities, 1 compare.
    # T=3, H=2 -> 6 unit-steps.
    assert metrics.egru_elementwise_ops(3, 2) == metrics.ElementwiseOps(mults=18, adds=42, nonlinear=18, compares=6)
    # with biases: +6 adds per unit-step -> 13 · 6 = 78
    assert metrics.egru_elementwise_ops(3, 2, bias=True).adds == 78


def test_egru_backward_sparsity_by_hand() -> None:
    # ϑ = [0.3, 0.5], window half-width 1:
    # unit 0: c − ϑ = −0.2, 1.1, 0.0   -> outside: 1.1          (1)
    # unit 1: c − ϑ =  0.0, −1.4, 1.5  -> outside: −1.4, 1.5    (2)     => 3/6
    c = torch.tensor([[0.1, 0.5], [1.4, -0.9], [0.3, 2.0]]).unsqueeze(1)
    assert metrics.egru_backward_sparsity(c, torch.tensor([0.3, 0.5])) == 0.5
    assert metrics.egru_backward_sparsity(c, torch.tensor([0.3, 0.5]), width=2.0) == 0.0
    # Exactly on the edge (|c − ϑ| = 1) the derivative is 0: sparse (EvNN's strict ">" would keep it).
    edge = torch.tensor([1.5, 0.5 + 0.999])
    assert metrics.egru_backward_sparsity(edge, 0.5) == 0.5
    assert metrics.surrogate_backward_sparsity(edge - 0.5, ranvier.PiecewiseLinear(width=1.0)) == 0.5


def test_surrogate_backward_sparsity_by_hand() -> None:
    # PiecewiseLinear(width=1): derivative γ·max(0, 1 − |x|) is zero at −2, 1.0 and 3  -> 3/5
    x = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0])
    surrogate = ranvier.PiecewiseLinear(gamma=0.3, width=1.0)
    assert metrics.surrogate_backward_sparsity(x, surrogate) == pytest.approx(0.6)
    # a refractory entry (index 1) has its gradient cut too -> 4/5
    refractory = torch.tensor([False, True, False, False, False])
    assert metrics.surrogate_backward_sparsity(x, surrogate, refractory=refractory) == pytest.approx(0.8)
    assert metrics.surrogate_backward_sparsity(x, ranvier.FastSigmoid()) == 0.0


@pytest.mark.parametrize("convention", [ranvier.LSNN_CONVENTION, ranvier.EPROP_CONVENTION])
@pytest.mark.parametrize("n_refractory", [0, 2])
def test_alif_surrogate_input_reproduces_the_spikes(convention, n_refractory: int) -> None:
    layer = ranvier.ALIF(3, 6, beta=1.8, tau_adapt=30.0, threshold=0.05, convention=convention, n_refractory=n_refractory)
    with torch.no_grad():
        layer.input_weight.mul_(4.0)
    x = torch.rand(40, 2, 3)
    z, states = layer.trajectory(x)
    s, refractory = metrics.alif_surrogate_input(states.v, states.b, threshold=layer.threshold, beta=layer.beta,
                                                 convention=convention, refractory=states.refractory)
    expected = s > 0
    if n_refractory:
        assert refractory.any()
        expected = expected & ~refractory
    assert torch.equal(z != 0, expected)  # x is exactly what the spike function saw
    assert z.any()
    beta_sparsity = metrics.surrogate_backward_sparsity(s, layer.surrogate, refractory=refractory)
    manual = ((layer.surrogate.derivative(s) == 0) | (refractory if refractory is not None else False)).double().mean()
    assert beta_sparsity == pytest.approx(float(manual))
    assert 0.0 < beta_sparsity < 1.0


def test_training_cost_by_hand() -> None:
    # Dense 100, effective 30 + 10, β̃ = 0.75: backward dense 200, sparse 200·0.25 = 50;
    # dense step 300, sparse step 40 + 50 = 90.
    cost = metrics.training_cost(metrics.SynOps(mac_total=30, ac_total=10, dense_total=100), 0.75)
    assert (cost.forward_dense, cost.forward_effective, cost.backward_dense, cost.backward_sparse) == (100, 40, 200, 50)
    assert (cost.dense, cost.sparse) == (300, 90)
    with pytest.raises(ValueError):
        metrics.training_cost(metrics.SynOps(), 1.5)


# -- activity -----------------------------------------------------------------------------------------
def test_activation_sparsity_per_layer_step_overall() -> None:
    # layer a [T=2, B=1, H=4]: t0 one spike, t1 two spikes -> 3 of 8 active
    a = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.7, 0.0, 0.0]]).unsqueeze(1)
    silent = torch.zeros(2, 1, 2)
    assert metrics.activation_sparsity(a) == 5 / 8
    assert metrics.activation_sparsity_per_step(a).tolist() == [0.75, 0.5]
    assert metrics.activation_sparsity_per_step(a.transpose(0, 1), time_dim=1).tolist() == [0.75, 0.5]
    assert metrics.activation_sparsity_by_layer({"a": a, "silent": silent}) == {"a": 0.625, "silent": 1.0}
    # overall pools elements: (12 − 3)/12, not the mean of the layer values (0.8125)
    assert metrics.activation_sparsity({"a": a, "silent": silent}) == 0.75
    assert metrics.activation_sparsity([a, silent]) == 0.75
    assert metrics.activation_sparsity([]) == 0.0


def test_membrane_updates_by_hand() -> None:
    # v [T=3, B=2, H=2]; step 0 counts all 4; t1 vs t0: 3 changed; t2 vs t1: 1 changed -> 8 / 2
    v = torch.tensor([
        [[0.0, 0.1], [0.2, 0.0]],
        [[0.0, 0.3], [0.1, 0.5]],
        [[0.0, 0.3], [0.1, 0.4]],
    ])
    assert metrics.membrane_updates(v) == 4.0
    assert metrics.membrane_updates(v.transpose(0, 1), time_dim=1, batch_dim=0) == 4.0


def test_connection_sparsity_walk_follows_neurobench_rules() -> None:
    net = nn.Sequential(nn.Linear(3, 2), nn.Sequential(nn.ReLU(), nn.RNNCell(2, 2)), nn.Conv1d(1, 1, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))  # 2 zeros of 6
        net[0].bias.zero_()  # Linear bias: not counted
        rnn = net[1][1]
        for p in (rnn.weight_ih, rnn.weight_hh, rnn.bias_ih, rnn.bias_hh):
            p.fill_(1.0)
        rnn.bias_hh.zero_()  # RNN-cell bias: counted -> 2 zeros of 4 + 4 + 2 + 2 = 12
        net[2].weight.copy_(torch.tensor([[[0.0, 2.0, 0.0]]]))  # 2 zeros of 3
    # (2 + 2 + 2) / (6 + 12 + 3) = 6/21
    assert metrics.connection_sparsity(net) == pytest.approx(6 / 21)
    assert metrics.connection_sparsity(net, decimals=4) == 0.2857
    assert metrics.connection_sparsity([torch.zeros(2), torch.ones(2)]) == 0.5
    with pytest.raises(ValueError):
        metrics.connection_sparsity(nn.ReLU())

    class Custom(nn.Module):  # the connection_weights() protocol wins over attribute guessing
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(2, 2))

        def connection_weights(self) -> dict[str, torch.Tensor]:
            return {"weight": self.weight * torch.tensor([[1.0, 0.0], [0.0, 0.0]])}

    assert metrics.connection_sparsity(Custom()) == 0.75


def test_footprint_counts_parameters_and_buffers() -> None:
    module = nn.Linear(3, 2)  # (6 + 2) · 4 bytes = 32
    module.register_buffer("extra", torch.zeros(5, dtype=torch.float64))  # 5 · 8 = 40
    assert metrics.footprint(module) == 72
    assert metrics.parameter_count(module) == 8


# -- energy -------------------------------------------------------------------------------------------
def test_energy_profile_constants_and_sources() -> None:
    p = energy.get_profile("horowitz45nm-fp32")
    assert (p.mult.pj, p.add.pj, p.mac.pj, p.ac.pj, p.sram.pj, p.dram.pj, p.register.pj) == (3.7, 0.9, 4.6, 0.9, 5.0, 640.0, 1.0)
    assert math.isclose(p.mac.pj, p.mult.pj + p.add.pj) and p.ac.pj == p.add.pj
    assert p.mac.convention and p.ac.convention and not p.mult.convention
    for name, constant in p.constants().items():
        assert "Horowitz" in constant.source or constant.convention, name
    q = energy.get_profile("horowitz45nm-int32")
    assert (q.mac.pj, q.ac.pj) == (3.2, 0.1)
    assert energy.get_profile(p) is p
    with pytest.raises(ValueError):
        energy.get_profile("nope")
    with pytest.raises(ValueError):
        p.memory("disk")  # type: ignore[arg-type]


def test_inference_energy_by_hand() -> None:
    ops = metrics.SynOps(mac_total=2000, ac_total=4000, dense_total=20000, samples=2)  # per sample 1000/2000/10000
    # event: 1000·4.6 + 2000·0.9 + 3000·5 (SRAM weight reads) + 50·1·2·5 (state) = 4600+1800+15000+500
    event = metrics.estimate_inference_energy(ops, mode="event", neuron_updates=50)
    assert event.total_pj == pytest.approx(21900.0)
    assert event.total_j == pytest.approx(21900e-12)
    assert event.kind == "estimate" and "estimate" in str(event)
    # dense: 10000·4.6 + 10000·640 (DRAM weight reads) + 500 = 46000 + 6400000 + 500
    dense = metrics.estimate_inference_energy(ops, mode="dense", neuron_updates=50, weight_memory="dram")
    assert dense.total_pj == pytest.approx(6446500.0)
    # elementwise: 18 mults · 3.7 + 42 adds · 0.9 = 66.6 + 37.8
    extra = metrics.estimate_inference_energy(ops, elementwise=metrics.egru_elementwise_ops(3, 2))
    assert extra.total_pj - metrics.estimate_inference_energy(ops).total_pj == pytest.approx(104.4)
    both = metrics.compare_dense_event(ops)
    assert both["dense"].total_pj == pytest.approx(10000 * 9.6) and both["event"].mode == "event"
    with pytest.raises(ValueError):
        metrics.estimate_inference_energy(ops, mode="sparse")  # type: ignore[arg-type]


def test_training_energy_by_hand() -> None:
    ops = metrics.SynOps(mac_total=100, ac_total=0, dense_total=400)
    # event, β̃ = 0.5, 20 neuron updates (1 word), activations in DRAM:
    #   forward 100·4.6 + 100·5 + 20·2·5 = 460 + 500 + 200 = 1160
    #   backward 2·400·0.5 = 400 MACs: 400·4.6 + 400·5 = 3840
    #   stored 20·0.5 = 10 words, write+read in DRAM: 10·2·640 = 12800       -> 17800
    e = metrics.estimate_training_energy(ops, 0.5, neuron_updates=20)
    assert e.total_pj == pytest.approx(17800.0)
    assert e.what == "training step"
    # dense ignores β̃: forward 400·9.6 + 200 = 4040; backward 800·9.6 = 7680; stored 20·2·640 = 25600
    d = metrics.estimate_training_energy(ops, 0.5, mode="dense", neuron_updates=20)
    assert d.total_pj == pytest.approx(37320.0)


def test_spinnaker2_reference_and_sanity_check() -> None:
    spinn, gpu = energy.SPINNAKER2_EGRU_MEASUREMENTS
    assert (spinn.energy_j, gpu.energy_j) == (0.0653, 1.1935)
    assert spinn.power_w * spinn.latency_s == pytest.approx(spinn.energy_j, rel=0.02)  # 0.39 W · 170.25 ms
    assert gpu.power_w * gpu.latency_s == pytest.approx(gpu.energy_j, rel=0.01)  # 60 W · 19.9 ms
    assert "SECONDARY" in spinn.source
    # Analytic counts: dense 3·1350·(750+1350) + 3·1350·2700 + 3·750·(1350+750) = 24 165 000.
    # With s_w = 0.95, s_a = 0.85 the effective count is 310 331 (hand: 0.05·[3·1350·(750 + 1350·0.15)
    # + 3·1350·(1350·0.15·2) + 3·750·(1350·0.15 + 750·0.15)]).
    ops = energy.egru_stack_synops(energy.SPINNAKER2_EGRU_MODEL, 0.85)
    assert ops.dense_total == 24_165_000 and ops.mac_total == 310_331 and ops.ac_total == 0
    check = metrics.spinnaker2_sanity_check()
    assert check.measured_ratio == pytest.approx(18.28, abs=0.01)
    assert check.estimated_ratio > 1.0
    assert check.event_estimate.kind == check.dense_estimate.kind == "estimate"
    table = check.table()
    assert "published measurement" in table and "ranvier estimate" in table and "0.0653" in table
    with pytest.raises(ValueError):
        energy.egru_stack_synops(energy.SPINNAKER2_EGRU_MODEL, 1.5)


def test_metrics_do_not_import_models_or_training() -> None:
    import ast
    import pathlib

    for path in pathlib.Path(metrics.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                assert not any(part in module.split(".") for part in ("models", "tasks", "train", "cli")), (path, module)
    assert synops.BACKWARD_MACS_PER_FORWARD_MAC == 2
