"""NIR export/import: exact round trips, snnTorch as an external reader, clear errors, the CLI."""
import dataclasses
import importlib

import nir
import pytest
import torch

from conftest import in_ci
from ranvier import ALIF, EGRU, EPROP_CONVENTION, LIF, LSNN_CONVENTION, Convention, LeakyReadout, cli, lif_step
from ranvier.config import build_config
from ranvier.export import NIRExportError, NIRImportError, from_nir, to_nir
from ranvier.layers.chain import Chain
from ranvier.models.classifier import build_classifier
from ranvier.sparse.masks import set_mask

ZERO = dataclasses.replace(EPROP_CONVENTION, reset="zero")  # c = 1, spike from v_t, hard reset
ZERO_SCALED = dataclasses.replace(LSNN_CONVENTION, reset="zero", spike_from_previous=False)  # c = 1 − α


def _drive(layer_in, hidden):
    """Inputs strong enough that a good share of units spike (so the test sees resets)."""
    with torch.no_grad():
        layer_in.input_weight.mul_(4.0)
    return layer_in


def feed_forward():
    return Chain(
        _drive(LIF(3, 16, tau_mem=torch.linspace(4.0, 40.0, 16), threshold=0.4, bias=True, recurrent=False,
                   convention=ZERO_SCALED), 16),
        LIF(16, 12, threshold=torch.linspace(0.2, 0.6, 12), recurrent=False, convention=ZERO),
        LeakyReadout(12, 5, tau_out=10.0),
    )


def recurrent():
    return Chain(_drive(LIF(3, 16, tau_mem=torch.linspace(4.0, 40.0, 16), threshold=0.4, convention=ZERO), 16),
                 LeakyReadout(16, 4, tau_out=0.0))


def through_file(graph, tmp_path):
    path = tmp_path / "model.nir"
    nir.write(str(path), graph)
    return nir.read(str(path))


@pytest.mark.parametrize("make", [feed_forward, recurrent])
@pytest.mark.parametrize("discretisation", ["zoh", "euler"])
def test_round_trip_is_exact(make, discretisation, tmp_path):
    net = make()
    x = torch.randn(60, 4, 3)
    back = from_nir(through_file(to_nir(net, dt=1e-3, discretisation=discretisation), tmp_path))
    assert isinstance(back, Chain) and len(back) == len(net) and type(back[0]) is type(net[0])
    with torch.no_grad():
        spikes = net[0](x)[0]
        assert 0.05 < spikes.mean() < 0.6, "the test needs spikes and resets"
        torch.testing.assert_close(back[0](x)[0], spikes, rtol=0, atol=0)
        torch.testing.assert_close(back(x)[0], net(x)[0], rtol=0, atol=0)


def test_recurrent_graph_has_a_recurrent_edge():
    graph = to_nir(recurrent(), dt=1e-3)
    assert ("layer0.lif", "layer0.rec") in graph.edges and ("layer0.rec", "layer0.lif") in graph.edges
    assert isinstance(graph.nodes["layer0.lif"], nir.LIF) and isinstance(graph.nodes["layer0.rec"], nir.Linear)
    lif = graph.nodes["layer0.lif"]
    assert (lif.v_reset == 0).all() and (lif.v_leak == 0).all()


def test_mapping_formulas():
    """τ and r as docs/nir.md states them, for both discretisations."""
    tau_steps, dt = 20.0, 1e-3
    layer = LIF(2, 3, tau_mem=tau_steps, convention=ZERO_SCALED, recurrent=False)
    alpha = torch.exp(torch.tensor(-1.0 / tau_steps, dtype=torch.float64)).item()
    zoh = to_nir(layer, dt=dt).nodes["layer0.lif"]
    euler = to_nir(layer, dt=dt, discretisation="euler").nodes["layer0.lif"]
    assert zoh.tau == pytest.approx([tau_steps * dt] * 3, rel=1e-6) and zoh.r == pytest.approx([1.0] * 3)
    assert euler.tau == pytest.approx([dt / (1 - alpha)] * 3, rel=1e-6) and euler.r == pytest.approx([1.0] * 3)
    gain_one = to_nir(LIF(2, 3, tau_mem=tau_steps, convention=ZERO, recurrent=False), dt=dt, discretisation="euler")
    assert gain_one.nodes["layer0.lif"].r == pytest.approx([1 / (1 - alpha)] * 3)  # r = τ/dt: snnTorch's RLeaky


