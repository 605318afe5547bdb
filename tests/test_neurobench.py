"""ranvier.metrics against NeuroBench 2.3.0 itself: the same networks, the same numbers, exactly.

NeuroBench hard-requires torchaudio and tonic (which would pull another torch build), but its
metric code only imports snntorch, tqdm and numpy, so it is installed without dependencies:

    pip install --no-deps neurobench==2.3.0 snntorch==1.0.0

The test is skipped when NeuroBench is not importable; ``tests/test_metrics.py`` pins the same
semantics with hand-computed values.
"""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ranvier
from ranvier import metrics

try:  # optional: see the module docstring for the install command
    import neurobench
    import snntorch as snn
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint
    from neurobench.metrics.workload import (
        ActivationSparsity,
        ActivationSparsityByLayer,
        MembraneUpdates,
        SynapticOperations,
    )
    from neurobench.models import SNNTorchModel, TorchModel
except ImportError as exc:
    message = (f"NeuroBench not importable ({exc}); install it with "
               "`pip install --no-deps neurobench==2.3.0 snntorch==1.0.0`")
    if os.environ.get("CI") == "true":  # .ci/run installs it: a missing install must not pass silently
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)
if neurobench.__version__ != "2.3.0":  # the semantics below are those of 2.3.0's code
    pytest.skip(f"needs neurobench 2.3.0, found {neurobench.__version__}", allow_module_level=True)

STATIC = [Footprint, ConnectionSparsity]
# ActivationSparsityByLayer forgets to call super().__init__ in 2.3.0, so it has no
# `requires_hooks`; it must come after a metric that needs hooks (the manager's any() stops there).
WORKLOAD = [ActivationSparsity, SynapticOperations, ActivationSparsityByLayer]


def run_neurobench(model, x: torch.Tensor, batch_size: int, workload=WORKLOAD) -> dict:
    loader = DataLoader(TensorDataset(x, torch.zeros(x.shape[0])), batch_size=batch_size, shuffle=False)
    bench = Benchmark(model, loader, [], [], [STATIC, workload])
    results = bench.run(quiet=True)
    bench.workload_metric_manager.cleanup_hooks(model)
    # NeuroBench turns any exception inside a metric into 0.0 / None: make sure none happened.
    for name in ["Footprint", "ConnectionSparsity", *[m.__name__ for m in workload]]:
        assert results[name] is not None, name
    return results


# -- (a) an ALIF network built from nn.Linear connections -------------------------------------------
class ALIFNeuron(nn.Module):
    """ranvier's ALIF neuron step (alif_step) as a NeuroBench activation module: current -> spikes."""

    def __init__(self, layer: ranvier.ALIF) -> None:
        super().__init__()
        self._layer = (layer,)  # a tuple, so the layer is not a child module counted twice
        self.state = None
        self.step = None

    def start(self, batch_size: int) -> None:
        layer = self._layer[0]
        self.step = layer.make_neuron_step()
        self.state = layer.initial_state(batch_size)

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        z, self.state = self.step(current, self.state)
        return z


class ALIFNet(nn.Module):
    """``I_t = fc_in(x_t) + fc_rec(z_{t−1})``, ALIF step, ``fc_out(z_t)`` at every step."""

    def __init__(self, layer: ranvier.ALIF, readout: nn.Linear) -> None:
        super().__init__()
        hidden, n_in = layer.input_weight.shape
        self.fc_in = nn.Linear(n_in, hidden, bias=False)
        self.fc_rec = nn.Linear(hidden, hidden, bias=False)
        self.neuron = ALIFNeuron(layer)
        self.fc_out = readout
        with torch.no_grad():
            self.fc_in.weight.copy_(layer.input_weight)
            self.fc_rec.weight.copy_(layer.recurrent_weight * layer.recurrent_mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, I] (NeuroBench layout)
        self.neuron.start(x.shape[0])
        outputs = []
        for t in range(x.shape[1]):
            z = self.neuron(self.fc_in(x[:, t]) + self.fc_rec(self.neuron.state.z))
            outputs.append(self.fc_out(z))
        return torch.stack(outputs, dim=1)


def make_alif(n_in: int, hidden: int, dt: float) -> ranvier.ALIF:
    beta = torch.tensor([0.0, 0.0, 0.0] + [1.8] * (hidden - 3))  # an LSNN: LIF and ALIF units
    layer = ranvier.ALIF(n_in, hidden, beta=beta, tau_mem=5.0, tau_adapt=20.0, threshold=0.05, dt=dt)
    with torch.no_grad():
        layer.input_weight.mul_(3.0)
        layer.input_weight[0, :2] = 0.0  # some zero input weights
        layer.input_weight[:, n_in - 1] = 0.0  # an input that reaches nobody
        layer.recurrent_mask[1, 2] = 0.0  # masked recurrent connections (besides the diagonal)
        layer.recurrent_mask[5, :4] = 0.0
        layer.recurrent_weight.fill_(0.4)  # masked entries stay non-zero in the raw weight
        layer.recurrent_weight[0, 1] = 0.0  # and an unmasked zero weight
    return layer


