"""Parameter sparsity: MaskedLinear, DEEP R, soft DEEP R, magnitude pruning, and masks kept through
training, checkpoints and metrics."""
import math

import pytest
import torch

from ranvier import ALIF, EGRU
from ranvier.checkpoint import load_checkpoint, save_checkpoint
from ranvier.config import build_config
from ranvier.layers import MaskedLinear
from ranvier.metrics import connection_sparsity, layer_synops
from ranvier.models.classifier import build_classifier
from ranvier.sparse import (DeepR, GradualPruning, SoftDeepR, cubic_sparsity, dale_signs, get_mask, magnitude_prune,
                            maskable_weights, set_mask, weight_sparsity)


def _alif_and_loss(seed=0, hidden=12):
    torch.manual_seed(seed)
    layer = ALIF(5, hidden)
    x = torch.rand(15, 4, 5)

    def loss():
        z, state = layer(x)
        return (z.sum(0) - 0.5).pow(2).mean() + state.v.pow(2).mean()  # v keeps gradients flowing without spikes

    return layer, loss


# ------------------------------------------------------------------------------------ MaskedLinear
def test_masked_linear_matches_linear_on_effective_weight_and_has_stable_keys():
    torch.manual_seed(0)
    layer = MaskedLinear(6, 4).double()
    assert sorted(layer.state_dict()) == ["bias", "mask", "weight"]
    mask = torch.rand(4, 6) < 0.5
    set_mask(layer, "weight", mask)
    assert sorted(layer.state_dict()) == ["bias", "mask", "weight"]
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    reference = x @ (layer.weight * mask).t() + layer.bias
    torch.testing.assert_close(layer(x), reference)
    layer(x).sum().backward()
    assert torch.all(layer.weight.grad[~mask] == 0)
    assert torch.autograd.gradcheck(lambda inp: layer(inp), (x,))
    with pytest.raises(ValueError, match="does not match"):
        MaskedLinear(3, 2, mask=torch.ones(3, 3))


# -------------------------------------------------------------------------------------------- DEEP R
@pytest.mark.parametrize("budget", ["global", "per_matrix"])
def test_deepr_keeps_exactly_k_active_and_never_flips_a_sign(budget):
    layer, loss = _alif_and_loss()
    # a large L1 and a high temperature: many connections die and are reborn every step
    opt = DeepR(torch.optim.Adam(layer.parameters(), lr=0.05), layer, [0.3, 0.2], l1=0.5, temperature=1e-3,
                budget=budget)
    names = ["input_weight", "recurrent_weight"]
    signs = [s.clone() for s in opt.signs]
    assert opt.budgets == [round(0.3 * 60), round(0.2 * (144 - 12))]  # no self-connections allowed
    rewired = 0
    for _ in range(25):
        before = [get_mask(layer, n).clone() for n in names]
        opt.zero_grad()
        loss().backward()
        opt.step()
        counts = opt.active_counts()
        if budget == "per_matrix":
            assert counts == opt.budgets
        else:
            assert sum(counts) == sum(opt.budgets)
        for name, sign, old in zip(names, signs, before):
            w, m = getattr(layer, name), get_mask(layer, name)
            assert torch.all((torch.sign(w) == sign) == (m != 0))  # active ⇔ non-zero with its fixed sign
            assert torch.all(w[m == 0] == 0)
            rewired += int((old != m).sum())
        assert torch.all(layer.recurrent_weight.diagonal() == 0)  # never grows a forbidden self-connection
    assert rewired > 0  # connections did move


def test_deepr_dormant_parameters_get_no_update():
    layer, loss = _alif_and_loss()
    opt = DeepR(torch.optim.Adam(layer.parameters(), lr=0.05), layer, 0.25, l1=0.0, budget="per_matrix",
                epsilon=1e-12)
    for _ in range(3):  # build up Adam momentum on the active entries
        opt.zero_grad()
        loss().backward()
        opt.step()
    before = {n: (getattr(layer, n).detach().clone(), get_mask(layer, n).clone()) for n in ("input_weight", "recurrent_weight")}
    opt.zero_grad()
    loss().backward()
    opt.step()
    for name, (w_old, m_old) in before.items():
        w_new, m_new = getattr(layer, name), get_mask(layer, name)
        stayed_dormant = (m_old == 0) & (m_new == 0)
        reborn = (m_old == 0) & (m_new != 0)
        assert torch.all(w_new[stayed_dormant] == 0)
        # a reconnected entry starts at θ = ε with its own sign, whatever the optimiser did
        torch.testing.assert_close(w_new[reborn].abs(), torch.full_like(w_new[reborn], 1e-12))
        assert torch.any(w_new[m_old != 0] != w_old[m_old != 0])  # active ones did move