def test_spikes_of_width_dt_fold_into_the_next_weights():
    """ranvier's spikes are 1/dt; NIR's are 1: the exported graph still computes the same thing."""
    net = Chain(_drive(LIF(3, 8, dt=0.5, tau_mem=10.0, threshold=0.4, convention=ZERO, recurrent=True), 8),
                LeakyReadout(8, 2, tau_out=5.0, dt=0.5))
    x = torch.randn(40, 2, 3)
    back = from_nir(to_nir(net, dt=1e-3))
    with torch.no_grad():
        torch.testing.assert_close(back[0](x)[0] / 0.5, net[0](x)[0], rtol=0, atol=0)
        torch.testing.assert_close(back(x)[0], net(x)[0], rtol=1e-6, atol=1e-6)


def test_sequence_classifier_round_trip(tmp_path):
    cfg = build_config({"task": "mnist1d", "model": "lif", "convention": "eprop", "reset": "zero",
                        "hidden_size": 12, "tau_mem_max": 60.0, "readout_steps": 3, "repeat": 2})
    model = build_classifier(cfg, 4, 3)
    with torch.no_grad():
        model.core.input_weight.mul_(8.0)
    back = from_nir(through_file(to_nir(model, dt=1e-3), tmp_path))
    x = torch.randn(5, 30, 4)
    with torch.no_grad():
        (logits, activity), (logits2, activity2) = model(x), back(x)
    assert activity.mean() > 0.02
    assert (back.readout_steps, back.repeat) == (3, 2)
    torch.testing.assert_close(activity2, activity, rtol=0, atol=0)
    torch.testing.assert_close(logits2, logits, rtol=0, atol=0)


# ------------------------------------------------------------------------------ what NIR lacks
def test_alif_export_names_adaptation():
    with pytest.raises(NIRExportError, match="threshold adaptation"):
        to_nir(ALIF(3, 8, convention=ZERO), dt=1e-3)


def test_egru_export_names_gating():
    with pytest.raises(NIRExportError, match="gated units"):
        to_nir(EGRU(3, 8), dt=1e-3)
    for model in ("egru", "gru", "lstm"):
        cfg = build_config({"task": "mnist1d", "model": model, "hidden_size": 8})
        with pytest.raises(NIRExportError, match="gated units"):
            to_nir(build_classifier(cfg, 4, 3), dt=1e-3)


@pytest.mark.parametrize("convention, refractory, feature", [
    (LSNN_CONVENTION, 0, "subtractive reset"),
    (dataclasses.replace(LSNN_CONVENTION, reset="zero"), 0, "LSNN spike timing"),
    (ZERO, 2, "refractoriness"),
])
def test_lif_features_nir_lacks_are_named(convention, refractory, feature):
    with pytest.raises(NIRExportError, match=feature):
        to_nir(LIF(3, 8, convention=convention, n_refractory=refractory), dt=1e-3)


def test_weight_mask_is_named():
    layer = LIF(6, 8, convention=ZERO)
    set_mask(layer, "input_weight", (torch.rand(8, 6) > 0.5).float())
    with pytest.raises(NIRExportError, match="sparse weights"):
        to_nir(layer, dt=1e-3)
    to_nir(LIF(6, 8, convention=ZERO), dt=1e-3)  # the default no-autapse mask is no sparsity to lose


def test_bad_arguments():
    with pytest.raises(ValueError, match="dt"):
        to_nir(LIF(2, 2, convention=ZERO), dt=0.0)
    with pytest.raises(ValueError, match="discretisation"):
        to_nir(LIF(2, 2, convention=ZERO), dt=1e-3, discretisation="rk4")
    with pytest.raises(ValueError, match="reset"):
        Convention(reset="soft")
    graph = to_nir(LIF(2, 2, convention=ZERO), dt=1e-3)
    graph.metadata = {}
    with pytest.raises(NIRImportError, match="dt="):
        from_nir(graph)
    cuba = nir.NIRGraph.from_list(nir.Linear(weight=torch.eye(2).numpy()),
                                  nir.CubaLIF(tau_syn=torch.ones(2).numpy(), tau_mem=torch.ones(2).numpy(),
                                              r=torch.ones(2).numpy(), v_leak=torch.zeros(2).numpy(),
                                              v_threshold=torch.ones(2).numpy()))
    with pytest.raises(NIRImportError, match="CubaLIF"):
        from_nir(cuba, dt=1e-3, discretisation="euler")


