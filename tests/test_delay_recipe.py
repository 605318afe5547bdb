"""The delay-only recipe (latency code, DelaySNN, spike-time loss, CLI) and the delayed-XOR task."""
import importlib.util
import json
import math

import pytest
import torch

from ranvier import cli
from ranvier.data import latency_code
from ranvier.data.delayed_xor import delayed_xor
from ranvier.layers.delay import delayed_linear
from ranvier.models.delay_snn import (DelaySNN, SRMState, alpha_kernel, first_spike_decision, psp, spike_time_loss,
                                      srm_step)
from ranvier.core.surrogate import PiecewiseLinear
from ranvier.train_delays import target_spikes

from conftest import REPO


def test_latency_code_one_spike_per_lit_pixel_brighter_earlier():
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    images[:, 0, 0] = 0
    images[:, 0, 1] = 255
    x = latency_code(images)
    assert x.shape == (5, 10, 784)
    torch.testing.assert_close(x.sum(1), (images.flatten(1) > 0).float())
    first = x.argmax(1)  # spike step of each lit pixel
    lit = images.flatten(1) > 0
    p = images.flatten(1).long()
    torch.testing.assert_close(first[lit], (4 - torch.ceil(p[lit] * 4 / 255)).long())
    assert x[:, 4:].sum() == 0  # the last 6 steps are silence
    with pytest.raises(TypeError):
        latency_code(images.float())


def test_psp_commutes_with_the_delayed_sum():
    """The model filters after the delayed sum; that equals filtering every input first (§4.3)."""
    x = (torch.rand(12, 2, 5, dtype=torch.float64) < 0.3).double()
    w = torch.randn(3, 5, dtype=torch.float64)
    d = torch.rand(3, 5, dtype=torch.float64) * 6
    kernel = alpha_kernel(12, 4.0, dtype=torch.float64)
    torch.testing.assert_close(psp(delayed_linear(x, w, d)[0], kernel), delayed_linear(psp(x, kernel), w, d)[0])


def test_srm_refractory_is_the_alpha_kernel():
    """One forced spike at t = 0: the refractory term afterwards is gain·k·a^k (SLAYER srmAlpha)."""
    decay, gain = math.exp(-1.0), -2.0 * 10.0 * math.e
    z0 = torch.ones(1, 1)
    state = SRMState(torch.zeros(1, 1), torch.zeros(1, 1), z0)
    for k in range(1, 6):
        _, state = srm_step(torch.zeros(1, 1), state, decay=decay, refractory_gain=gain, threshold=10.0,
                            surrogate=PiecewiseLinear())
        torch.testing.assert_close(gain * state.q, torch.full((1, 1), gain * k * decay ** k))
        state = state._replace(z=torch.zeros(1, 1))


def test_first_spike_decision_and_target():
    z = torch.zeros(5, 3, 4)
    z[3, 0, 1] = z[2, 0, 3] = 1.0  # sample 0: neuron 3 first
    z[1, 1, 0] = z[1, 1, 2] = z[4, 1, 2] = 1.0  # sample 1: tie at t = 1, neuron 2 spikes more
    assert first_spike_decision(z).tolist() == [3, 2, -1]
    target = target_spikes(torch.tensor([1, 0]), 6, 3, (0, 4))
    assert target.sum() == 8 and target[:4, 0, 1].eq(1).all() and target[4:].sum() == 0


def test_delay_snn_trains_only_what_it_is_told():
    x = (torch.rand(4, 10, 20) < 0.2).float()
    y = torch.tensor([0, 1, 2, 1])
    for train, ternary in (("delays", True), ("delays", False), ("weights", False), ("both", False)):
        net = DelaySNN((20, 16, 3), train=train, ternary=ternary, threshold=2.0)
        hidden, out = net.run(x)
        loss = spike_time_loss(out, target_spikes(y, 10, 3, None), net.kernel(10, out))
        loss.backward()
        for layer in (net.fc1, net.fc2):
            assert (layer.weight.grad is not None) == (train != "delays")
            assert (layer.delay.grad is not None) == (train != "weights")
        if ternary:
            assert set(net.fc1.weight.unique().tolist()) <= {-10.0, 0.0, 10.0}
    assert net.fc1.delay.grad.abs().sum() > 0  # delays receive a gradient
    with pytest.raises(ValueError, match="ternary"):
        DelaySNN((20, 16, 3), train="weights", ternary=True)


def test_cli_delay_only_ternary_run(data_dir, tmp_path, monkeypatch):
    from ranvier import train_delays

    evaluate = train_delays.evaluate_delay_snn
    monkeypatch.setattr(train_delays, "evaluate_delay_snn", lambda *a, **k: evaluate(*a, **{**k, "limit": 200}))
    out = tmp_path / "run"
    code = cli.main(["train", "--task", "mnist-latency", "--model", "delay-snn", "--train", "delays", "--ternary",
                     "--hidden-size", "8", "--max-steps", "2", "--batch-size", "8", "--no-progress", "--threads", "1",
                     "--data-dir", data_dir, "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and 0.0 <= metrics["test_accuracy"] <= 1.0
    config = (out / "config.toml").read_text()
    assert 'train_params = "delays"' in config and "ternary = true" in config
    report = json.loads((out / "report.json").read_text())
    assert set(report["synops"]["by_layer"]) == {"layer0", "layer1"}


def test_weight_lr_gives_the_weights_their_own_step_size(data_dir):
    from ranvier.config import build_config
    from ranvier.train_delays import DelayJob

    base = {"task": "mnist-latency", "model": "delay-snn", "hidden_size": 8, "data_dir": data_dir, "lr": 0.01}
    job = DelayJob(build_config({**base, "train_params": "both", "weight_lr": 0.3}))
    groups = job.parameter_groups()
    by_lr = {g.get("lr", 0.01): {id(p) for p in g["params"]} for g in groups}
    net = job.model
    assert by_lr[0.01] == {id(net.fc1.delay), id(net.fc2.delay)}
    assert by_lr[0.3] == {id(net.fc1.weight), id(net.fc2.weight)}
    # delays only: one group at --lr, and --weight-lr has nothing to act on
    only = DelayJob(build_config({**base, "train_params": "delays", "ternary": True, "weight_lr": 0.3}))
    assert [len(g["params"]) for g in only.parameter_groups()] == [2]
    assert "lr" not in only.parameter_groups()[0]


def test_delayed_xor_task_and_benchmark_smoke():
    x, y = delayed_xor(64, gap=20, noise=0.0, generator=torch.Generator().manual_seed(0))
    assert x.shape == (64, 29, 4) and x.sum() == 64 * 4  # two 2-step pulses per sample
    a, b = x[:, 0, :2].argmax(1), x[:, 22, 2:].argmax(1)
    assert torch.equal(a ^ b, y) and x[:, 2:22].sum() == 0
    spec = importlib.util.spec_from_file_location("delays_xor", REPO / "benchmarks" / "delays_xor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    row = module.train_delayed_xor(30.0, steps=2, hidden=8, batch=8, test_samples=32)
    assert 0.0 <= row["test_accuracy"] <= 1.0 and 0.0 <= row["delays_max"] <= 30.0