def test_deepr_step_is_the_paper_update_with_sgd():
    """With SGD the whole step is ``θ ← θ − η·s·∂E/∂w − η·α + sqrt(2ηT)·ν`` on the active entries."""
    torch.manual_seed(0)
    layer = MaskedLinear(8, 6, bias=False).double()
    lr, l1, temp = 0.1, 0.01, 1e-4
    opt = DeepR(torch.optim.SGD(layer.parameters(), lr=lr), {"w": (layer, "weight")}, 0.5, l1=l1,
                temperature=temp, budget="per_matrix")
    x = torch.randn(5, 8, dtype=torch.float64)
    layer(x).pow(2).sum().backward()
    sign, active = opt.signs[0], layer.mask != 0
    theta = sign * layer.weight.detach()
    grad_theta = sign * layer.weight.grad
    rng = torch.get_rng_state()
    opt.step()
    torch.set_rng_state(rng)
    noise = torch.randn_like(theta)  # the same draw the step made
    expected = (theta - lr * grad_theta - lr * l1 + math.sqrt(2 * lr * temp) * noise) * active
    survived = active & (expected > 0) & (layer.mask != 0)
    torch.testing.assert_close(layer.weight[survived], (sign * expected)[survived])
    assert torch.all(layer.weight[active & (expected <= 0)].abs() <= 1e-12)  # died (or reborn at ε)
    assert int(layer.mask.sum()) == opt.budgets[0]


def test_deepr_dale_signs_per_presynaptic_neuron():
    layer, loss = _alif_and_loss()
    s_in, s_rec = dale_signs(5, 0.6), dale_signs(12, 0.8)
    opt = DeepR(torch.optim.Adam(layer.parameters(), lr=0.05), layer, 0.4, l1=0.1, signs=[s_in, s_rec])
    for _ in range(5):
        opt.zero_grad()
        loss().backward()
        opt.step()
    for w, s in ((layer.input_weight, s_in), (layer.recurrent_weight, s_rec)):
        columns = torch.sign(w) * s  # every non-zero entry of column j has the sign s_j
        assert torch.all(columns[w != 0] == 1)
    with pytest.raises(ValueError, match="fit neither"):
        DeepR(torch.optim.Adam(layer.parameters()), layer, 0.4, signs=[torch.ones(3), None])


def test_deepr_state_dict_round_trip_and_bad_arguments():
    layer, loss = _alif_and_loss()
    opt = DeepR(torch.optim.Adam(layer.parameters(), lr=0.05), layer, 0.3, l1=0.1)
    opt.zero_grad()
    loss().backward()
    opt.step()
    layer2, _ = _alif_and_loss(seed=1)
    opt2 = DeepR(torch.optim.Adam(layer2.parameters(), lr=0.05), layer2, 0.3, l1=0.1)
    opt2.load_state_dict(opt.state_dict())
    layer2.load_state_dict(layer.state_dict())
    for a, b in zip(opt.signs + opt.allowed, opt2.signs + opt2.allowed):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="connectivity"):
        DeepR(torch.optim.Adam(layer.parameters()), layer, 1.5)
    with pytest.raises(ValueError, match="budget"):
        DeepR(torch.optim.Adam(layer.parameters()), layer, 0.5, budget="per_layer")
    with pytest.raises(ValueError, match="ignore masks"):
        DeepR(torch.optim.Adam(torch.nn.GRU(3, 4).parameters()), torch.nn.GRU(3, 4), 0.5)