@pytest.mark.parametrize("discretisation", ["zoh", "euler"])
def test_extensions_round_trip_alif_lsnn_refractory_and_masks(discretisation, tmp_path):
    """With the opt-in, everything NIR lacks travels in node metadata and comes back exactly."""
    beta = torch.cat([torch.zeros(8), torch.full((8,), 1.8)])  # an LSNN: half LIF, half ALIF
    alif = ALIF(3, 16, beta=beta, tau_adapt=torch.linspace(50.0, 300.0, 16), threshold=0.05, n_refractory=2)
    set_mask(alif, "recurrent_weight", (torch.rand(16, 16) > 0.3).float() * alif.recurrent_mask)
    readout = LeakyReadout(6, 3)
    set_mask(readout.linear, "weight", (torch.rand(3, 6) > 0.5).float())
    net = Chain(_drive(alif, 16), LIF(16, 6, threshold=0.02, recurrent=False), readout)
    graph = through_file(to_nir(net, dt=1e-3, discretisation=discretisation, extensions=True), tmp_path)
    back = from_nir(graph)
    assert [type(m) for m in back] == [ALIF, LIF, LeakyReadout]
    assert back[0].convention == LSNN_CONVENTION and back[0].n_refractory == 2
    torch.testing.assert_close(back[0].recurrent_mask, alif.recurrent_mask)
    torch.testing.assert_close(back[2].linear.mask, readout.linear.mask)
    x = torch.randn(80, 3, 3)
    with torch.no_grad():
        spikes = net[0](x)[0]
        assert 0.02 < spikes.mean() < 0.6
        torch.testing.assert_close(back[0](x)[0], spikes, rtol=0, atol=0)
        torch.testing.assert_close(back(x)[0], net(x)[0], rtol=0, atol=0)


# ------------------------------------------------------------------------------ the zero reset itself
def test_zero_reset_matches_the_nir_lif_reference():
    """``reset="zero"``: the NIR LIF discretised — decay, add input, fire if v > θ, then v := 0."""
    torch.manual_seed(1)
    alpha, threshold, T = torch.rand(5, dtype=torch.float64) * 0.5 + 0.45, torch.full((5,), 0.5, dtype=torch.float64), 40
    current = torch.randn(T, 2, 5, dtype=torch.float64)
    for scale_input in (True, False):
        conv = dataclasses.replace(ZERO, scale_input=scale_input)
        gain = (1 - alpha) if scale_input else 1.0
        v_ref = torch.zeros(2, 5, dtype=torch.float64)
        state = LIF.State(*([torch.zeros(2, 5, dtype=torch.float64)] * 3))
        for t in range(T):
            v_ref = alpha * v_ref + gain * current[t]
            z_ref = (v_ref > threshold).double()
            v_ref = torch.where(z_ref > 0, torch.zeros_like(v_ref), v_ref)
            z, state = lif_step(current[t], state, alpha=alpha, threshold=threshold, convention=conv)
            torch.testing.assert_close(z, z_ref, rtol=0, atol=0)
            # ranvier keeps v before the reset (the reset acts on the next step), so compare the next step
            torch.testing.assert_close(torch.where(z > 0, torch.zeros_like(state.v), state.v), v_ref)


# ------------------------------------------------------------------------------ an external reader
def _snntorch():
    try:
        importlib.import_module("nirtorch")
        return importlib.import_module("snntorch.import_nir")
    except ImportError as err:  # optional test extra: pip install --no-deps snntorch==1.0.0 nirtorch==2.6
        if in_ci():
            pytest.fail(f"snntorch/nirtorch missing in CI: {err}")
        pytest.skip(f"snntorch/nirtorch not installed: {err}")


def _run_stepwise(module, x):
    outputs = []
    with torch.no_grad():
        for x_t in x:
            out = module(x_t)
            outputs.append(out[0] if isinstance(out, tuple) else out)
    return torch.stack(outputs)


