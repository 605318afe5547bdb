"""`ranvier report`: the numbers of report.json against independent computations, and the PNGs."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tiny_configs import tiny_lm
from ranvier import train
from ranvier.checkpoint import load_checkpoint
from ranvier.config import build_config
from ranvier.models.classifier import SequenceClassifier, build_classifier
from ranvier.neurons.egru import EGRU, backward_sparsity
from ranvier.neurons.lif import LIF
from ranvier.neurons.readout import LeakyReadout
from ranvier.report import compute_report, record_classifier, record_egru, write_report
from ranvier.tasks.registry import load_task

TINY = dict(task="mnist1d", model="alif", hidden_size=16, batch_size=64, epochs=1, max_steps=6,
            checkpoint_every=2, progress=False, threads=1)
PNG = b"\x89PNG\r\n\x1a\n"


def pairs(x, w):
    """Brute force: Σ over calls t, samples b, outputs o, inputs i of 1[x_{t,b,i} ≠ 0]·1[w_{o,i} ≠ 0]."""
    return int(((x != 0)[:, :, None, :] & (w != 0)[None, None]).sum())


def shifted(z, first=None):
    head = torch.zeros_like(z[:1]) if first is None else first.unsqueeze(0)
    return torch.cat([head, z[:-1]])


def needs_matplotlib():
    try:
        import matplotlib.image
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("matplotlib missing: CI must draw the report's plots")
        pytest.skip("matplotlib is not installed")
    return matplotlib.image


def check_pngs(run_dir, names):
    image_module = needs_matplotlib()
    for name in names:
        path = Path(run_dir) / name
        data = path.read_bytes()
        assert data[:8] == PNG, name
        assert len(data) > 15_000, f"{name} is suspiciously small ({len(data)} bytes)"
        image = image_module.imread(path)  # decodes: a valid PNG
        assert image.shape[0] > 300 and image.shape[1] > 500, name
        colours = torch.from_numpy(image[..., :3].reshape(-1, 3).copy()).unique(dim=0)
        assert len(colours) > 20, f"{name} is nearly blank ({len(colours)} colours)"


# ------------------------------------------------------------------------------ hand counts
def test_spiking_classifier_counts_by_hand():
    """LIF(2 → 3) + readout(3 → 2) with known weights; input channel 0 spikes at every step.

    Unit 0 (input weight +1) fires from t = 1 on; unit 1 (−1, and −0.5 from unit 0) and unit 2
    (input weight 0, recurrent weight 0 from unit 0) never fire. T = 5, B = 1:
      input ACs     5 steps × nnz(W_in[:, 0]) = 5 × 2                         = 10
      recurrent ACs z_1..z_3 feed steps 2..4: 3 × nnz((W_rec·M)[:, 0]) = 3 × 1 = 3
      readout ACs   z_1..z_4: 4 × nnz(W_out[:, 0]) = 4 × 1                    = 4
      Dense         5·(3·2) + 5·(3·3) + 5·(2·3)                               = 105
    """
    core = LIF(2, 3, threshold=0.01)
    readout = LeakyReadout(3, 2, tau_out=0.0)
    with torch.no_grad():
        core.input_weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.0], [0.0, 3.0]]))
        core.recurrent_weight.copy_(torch.tensor([[9.0, 0.7, 0.7], [-0.5, 9.0, 0.7], [0.0, 0.7, 9.0]]))  # diag masked
        readout.linear.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]))
    model = SequenceClassifier(core, readout, spiking=True).eval()
    x = torch.zeros(1, 5, 2)
    x[0, :, 0] = 1.0
    with torch.no_grad():
        logits, (layer, out) = record_classifier(model, x)
        expected_logits, activity = model(x)
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=0)
    assert activity[:, 0].tolist() == [[0, 0, 0]] + [[1, 0, 0]] * 4  # the pattern the counts assume
    assert torch.equal(layer.activity, activity)
    assert (layer.ops.ac_total, layer.ops.mac_total, layer.ops.dense_total) == (10 + 3, 0, 30 + 45)
    assert (out.ops.ac_total, out.ops.mac_total, out.ops.dense_total) == (4, 0, 30)
    assert (layer.ops + out.ops).as_neurobench() == {"Effective_MACs": 0.0, "Effective_ACs": 17.0, "Dense": 105.0}
    assert layer.kind == "lif" and layer.backward_total == 15


def fixed_egru():
    """EGRU(2 → 2) whose events are known: unit 0 fires at every step on input [1.5, 0] with a
    graded value tanh(1.5) ≈ 0.905 (ϑ_0 = 0.2, update gate ≈ 0); unit 1 never fires (candidate
    tanh(−3) < 0). Gate rows [z0, z1, r0, r1, g0, g1]."""
    egru = EGRU(2, 2)
    with torch.no_grad():
        egru.weight_ih_l0.copy_(torch.tensor([[-5.0, 0.7], [0.0, 0.7], [0.3, 0.7], [0.0, 0.7], [1.0, 0.7], [-2.0, 0.7]]))
        egru.weight_hh_l0.copy_(torch.tensor([[0.0, 0.4], [0.5, 0.4], [0.5, 0.4], [0.5, 0.4], [0.0, 0.4], [0.0, 0.4]]))
        egru.bias_ih_l0.zero_()
        egru.bias_hh_l0.zero_()
        egru.threshold_logit_l0.copy_(torch.tensor([math.log(0.2 / 0.8), 3.0]))
    return egru.eval()


def test_egru_synops_through_the_real_trajectory_by_hand():
    """T = 3, B = 2 (sample 0: x_t = [1.5, 0]; sample 1: silent). nnz(W_ih[:, 0]) = 4,
    nnz(W_hh[:, 0]) = 3; x_{:, 1} = 0 and unit 1 never fires, so their columns never count.
      input MACs      sample 0: 3 steps × 4                         = 12
      recurrent MACs  y_0, y_1 of unit 0 feed steps 1, 2: 2 × 3     = 6
      Dense           2 samples × 3 steps × (6·2 + 6·2)             = 144  → 72 per sample
    Backward sparsity: only sample 0's unit 1 (|ĉ − ϑ| ≈ 1.45, 1.64, … ≥ 1) is outside the window:
    3 of 12 unit-steps. Activation sparsity: 3 events in 12 unit-steps → 0.75."""
    egru = fixed_egru()
    x = torch.zeros(3, 2, 2)
    x[:, 0, 0] = 1.5
    with torch.no_grad():
        out, (record,), finals = record_egru(egru, x)
        y, _ = egru(x)
    torch.testing.assert_close(out, y, rtol=0, atol=0)
    events = record.activity
    assert (events != 0).tolist() == [[[True, False], [False, False]]] * 3
    assert ((events[:, 0, 0] - math.tanh(1.5)).abs() < 1e-3).all()  # graded, so MACs
    ops = record.ops
    assert (ops.mac_total, ops.ac_total, ops.dense_total, ops.samples) == (18, 0, 144, 2)
    assert ops.as_neurobench() == {"Effective_MACs": 9.0, "Effective_ACs": 0.0, "Dense": 72.0}
    assert (record.backward_zero, record.backward_total) == (3, 12)
    # carried state (language-model windows): [0:2] then [2:3] counts the same as one pass
    with torch.no_grad():
        _, (first,), state = record_egru(egru, x[:2])
        _, (second,), _ = record_egru(egru, x[2:], state)
    both = first.ops + second.ops
    assert (both.mac_total, both.dense_total) == (18, 144)


# ------------------------------------------------------------------------------ MNIST-1D run
def test_mnist1d_report_matches_independent_counts(tmp_path):
    needs_matplotlib()
    run = tmp_path / "run"
    train.fit(build_config({**TINY, "out": str(run)}))
    rng = torch.get_rng_state()
    report = write_report(run, samples=64)
    assert torch.equal(rng, torch.get_rng_state())  # the report leaves the caller's RNG alone
    saved = json.loads((run / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert saved == json.loads(json.dumps(report))
    assert saved["evaluated"]["samples"] == 64 and saved["evaluated"]["per"] == "sample"

    # the model, rebuilt and run independently (not through ranvier.report)
    cfg = build_config(preset=run / "config.toml")
    task = load_task(cfg.task, None, False, cfg.levels)
    model = build_classifier(cfg, task.n_inputs, task.n_classes)
    load_checkpoint(run / "checkpoint.safetensors", model, restore_rng=False)
    model.eval()
    x, y = task.encode(task.x_test[:64]), task.y_test[:64]
    with torch.no_grad():
        logits, spikes = model(x)  # spikes [T, B, H]
        xs = x.transpose(0, 1)
        _, states = model.core.trajectory(xs)
    T, B, H = spikes.shape
    I, O = xs.shape[-1], task.n_classes
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    assert saved["evaluated"]["accuracy"] == (logits.argmax(-1) == y).float().mean().item()

    act = saved["activation_sparsity"]
    assert act["by_layer"]["layer0"] == pytest.approx(1 - spikes.mean().item(), abs=1e-7)
    assert act["overall"] == act["by_layer"]["layer0"]
    assert act["per_step"]["layer0"] == pytest.approx((1 - spikes.mean(dim=(1, 2))).tolist(), abs=1e-7)

    # synaptic operations: brute-force pair counts. The input carries the analog channel, so every
    # input call is graded (MACs); recurrent spikes and the readout's input are binary (ACs).
    core, w_out = model.core, model.readout.linear.weight
    graded = ((xs != 0) & (xs != 1) & (xs != -1)).flatten(1).any(1)
    assert graded.all()
    w_rec = core.recurrent_weight * core.recurrent_mask
    syn = saved["synops"]
    assert syn["Effective_MACs"] == pairs(xs, core.input_weight) / B
    assert syn["Effective_ACs"] == (pairs(shifted(spikes), w_rec) + pairs(spikes, w_out)) / B
    assert syn["Dense"] == T * (H * I + H * H + O * H)
    assert syn["by_layer"]["readout"]["Effective_ACs"] == pairs(spikes, w_out) / B

    # membrane updates: every unit at step 0, then every change of v
    v = states.v
    assert saved["membrane_updates"]["total"] == pytest.approx((v[0].numel() + int((v[1:] != v[:-1]).sum())) / B)

    # backward sparsity: the e-prop spike argument (v_t − A_t)/v_th reproduces the spikes, and the
    # triangle (width 1) is zero where |argument| ≥ 1
    adaptive = core.threshold + core.beta * states.b
    argument = (states.v - adaptive) / core.threshold
    assert torch.equal((argument > 0).float(), spikes)
    beta_tilde = (argument.abs() >= core.surrogate.width).double().mean().item()
    assert saved["backward_sparsity"]["by_layer"]["layer0"] == pytest.approx(beta_tilde, abs=1e-12)

    # training cost: dense 3·Dense; sparse = effective forward + 2·Dense_l·(1 − β̃_l)
    layers = saved["by_layer"]
    dense_core, dense_out = T * H * (I + H), T * O * H
    cost = saved["training_cost"]
    assert cost["dense"] == 3 * syn["Dense"]
    assert cost["sparse"] == pytest.approx(syn["Effective_MACs"] + syn["Effective_ACs"]
                                           + 2 * dense_core * (1 - beta_tilde) + 2 * dense_out)
    assert layers["layer0"]["backward_sparsity"] == saved["backward_sparsity"]["overall"]

    # energy: estimates with the default profile, by the documented formula
    energy = saved["energy"]
    assert energy["kind"] == "estimate" and "not a measurement" in energy["label"]
    assert any("Horowitz" in s and "ISSCC 2014" in s for s in energy["sources"])
    mac, ac, sram = 4.6, 0.9, 5.0
    state = T * H * 2 * 2 * sram  # T·H updates × 2 words (v, b) × read + write
    inference = energy["inference"]
    assert inference["dense"]["kind"] == inference["event"]["kind"] == "estimate"
    assert inference["dense"]["total_pj"] == pytest.approx(syn["Dense"] * (mac + sram) + state)
    ops = syn["Effective_MACs"] + syn["Effective_ACs"]
    assert inference["event"]["total_pj"] == pytest.approx(
        syn["Effective_MACs"] * mac + syn["Effective_ACs"] * ac + ops * sram + state)
    assert inference["dense_over_event"] > 1

    # connection sparsity and footprint
    zeros = int((core.input_weight == 0).sum() + (w_rec == 0).sum() + (w_out == 0).sum())
    assert saved["connection_sparsity"]["overall"] == zeros / (H * I + H * H + O * H)
    assert saved["footprint_bytes"] == 4 * (sum(p.numel() for p in model.parameters())
                                            + sum(b.numel() for b in model.buffers()))

    md = (run / "report.md").read_text()
    assert "`ranvier report RUN_DIR`" in md and "estimate" in md and "| layer0 | alif |" in md
    check_pngs(run, ["raster.png", "activity.png", "training.png", "energy.png"])
    assert saved["files"] == ["report.json", "report.md", "raster.png", "activity.png", "training.png", "energy.png"]


def test_numeric_report_is_fast_and_does_not_import_matplotlib(tmp_path):
    """What `ranvier train` calls at the end of a run: MNIST-1D at the default model size."""
    run = tmp_path / "default"
    train.fit(build_config({"max_steps": 1, "progress": False, "threads": 1, "out": str(run)}))
    start = time.perf_counter()
    report = write_report(run, plots=False)
    assert time.perf_counter() - start < 2.0
    assert report["files"] == ["report.json", "report.md"] and not list(run.glob("*.png"))
    assert report["by_layer"]["layer0"]["units"] == 128 and report["evaluated"]["samples"] == 256
    code = ("import sys; from ranvier.report import write_report; "
            f"write_report({str(run)!r}, plots=False); print('matplotlib' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.stdout.strip() == "False"
    assert compute_report(run, samples=8)["evaluated"]["samples"] == 8


def test_gru_classifier_report_counts_dense_states(tmp_path):
    run = tmp_path / "gru"
    train.fit(build_config({**TINY, "model": "gru", "max_steps": 2, "out": str(run)}))
    report = compute_report(run, samples=16)
    cfg = build_config(preset=run / "config.toml")
    task = load_task(cfg.task, None, False, cfg.levels)
    model = build_classifier(cfg, task.n_inputs, task.n_classes)
    load_checkpoint(run / "checkpoint.safetensors", model, restore_rng=False)
    model.eval()
    with torch.no_grad():
        xs = task.encode(task.x_test[:16]).transpose(0, 1)
        h, _ = model.core.rnn(xs)
    T, B, H = h.shape
    rnn = model.core.rnn
    expected = pairs(xs, rnn.weight_ih_l0) + pairs(shifted(h), rnn.weight_hh_l0) + pairs(h, model.readout.linear.weight)
    syn = report["synops"]
    assert syn["Effective_ACs"] == 0.0 and syn["Effective_MACs"] == expected / B
    assert syn["Dense"] == T * (3 * H * (xs.shape[-1] + H) + task.n_classes * H)
    assert report["activation_sparsity"]["by_layer"]["layer0"] == pytest.approx(1 - (h != 0).double().mean().item())
    assert report["membrane_updates"] is None and report["backward_sparsity"]["overall"] is None
    assert report["training_cost"]["dense_over_sparse"] == pytest.approx(3 * syn["Dense"] / (
        syn["Effective_MACs"] + 2 * syn["Dense"]))


# ------------------------------------------------------------------------------ language models
def test_egru_language_model_report(data_dir, tmp_path):
    needs_matplotlib()
    cfg = tiny_lm(data_dir, tmp_path, "egru")
    train.fit(cfg)
    n = 30  # tokens: windows of bptt = 12, 12, 6 with the state carried
    report = write_report(cfg.run_dir(), samples=n)
    assert report["evaluated"]["per"] == "token" and report["evaluated"]["tokens"] == n

    from ranvier.data.text import load_corpus
    from ranvier.train_lm import LanguageModelJob

    model = LanguageModelJob(cfg).model
    load_checkpoint(cfg.run_dir() / "checkpoint.safetensors", model, restore_rng=False)
    model.eval()
    stream = load_corpus("ptb", data_dir).test[: n + 1]
    state, loss, logs = None, 0.0, []
    with torch.no_grad():
        for start in range(0, n, cfg.bptt):
            tokens = stream[start:min(start + cfg.bptt, n)].unsqueeze(1)
            first = None if state is None else [s.y for s in state]
            logits, state, record = model(tokens, state)
            loss += F.cross_entropy(logits[:, 0], stream[start + 1:start + 1 + len(tokens)], reduction="sum").item()
            logs.append((tokens, first, record, logits))
    assert report["evaluated"]["loss"] == pytest.approx(loss / n, rel=1e-6)

    o = [torch.cat([r[k].o for _, _, r, _ in logs]) for k in range(2)]
    margin = [torch.cat([r[k].margin for _, _, r, _ in logs]) for k in range(2)]
    by_layer = report["by_layer"]
    for k in range(2):
        assert by_layer[f"layer{k}"]["activation_sparsity"] == pytest.approx(1 - o[k].double().mean().item(), abs=1e-12)
        assert by_layer[f"layer{k}"]["backward_sparsity"] == pytest.approx(
            backward_sparsity(margin[k], cfg.epsilon).item(), abs=1e-12)

    # layer 0: embedded words (graded) × W_ih, carried events y_{t−1} × W_hh; per token
    rnn = model.rnn
    ops0 = 0
    for tokens, first, record, _ in logs:
        ops0 += pairs(model.embedding(tokens), rnn.weight_ih_l0)
        ops0 += pairs(shifted(record[0].y, None if first is None else first[0]), rnn.weight_hh_l0)
    E, H, V = 16, 24, model.decoder.weight.shape[0]
    assert by_layer["layer0"]["synops"] == {"Effective_MACs": ops0 / n, "Effective_ACs": 0.0,
                                            "Dense": 3 * H * (E + H)}
    assert by_layer["decoder"]["synops"]["Dense"] == V * E
    assert report["synops"]["Dense"] == 3 * H * (E + H) + 3 * H * 2 * H + E * H + V * E
    assert by_layer["layer0"]["elementwise"] == {"mults": 3 * H, "adds": 13 * H, "nonlinear": 3 * H, "compares": H}
    assert report["energy"]["kind"] == "estimate"
    check_pngs(cfg.run_dir(), ["raster.png", "activity.png", "training.png", "energy.png", "tokens.png"])


def test_gru_language_model_report_counts_every_layer(data_dir, tmp_path):
    cfg = tiny_lm(data_dir, tmp_path, "gru", num_layers=2)
    train.fit(cfg)
    n = 20
    report = compute_report(cfg.run_dir(), samples=n)
    from ranvier.data.text import load_corpus
    from ranvier.train_lm import LanguageModelJob

    model = LanguageModelJob(cfg).model
    load_checkpoint(cfg.run_dir() / "checkpoint.safetensors", model, restore_rng=False)
    model.eval()
    stream = load_corpus("ptb", data_dir).test[: n + 1]
    state, loss = None, 0.0
    with torch.no_grad():
        for start in range(0, n, cfg.bptt):
            tokens = stream[start:min(start + cfg.bptt, n)].unsqueeze(1)
            logits, state, _ = model(tokens, state)
            loss += F.cross_entropy(logits[:, 0], stream[start + 1:start + 1 + len(tokens)], reduction="sum").item()
    # the per-layer replay reproduces the stacked nn.GRU (same loss), and every layer is counted
    assert report["evaluated"]["loss"] == pytest.approx(loss / n, rel=1e-5)
    E, H = 16, 24
    assert report["by_layer"]["layer1"]["synops"]["Dense"] == 3 * H * (H + H)
    assert report["by_layer"]["layer0"]["synops"]["Dense"] == 3 * H * (E + H)
    assert report["activation_sparsity"]["overall"] == pytest.approx(0.0, abs=0.01)
    assert report["backward_sparsity"]["overall"] is None