# ----------------------------------------------------------------------------------- soft DEEP R
def test_soft_deepr_clips_at_theta_min_and_lets_dormant_connections_diffuse():
    torch.manual_seed(0)
    layer = MaskedLinear(10, 10, bias=False)
    theta_min = -0.02
    opt = SoftDeepR(torch.optim.SGD(layer.parameters(), lr=0.1), {"w": (layer, "weight")}, l1=0.05,
                    temperature=5e-3, theta_min=theta_min, connectivity=0.5)
    signs = opt.signs[0].clone()
    x = torch.randn(4, 10)
    reached_floor = revived = False
    for _ in range(30):
        dormant_before = layer.mask == 0
        opt.zero_grad()
        layer(x).pow(2).sum().backward()
        opt.step()
        theta = opt.theta[0]
        assert theta.min() >= theta_min  # the clip
        reached_floor |= bool((theta == theta_min).any())
        revived |= bool((dormant_before & (layer.mask != 0)).any())
        assert torch.all((layer.mask != 0) == (theta > 0))
        assert torch.all(layer.weight[layer.mask != 0] == (signs * theta)[layer.mask != 0])
        assert torch.all(layer.weight[layer.mask == 0] == 0)
    assert reached_floor and revived
    copy = MaskedLinear(10, 10, bias=False)
    copy.load_state_dict(layer.state_dict())
    opt2 = SoftDeepR(torch.optim.SGD(copy.parameters(), lr=0.1), {"w": (copy, "weight")}, l1=0.05,
                     temperature=5e-3, theta_min=theta_min, connectivity=0.5)
    opt2.load_state_dict(opt.state_dict())  # θ of dormant entries lives only in the optimiser state
    assert torch.equal(opt2.theta[0], opt.theta[0]) and torch.equal(opt2.signs[0], signs)
    with pytest.raises(ValueError, match="no SoftDeepR state"):
        opt2.load_state_dict(torch.optim.SGD(copy.parameters(), lr=0.1).state_dict())
    with pytest.raises(ValueError, match="negative"):
        SoftDeepR(torch.optim.SGD(layer.parameters(), lr=0.1), {"w": (layer, "weight")}, l1=0.0, temperature=0.0,
                  theta_min=0.0)


# ------------------------------------------------------------------------------------------ pruning
def test_cubic_schedule():
    assert cubic_sparsity(5, 0.8, start=10, end=20) == 0.0
    assert cubic_sparsity(10, 0.8, start=10, end=20) == 0.0
    assert cubic_sparsity(15, 0.8, start=10, end=20) == pytest.approx(0.8 - 0.8 * 0.5 ** 3)
    assert cubic_sparsity(25, 0.8, start=10, end=20) == 0.8
    assert cubic_sparsity(10, 0.8, start=10, end=10) == 0.8  # one-shot


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_one_shot_magnitude_pruning_keeps_the_largest(scope):
    torch.manual_seed(0)
    egru = EGRU(6, 8, num_layers=2)
    weights = maskable_weights(egru)
    magnitudes = torch.cat([getattr(m, n).detach().abs().flatten() for m, n in weights.values()])
    magnitude_prune(weights, 0.75, scope=scope)
    assert weight_sparsity(weights) == pytest.approx(0.75, abs=1e-3)
    if scope == "global":
        kept = torch.cat([get_mask(m, n).flatten() for m, n in weights.values()]) != 0
        assert magnitudes[kept].min() >= magnitudes[~kept].max()
    else:
        for m, n in weights.values():
            mask = get_mask(m, n)
            assert int(mask.sum()) == round(0.25 * mask.numel())
            kept = getattr(m, n).detach().abs()[mask != 0]
            assert torch.all(getattr(m, n)[mask == 0] == 0) and kept.min() > 0
    # pruning again to a lower sparsity never revives a connection
    before = [get_mask(m, n).clone() for m, n in weights.values()]
    magnitude_prune(weights, 0.5, scope=scope)
    for (m, n), old in zip(weights.values(), before):
        assert torch.equal(get_mask(m, n), old)


def test_gradual_pruning_follows_the_schedule_and_masked_weights_stay_zero():
    layer, loss = _alif_and_loss()
    opt = GradualPruning(torch.optim.Adam(layer.parameters(), lr=0.05), layer, 0.9, start=2, end=8, every=2)
    weights = maskable_weights(layer)
    seen = []
    for step in range(1, 11):
        opt.zero_grad()
        loss().backward()
        opt.step()
        sparsity = weight_sparsity(weights)
        seen.append(sparsity)
        # the mask grows on schedule; Adam momentum never moves a pruned weight off zero
        expected = cubic_sparsity(max(s for s in range(step + 1) if opt.due(s) or s == 0), 0.9, start=2, end=8)
        assert sparsity >= expected - 0.01
        for m, n in weights.values():
            assert torch.all(getattr(m, n)[get_mask(m, n) == 0] == 0)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(0.9, abs=0.01)
    state = opt.state_dict()
    opt2 = GradualPruning(torch.optim.Adam(layer.parameters(), lr=0.05), layer, 0.9, start=2, end=8, every=2)
    opt2.load_state_dict(state)
    assert opt2.steps == 10


