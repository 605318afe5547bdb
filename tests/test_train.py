"""Training loop: determinism, resume after an interruption, run directory contents, CLI."""
import json

import pytest
import torch
from safetensors.torch import load_file

from ranvier import cli, train
from ranvier.checkpoint import CheckpointError, load_checkpoint
from ranvier.config import build_config

TINY = dict(task="mnist1d", model="alif", hidden_size=16, batch_size=64, epochs=1, max_steps=6,
            checkpoint_every=2, progress=False, threads=1)


def weights(run_dir):
    tensors = load_file(str(run_dir / "checkpoint.safetensors"))
    return {k: v for k, v in tensors.items() if k.startswith(("model/", "optim/"))}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_run_directory_and_same_seed_same_run(tmp_path):
    m1 = train.fit(build_config({**TINY, "out": str(tmp_path / "a")}))
    m2 = train.fit(build_config({**TINY, "out": str(tmp_path / "b")}))
    assert {p.name for p in (tmp_path / "a").iterdir()} == {"config.toml", "metrics.json", "checkpoint.safetensors",
                                                                  "report.json", "report.md"}
    assert_same(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert m1["test_accuracy"] == m2["test_accuracy"]
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert 0.0 < saved["activity_sparsity"]["layer0"] < 1.0
    assert saved["steps"] == 6 and 0.0 <= saved["test_accuracy"] <= 1.0
    m3 = train.fit(build_config({**TINY, "seed": 1, "out": str(tmp_path / "c")}))
    assert m3["test_accuracy"] != m1["test_accuracy"] or not torch.equal(
        weights(tmp_path / "a")["model/core.input_weight"], weights(tmp_path / "c")["model/core.input_weight"])


class Boom(Exception):
    pass


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, Boom])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch, interrupt):
    """KeyboardInterrupt saves a checkpoint on the way out; a hard crash (Boom) falls back to the
    last periodic checkpoint. Either way the resumed run ends with the same weights."""
    train.fit(build_config({**TINY, "out": str(tmp_path / "full")}))

    real_lr = train._learning_rate

    def dying_lr(cfg, step, total, *args):
        if step == 5:
            raise interrupt()
        return real_lr(cfg, step, total, *args)

    monkeypatch.setattr(train, "_learning_rate", dying_lr)
    cfg = build_config({**TINY, "out": str(tmp_path / "cut")})
    with pytest.raises(interrupt):
        train.fit(cfg)
    meta = load_checkpoint(tmp_path / "cut" / "checkpoint.safetensors", train.build_classifier(cfg, 1 + 2 * cfg.levels, 10))
    assert meta["step"] == (5 if interrupt is KeyboardInterrupt else 4)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    monkeypatch.setattr(train, "_learning_rate", real_lr)
    with pytest.raises(FileExistsError, match="--resume"):
        train.fit(cfg)
    train.fit(cfg, resume=True)
    assert_same(weights(tmp_path / "full"), weights(tmp_path / "cut"))


def test_resume_refuses_a_different_config(tmp_path):
    train.fit(build_config({**TINY, "out": str(tmp_path / "r")}))
    with pytest.raises(ValueError, match="config differs"):
        train.fit(build_config({**TINY, "lr": 0.5, "out": str(tmp_path / "r")}), resume=True)


def test_resume_accepts_a_run_saved_before_a_setting_existed(tmp_path, monkeypatch):
    """A run started by an older ranvier has no entry for a newer setting; at its default it resumes."""
    cfg = build_config({**TINY, "out": str(tmp_path / "r")})
    train.fit(cfg)
    real_read_meta = train.read_meta

    def older_meta(path):
        meta = real_read_meta(path)
        del meta["config"]["adam_beta1"]
        return meta

    monkeypatch.setattr(train, "read_meta", older_meta)
    assert train.fit(cfg, resume=True)["steps"] == TINY["max_steps"]
    with pytest.raises(ValueError, match="config differs"):
        train.fit(build_config({**TINY, "adam_beta1": 0.0, "out": str(tmp_path / "r")}), resume=True)


def test_adam_beta1_reaches_the_optimiser(tmp_path, monkeypatch):
    seen = []

    class Recording(torch.optim.Adam):
        def __init__(self, params, **kw):
            seen.append(kw["betas"])
            super().__init__(params, **kw)

    monkeypatch.setattr(train.torch.optim, "Adam", Recording)
    train.fit(build_config({**TINY, "max_steps": 1, "adam_beta1": 0.0, "out": str(tmp_path / "r")}))
    assert seen == [(0.0, 0.999)]
    with pytest.raises(ValueError, match="adam_beta1"):
        build_config({**TINY, "adam_beta1": 1.0})


def test_corrupt_checkpoint_is_reported(tmp_path):
    train.fit(build_config({**TINY, "out": str(tmp_path / "r")}))
    path = tmp_path / "r" / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        train.fit(build_config({**TINY, "out": str(tmp_path / "r")}), resume=True)


@pytest.mark.parametrize("model", ["lif", "lsnn", "egru", "gru", "lstm"])
def test_every_model_trains(tmp_path, model):
    m = train.fit(build_config({**TINY, "model": model, "max_steps": 2, "out": str(tmp_path / model)}))
    assert m["steps"] == 2
    if model in ("gru", "lstm"):
        assert m["activity_sparsity"]["layer0"] < 0.05  # dense baselines: nearly every output nonzero


def test_cli_train_prints_accuracy_and_sparsity(tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli.main(["train", "--hidden-size", "16", "--max-steps", "3", "--no-progress", "--out", str(out),
                     "--threads", "1"])
    assert code == 0
    text = capsys.readouterr().out
    assert "alif on mnist1d: test accuracy" in text and "activity sparsity layer0" in text
    assert cli.main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0  # already finished: no-op resume
    assert cli.main(["show", str(out)]) == 0


def test_cli_reports_bad_settings(tmp_path, capsys):
    assert cli.main(["train", "--model", "transformer", "--out", str(tmp_path / "x")]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert cli.main(["train", "--task", "nope", "--out", str(tmp_path / "y")]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_plot_run_writes_a_png(tmp_path):
    from ranvier.plot import plot_run

    out = tmp_path / "p"
    train.fit(build_config({**TINY, "max_steps": 3, "eval_every": 2, "out": str(out)}))
    png = plot_run(out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_egru_on_sequential_mnist_runs(tmp_path, data_dir):
    m = train.fit(build_config({"task": "smnist", "model": "egru", "hidden_size": 8, "batch_size": 16, "epochs": 0,
                                "max_steps": 2, "progress": False, "threads": 1, "data_dir": data_dir,
                                "out": str(tmp_path / "egru")}))
    assert m["steps"] == 2 and 0.0 <= m["test_accuracy"] <= 1.0
    assert 0.0 < m["activity_sparsity"]["layer0"] <= 1.0