@pytest.mark.parametrize("inputs, dt", [("graded", 1.0), ("binary", 1.0), ("graded", 0.5)])
def test_alif_network_matches_neurobench(inputs: str, dt: float) -> None:
    n_in, hidden, n_out, steps, batch = 5, 8, 3, 12, 4
    layer = make_alif(n_in, hidden, dt)
    readout = nn.Linear(hidden, n_out)
    with torch.no_grad():
        readout.weight[0, :3] = 0.0
    x = torch.randn(batch, steps, n_in) * 2.0
    x = (x > 0.8).float() if inputs == "binary" else torch.where(x.abs() < 0.5, torch.zeros_like(x), x)

    net = ALIFNet(layer, readout)
    model = TorchModel(net)
    model.add_activation_module(ALIFNeuron)
    footprint_before = metrics.footprint(net)
    nb = run_neurobench(model, x, batch_size=batch)

    # ranvier: the layer itself, on its own recorded tensors (time-major).
    xs = x.transpose(0, 1)
    z, _ = layer.trajectory(xs)
    assert torch.equal(z, torch.stack(_spikes_of(net, x), dim=0)), "both nets must spike alike"
    assert z.sum() > 0 and (z == 0).any()
    ops = metrics.layer_synops(layer, xs, z) + metrics.layer_synops(readout, z, None)
    ranvier_model = nn.ModuleDict({"alif": layer, "readout": readout})

    assert metrics.activation_sparsity(z) == nb["ActivationSparsity"]
    assert metrics.activation_sparsity_by_layer({"neuron": z}) == nb["ActivationSparsityByLayer"]
    assert ops.as_neurobench() == nb["SynapticOperations"]
    assert metrics.connection_sparsity(ranvier_model, decimals=4) == nb["ConnectionSparsity"]
    assert footprint_before == nb["Footprint"]
    if dt == 1.0:
        assert ops.ac_total > 0  # binary spikes: the recurrent and readout calls are ACs
    else:
        assert ops.ac_total == 0  # spikes of height 1/dt = 2 are graded for NeuroBench: MACs
    assert (ops.mac_total > 0) == (inputs == "graded" or dt != 1.0)


def _spikes_of(net: ALIFNet, x: torch.Tensor) -> list[torch.Tensor]:
    spikes = []
    net.neuron.start(x.shape[0])
    for t in range(x.shape[1]):
        spikes.append(net.neuron(net.fc_in(x[:, t]) + net.fc_rec(net.neuron.state.z)))
    return spikes