# ----------------------------------------------------------------------- training and checkpoints
def test_fit_with_rewiring_keeps_k_and_resumes_bit_exactly(data_dir, tmp_path, monkeypatch):
    import json

    from ranvier import train

    settings = dict(task="mnist1d", model="alif", hidden_size=16, epochs=0, max_steps=6, checkpoint_every=2,
                    batch_size=32, progress=False, threads=1, data_dir=data_dir, rewiring=0.25, rewiring_l1=0.05,
                    rewiring_temperature=1e-4)
    whole = train.fit(build_config({**settings, "out": str(tmp_path / "whole")}))
    real_lr = train._learning_rate

    def dying_lr(cfg, step, total, *args):
        if step == 3:
            raise RuntimeError("crash")  # falls back to the checkpoint of step 2
        return real_lr(cfg, step, total, *args)

    monkeypatch.setattr(train, "_learning_rate", dying_lr)
    cfg = build_config({**settings, "out": str(tmp_path / "cut")})
    with pytest.raises(RuntimeError, match="crash"):
        train.fit(cfg)
    monkeypatch.setattr(train, "_learning_rate", real_lr)
    train.fit(cfg, resume=True)
    models = []
    for run in ("whole", "cut"):
        model = build_classifier(cfg, 1 + 2 * cfg.levels, 10)
        load_checkpoint(tmp_path / run / "checkpoint.safetensors", model, restore_rng=False)
        models.append(model.state_dict())
    assert models[0].keys() == models[1].keys() and "core.input_mask" in models[0]
    for key in models[0]:
        assert torch.equal(models[0][key], models[1][key]), key
    # the saved model: exactly K active recurrent-layer connections, masked weights exactly zero
    state = models[1]
    assert int(state["core.input_mask"].sum() + state["core.recurrent_mask"].sum()) == round(0.25 * 16 * (1 + 2 * cfg.levels)) + round(0.25 * 16 * 15)
    for stem in ("input", "recurrent"):
        assert torch.all(state[f"core.{stem}_weight"][state[f"core.{stem}_mask"] == 0] == 0)
    assert whole["connection_sparsity"] > 0.6
    assert json.loads((tmp_path / "whole" / "report.json").read_text())["connection_sparsity"]["overall"] > 0.6


def test_sparsify_optimizer_soft_mode_and_dale_from_the_config():
    from ranvier.sparse import sparsify_optimizer

    torch.manual_seed(0)
    cfg = build_config(dict(task="mnist1d", model="egru", hidden_size=10, rewiring=0.5, rewiring_l1=0.01,
                            rewiring_temperature=1e-4, rewiring_mode="soft", dale=0.7))
    model = build_classifier(cfg, 3, 10)
    opt = sparsify_optimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, cfg)
    assert isinstance(opt, SoftDeepR) and opt.theta_min == pytest.approx(-0.03)  # -3 x l1
    names = list(maskable_weights(model))
    recurrent = names.index("core.egru.weight_hh_l0")
    signs = opt.signs[recurrent]
    assert torch.all(signs == signs[:1])  # one sign per presynaptic unit (column), all three gates
    assert int((signs[0] > 0).sum()) == 7
    x = torch.randn(4, 12, 3)
    for _ in range(5):
        model(x)[0].pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    w = model.core.egru.weight_hh_l0.detach()
    assert torch.all(w * signs >= 0)  # Dale's law holds through training
    assert all(bool((t >= opt.theta_min).all()) for t in opt.theta)
    def wrap(**settings):
        c = build_config(dict(task="mnist1d", model="egru", hidden_size=10, rewiring=0.5, **settings))
        fresh = build_classifier(c, 3, 10)
        return sparsify_optimizer(torch.optim.SGD(fresh.parameters(), lr=0.1), fresh, c)

    assert isinstance(wrap(dale=0.7), DeepR)
    with pytest.raises(ValueError, match="hard or soft"):
        wrap(rewiring_mode="medium")
    with pytest.raises(ValueError, match="excitatory"):
        wrap(dale=1.5)


def test_fit_with_pruning_reaches_the_sparsity_and_keeps_masked_weights_zero(data_dir, tmp_path):
    from ranvier.train import fit

    cfg = build_config(dict(task="mnist1d", model="lsnn", hidden_size=16, epochs=0, max_steps=6, batch_size=32,
                            progress=False, threads=1, data_dir=data_dir, out=str(tmp_path / "p"), prune=0.8,
                            prune_start=2, prune_end=4, prune_every=1))
    metrics = fit(cfg)
    model = build_classifier(cfg, 1 + 2 * cfg.levels, 10)  # fresh: no masks until the checkpoint brings them
    load_checkpoint(tmp_path / "p" / "checkpoint.safetensors", model, restore_rng=False)
    weights = maskable_weights(model)
    assert weight_sparsity(weights) == pytest.approx(0.8, abs=0.01)
    for m, n in weights.values():
        assert torch.all(getattr(m, n)[get_mask(m, n) == 0] == 0)
    assert metrics["connection_sparsity"] == pytest.approx(connection_sparsity(model))
    assert metrics["connection_sparsity"] > 0.6