@pytest.mark.parametrize("convention", [ZERO, ZERO_SCALED], ids=["gain1", "gain1-alpha"])
def test_snntorch_reads_feed_forward_lif_and_spikes_the_same(convention, tmp_path, capsys):
    """snnTorch 1.0.0 integrates NIR's LIF with forward Euler at dt = 1e-4 s, hard reset to 0: a
    ranvier graph written with discretisation="euler", dt=1e-4 is the same discrete system."""
    snn_import = _snntorch()
    low = 1.0 if convention.scale_input is False else 0.25  # c = 1 − α integrates less charge
    net = Chain(_drive(LIF(3, 16, tau_mem=20.0, threshold=0.4 * low, recurrent=False, convention=convention), 16),
                LIF(16, 8, tau_mem=10.0, threshold=0.3 * low, recurrent=False, convention=convention))
    path = tmp_path / "lif.nir"
    nir.write(str(path), to_nir(net, dt=1e-4, discretisation="euler"))
    reader = snn_import.import_from_nir(nir.read(str(path)))
    x = torch.randn(80, 4, 3)
    with torch.no_grad():
        hidden, out = net[0](x)[0], net(x)[0]
    assert hidden.mean() > 0.05 and out.mean() > 0.02
    torch.testing.assert_close(_run_stepwise(reader, x), out, rtol=0, atol=0)
    capsys.readouterr()  # snnTorch prints progress notes


def test_snntorch_reads_recurrent_lif_and_spikes_the_same(tmp_path, capsys):
    """snnTorch maps ranvier's LIF ⇄ Linear loop to its RLeaky. (Its import_from_nir glue with
    nirtorch 2.6 runs the loop's subgraph without that mapping and feeds the input through the
    recurrent weights, so the test calls snnTorch's own RLeaky converter; docs/nir.md.)"""
    snn_import = _snntorch()
    net = Chain(_drive(LIF(3, 16, tau_mem=20.0, threshold=0.4, convention=ZERO), 16))
    path = tmp_path / "rlif.nir"
    nir.write(str(path), to_nir(net, dt=1e-4, discretisation="euler"))
    graph = snn_import._replace_rnn_subgraph_with_nirgraph(nir.read(str(path)))
    assert isinstance(graph.nodes["layer0"], nir.NIRGraph)  # snnTorch found the recurrent loop
    w_in = snn_import._nir_to_snntorch_module(graph.nodes["layer0_in"], init_hidden=True)
    rleaky = snn_import._nir_to_snntorch_module(graph.nodes["layer0"], init_hidden=True)
    x = torch.randn(80, 4, 3)
    with torch.no_grad():
        spikes = net(x)[0]
    assert spikes.mean() > 0.05
    torch.testing.assert_close(_run_stepwise(lambda x_t: rleaky(w_in(x_t)), x), spikes, rtol=0, atol=0)
    capsys.readouterr()


# ------------------------------------------------------------------------------ ranvier export
def test_cli_export_of_a_trained_run(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--task", "mnist1d", "--hidden-size", "12", "--batch-size", "32", "--max-steps", "2", "--no-progress",
              "--threads", "1"]
    assert cli.main(["train", "--model", "lif", "--convention", "eprop", "--reset", "zero", *common,
                     "--out", str(run)]) == 0
    out = tmp_path / "model.nir"
    assert cli.main(["export", str(run), "--format", "nir", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    from ranvier.report import load_run

    loaded = load_run(run)
    back = from_nir(out)
    x = loaded.task.encode(loaded.task.x_test[:8])
    with torch.no_grad():
        torch.testing.assert_close(back(x)[0], loaded.model(x)[0], rtol=0, atol=0)

    alif_run = tmp_path / "alif"
    assert cli.main(["train", "--model", "alif", *common, "--out", str(alif_run)]) == 0
    assert cli.main(["export", str(alif_run), "-o", str(tmp_path / "alif.nir")]) == 2
    assert "threshold adaptation" in capsys.readouterr().err
    assert cli.main(["export", str(alif_run), "-o", str(tmp_path / "alif.nir"), "--extensions"]) == 0
    assert isinstance(from_nir(tmp_path / "alif.nir").core, ALIF)