# -- snnTorch RSNN (real snn.Leaky neurons): membrane updates too --------------------------------------
class LeakyRSNN(nn.Module):
    """snnTorch step-wise network: called once per time step by SNNTorchModel; records tensors."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.fc_in = nn.Linear(n_in, hidden, bias=False)
        self.fc_rec = nn.Linear(hidden, hidden, bias=False)
        self.lif = snn.Leaky(beta=0.8, threshold=0.5)
        self.fc_out = nn.Linear(hidden, n_out)
        self.lif_out = snn.Leaky(beta=0.9)
        with torch.no_grad():
            self.fc_in.weight.mul_(3.0)
            self.fc_in.weight[:, 0] = 0.0
            self.fc_in.weight[hidden - 1] = 0.0  # the last unit gets no input at all:
            self.fc_rec.weight[hidden - 1] = 0.0  # its membrane never changes after step 0
            self.fc_rec.weight[2:4, :] = 0.0
            self.fc_out.weight[1] = 0.0  # a readout unit without input or bias: no updates
            self.fc_out.bias[1] = 0.0
        self.hidden = hidden
        self.reset()

    def reset(self) -> None:
        self.z = None
        self.record: dict[str, list[torch.Tensor]] = {k: [] for k in ("x", "z", "mem", "z_out", "mem_out")}

    def forward(self, x: torch.Tensor):
        if self.z is None:
            self.z = torch.zeros(x.shape[0], self.hidden)
            self.mem, self.mem_out = self.lif.reset_mem(), self.lif_out.reset_mem()
        spk, self.mem = self.lif(self.fc_in(x) + self.fc_rec(self.z), self.mem)
        self.z = spk
        spk_out, self.mem_out = self.lif_out(self.fc_out(spk), self.mem_out)
        for key, value in zip(self.record, (x, spk, self.mem, spk_out, self.mem_out)):
            self.record[key].append(value.detach().clone())
        return spk_out, self.mem_out


def test_snntorch_rsnn_matches_neurobench() -> None:
    n_in, hidden, n_out, steps, batch = 4, 6, 2, 10, 4
    net = LeakyRSNN(n_in, hidden, n_out)
    x = (torch.rand(batch, steps, n_in) < 0.4).float()
    footprint_before = metrics.footprint(net)
    nb = run_neurobench(SNNTorchModel(net), x, batch_size=batch, workload=WORKLOAD + [MembraneUpdates])

    rec = {k: torch.stack(v) for k, v in net.record.items()}  # [T, B, ·]
    ops = (metrics.recurrent_synops(rec["x"], rec["z"], net.fc_in.weight, net.fc_rec.weight)
           + metrics.linear_synops(rec["z"], net.fc_out.weight))
    updates = metrics.membrane_updates(rec["mem"]) + metrics.membrane_updates(rec["mem_out"])

    assert metrics.activation_sparsity([rec["z"], rec["z_out"]]) == nb["ActivationSparsity"]
    assert metrics.activation_sparsity_by_layer({"lif": rec["z"], "lif_out": rec["z_out"]}) == nb["ActivationSparsityByLayer"]
    assert ops.as_neurobench() == nb["SynapticOperations"]
    assert updates == nb["MembraneUpdates"]
    assert updates < steps * (hidden + n_out)  # the silent units really were skipped
    assert metrics.connection_sparsity(net, decimals=4) == nb["ConnectionSparsity"]
    assert footprint_before == nb["Footprint"]


# -- (b) an MLP -------------------------------------------------------------------------------------
def make_mlp() -> nn.Sequential:
    mlp = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        mlp[0].weight[:, :2] = 0.0
        mlp[2].weight[::2, 3:] = 0.0
        mlp[4].weight[0] = 0.0
    return mlp


@pytest.mark.parametrize("inputs", ["graded", "binary"])
def test_mlp_matches_neurobench(inputs: str) -> None:
    batch, steps = 4, 5
    mlp = make_mlp()
    x = torch.randn(batch, steps, 6)
    x = (x > 0.3).float() if inputs == "binary" else torch.where(x.abs() < 0.4, torch.zeros_like(x), x)
    nb = run_neurobench(TorchModel(mlp), x, batch_size=batch)

    # One call per Linear on the whole [B, T, F] tensor: x[None] is "one call, batch B".
    h1 = mlp[1](mlp[0](x))
    h2 = mlp[3](mlp[2](h1))
    ops = (metrics.linear_synops(x[None], mlp[0].weight) + metrics.linear_synops(h1[None], mlp[2].weight)
           + metrics.linear_synops(h2[None], mlp[4].weight))
    assert metrics.activation_sparsity([h1, h2]) == nb["ActivationSparsity"]
    assert metrics.activation_sparsity_by_layer({"1": h1, "3": h2}) == nb["ActivationSparsityByLayer"]
    assert ops.as_neurobench() == nb["SynapticOperations"]
    assert metrics.connection_sparsity(mlp, decimals=4) == nb["ConnectionSparsity"]
    assert metrics.footprint(mlp) == nb["Footprint"]
    assert (ops.ac_total > 0) == (inputs == "binary")  # only a binary input makes the first layer ACs


def test_accumulation_over_batches_matches_neurobench() -> None:
    """Two batches: synops are summed and divided by all samples (exact); NeuroBench's activation
    sparsity is the batch-size-weighted mean of per-batch values (equal up to float rounding)."""
    mlp = make_mlp()
    x = torch.relu(torch.randn(6, 6))
    nb = run_neurobench(TorchModel(mlp), x, batch_size=3)
    ops, acts = None, []
    for part in (x[:3], x[3:]):
        h1 = mlp[1](mlp[0](part))
        h2 = mlp[3](mlp[2](h1))
        batch_ops = (metrics.linear_synops(part, mlp[0].weight) + metrics.linear_synops(h1, mlp[2].weight)
                     + metrics.linear_synops(h2, mlp[4].weight))
        ops = batch_ops if ops is None else ops.merge_batch(batch_ops)
        acts += [h1, h2]
    assert ops.samples == 6
    assert ops.as_neurobench() == nb["SynapticOperations"]
    assert metrics.activation_sparsity(acts) == pytest.approx(nb["ActivationSparsity"], rel=1e-12)


def test_rnn_cell_connection_sparsity_counts_biases_like_neurobench() -> None:
    net = nn.Sequential(nn.Linear(3, 4, bias=True), nn.RNNCell(4, 5), nn.GRUCell(5, 2))
    with torch.no_grad():
        net[0].weight[0] = 0.0
        net[0].bias.zero_()  # Linear biases are not counted ...
        net[1].bias_ih.zero_()  # ... RNN-cell biases are
        net[2].weight_hh[:, 0] = 0.0
    assert metrics.connection_sparsity(net, decimals=4) == ConnectionSparsity()(TorchModel(net))