def test_language_model_macs_multiply_activity_and_weight_density():
    from ranvier.models.language import LanguageModel
    from ranvier.sparse import sparsify_optimizer
    from ranvier.train_lm import effective_macs_per_token

    torch.manual_seed(0)
    model = LanguageModel("egru", 50, 16, 24, 2)
    densities = [0.3, 0.2]
    dense = effective_macs_per_token(model, densities)
    magnitude_prune(maskable_weights(model), 0.75)
    pruned = effective_macs_per_token(model, densities)
    recurrent = 3 * 24 * (16 * 1.0 + 24 * 0.3) + 3 * 24 * (24 * 0.3 + 24 * 0.2)  # G·H·(I·d_in + H·d) per layer
    decoder = 50 * 16 + 16 * 24 * 0.2  # projection (24 → 16) on the last layer's events, then the tied decoder
    assert dense["effective_macs_per_token"] == pytest.approx(recurrent + decoder)
    assert pruned["effective_macs_per_token"] == pytest.approx(0.25 * recurrent + decoder)
    assert pruned["dense_macs_per_token"] == dense["dense_macs_per_token"]
    cfg = build_config({"task": "ptb", "model": "gru", "prune": 0.5})
    gru = LanguageModel("gru", 50, 16, 24, 2)
    with pytest.raises(ValueError, match="ignore"):
        sparsify_optimizer(torch.optim.Adam(gru.parameters()), gru, cfg)


def test_masks_installed_after_construction_survive_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = build_config({"task": "mnist1d", "model": "alif", "hidden_size": 10})
    model = build_classifier(cfg, 40, 10)
    weights = maskable_weights(model, readout=True)
    assert set(weights) == {"core.input_weight", "core.recurrent_weight", "readout.linear.weight"}
    magnitude_prune(weights, 0.7)
    save_checkpoint(tmp_path / "c.safetensors", model)
    fresh = build_classifier(cfg, 40, 10)
    assert get_mask(fresh.readout.linear, "weight") is None
    load_checkpoint(tmp_path / "c.safetensors", fresh)
    for name, (m, n) in maskable_weights(fresh, readout=True).items():
        original = weights[name]
        assert torch.equal(get_mask(m, n), get_mask(*original))
        assert torch.equal(getattr(m, n), getattr(*original))
    x = torch.rand(3, 40, 40)
    torch.testing.assert_close(fresh(x)[0], model(x)[0])


# --------------------------------------------------------------------------------------- metrics
def test_metrics_count_masked_weights_as_zero():
    torch.manual_seed(0)
    layer = ALIF(6, 8)
    # masked entries keep a non-zero stored value here, so only the masks can make them count as zero
    set_mask(layer, "input_weight", torch.rand(8, 6) < 0.5)
    with torch.no_grad():
        layer.input_weight.add_(1.0)
    masked_in = int((layer.input_mask == 0).sum())
    expected = (masked_in + 8) / (48 + 64)  # + the 8 self-connections of the recurrent mask
    assert connection_sparsity(layer) == pytest.approx(expected)
    x = (torch.rand(10, 2, 6) < 0.3).float()
    with torch.no_grad():
        z, _ = layer(x)
    ops = layer_synops(layer, x, z)
    # by hand: Σ_t Σ_j x_tj · #(unmasked weights leaving input j), and the same for z_{t−1} and W_rec ⊙ M
    fan_out_in = (layer.input_mask != 0).sum(0).float()
    fan_out_rec = ((layer.recurrent_weight * layer.recurrent_mask) != 0).sum(0).float()
    z_prev = torch.cat([torch.zeros_like(z[:1]), z[:-1]])
    expected = float((x.sum(dim=(0, 1)) * fan_out_in).sum() + (z_prev.sum(dim=(0, 1)) * fan_out_rec).sum())
    assert ops.ac_total == expected and ops.mac_total == 0
    linear = MaskedLinear(6, 3, mask=torch.tensor([[1, 0, 0, 0, 0, 1]] * 3))
    assert connection_sparsity(linear) == pytest.approx(12 / 18)
    assert layer_synops(linear, x, linear(x).detach()).effective_acs == pytest.approx(float(x[..., [0, 5]].sum()) * 3 / 2)
