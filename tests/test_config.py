import pytest

from ranvier.config import PRESET_DIR, TrainConfig, build_config, load_preset, to_toml


def test_defaults_train_alif_on_mnist1d_with_the_preset():
    cfg = build_config({})
    assert (cfg.task, cfg.model) == ("mnist1d", "alif")
    assert cfg.levels == load_preset("mnist1d")["levels"]


def test_precedence_model_table_then_preset_file_then_cli(tmp_path):
    assert build_config({"model": "gru"}).tau_out == 0.0  # [gru] table of mnist1d.toml
    user = tmp_path / "u.toml"
    user.write_text('lr = 0.5\nhidden_size = 7\n[gru]\nlr = 0.25\n')
    assert build_config({}, user).lr == 0.5
    assert build_config({"model": "gru"}, user).lr == 0.25
    assert build_config({"lr": 0.125, "model": "gru"}, user).lr == 0.125


def test_round_trip_through_toml(tmp_path):
    cfg = build_config({"model": "lsnn", "n_adaptive": 3, "progress": False})
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert build_config({}, path) == cfg


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
def test_every_builtin_preset_builds(preset):
    assert isinstance(build_config({}, preset), TrainConfig)


def test_bad_settings_are_named(tmp_path):
    bad = tmp_path / "b.toml"
    bad.write_text("learning_rate = 1\n")
    with pytest.raises(ValueError, match="unknown setting.*learning_rate"):
        build_config({}, bad)
    with pytest.raises(FileNotFoundError, match="built-in presets"):
        build_config({}, "no-such-preset")
    with pytest.raises(ValueError, match="hidden_size must be positive"):
        build_config({"hidden_size": 0})
