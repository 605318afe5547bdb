"""Language-model training on real PTB: runs, reports sparsities, resumes exactly."""
import math

import pytest
import torch
from safetensors.torch import load_file

from tiny_configs import tiny_lm as tiny
from ranvier import train
from ranvier.config import build_config
from ranvier.models.language import LanguageModel
from ranvier.train_lm import effective_macs_per_token


@pytest.mark.parametrize("model", ["egru", "gru", "lstm"])
def test_language_models_train_and_report(data_dir, tmp_path, model):
    m = train.fit(tiny(data_dir, tmp_path, model))
    assert math.isfinite(m["test_perplexity"]) and m["test_perplexity"] < 10_000 * 1.5
    assert m["effective_macs_per_token"] <= m["dense_macs_per_token"]
    if model == "egru":
        assert 0.0 <= m["activity_sparsity"]["overall"] <= 1.0
        assert set(m["backward_sparsity"]) == {"layer0", "layer1", "overall"}
        assert m["effective_macs_per_token"] < m["dense_macs_per_token"]
    else:
        assert m["effective_macs_per_token"] == m["dense_macs_per_token"]


def test_egru_thresholds_get_their_own_learning_rate_and_no_weight_decay(data_dir, tmp_path):
    from ranvier.train_lm import LanguageModelJob

    job = LanguageModelJob(tiny(data_dir, tmp_path, "egru", threshold_lr=0.1, weight_decay=1e-4))
    groups = job.parameter_groups()
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lr"] == pytest.approx(0.0003)
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in job.model.rnn.threshold_parameters()}


@pytest.mark.parametrize("model", ["egru", "lstm"])
def test_lm_resume_is_exact_including_carried_state(data_dir, tmp_path, monkeypatch, model):
    train.fit(tiny(data_dir, tmp_path / "full", model))
    real = train._learning_rate

    def dying(cfg, step, total, *args):
        if step == 5:
            raise KeyboardInterrupt
        return real(cfg, step, total, *args)

    monkeypatch.setattr(train, "_learning_rate", dying)
    cfg = tiny(data_dir, tmp_path / "cut", model)
    with pytest.raises(KeyboardInterrupt):
        train.fit(cfg)
    assert any(k.startswith("extra/state/") for k in load_file(str(tmp_path / "cut" / model / "checkpoint.safetensors")))
    monkeypatch.setattr(train, "_learning_rate", real)
    train.fit(cfg, resume=True)
    a = load_file(str(tmp_path / "full" / model / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "cut" / model / "checkpoint.safetensors"))
    for k in a:
        if k.startswith("model/"):
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_effective_macs_by_hand():
    lm = LanguageModel("gru", vocab_size=100, embedding_size=8, hidden_size=10, num_layers=2)
    # layer 0: 3·10·(8·1 + 10·0.5) = 390; layer 1: 3·10·(10·0.5 + 10·0.25) = 225;
    # projection 8·10·0.25 = 20; decoder 100·8 = 800  → 1435. Dense: 3·10·18 + 3·10·20 + 80 + 800 = 2020.
    macs = effective_macs_per_token(lm, [0.5, 0.25])
    assert macs == {"dense_macs_per_token": 2020.0, "effective_macs_per_token": 1435.0}


def test_classification_models_are_rejected_for_language_tasks():
    with pytest.raises(ValueError, match="needs --model egru, gru or lstm"):
        build_config({"task": "ptb", "model": "alif"})


def test_gpu_preset_runs_a_few_steps_on_cuda(data_dir, tmp_path):
    cfg = build_config({"out": str(tmp_path / "gpu"), "data_dir": data_dir, "progress": False}, "ptb-egru-gpu")
    assert (cfg.device, cfg.hidden_size, cfg.num_layers, cfg.model) == ("cuda", 1350, 3, "egru")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the GPU preset is only checked to build")
    m = train.fit(build_config({"out": str(tmp_path / "gpu2"), "data_dir": data_dir, "progress": False,
                                "epochs": 0, "max_steps": 3}, "ptb-egru-gpu"))
    assert m["steps"] == 3 and math.isfinite(m["test_perplexity"])


def test_task_preset_picks_the_model():
    assert build_config({"task": "ptb"}).model == "egru"
    assert build_config({"task": "ptb", "model": "gru"}).dropconnect == 0.0


def test_cli_prints_perplexity_for_language_models(data_dir, tmp_path, capsys):
    from ranvier import cli

    code = cli.main(["train", "--task", "ptb", "--model", "gru", "--hidden-size", "16", "--embedding-size", "16",
                     "--max-steps", "2", "--epochs", "0", "--batch-size", "4", "--bptt", "8", "--no-progress",
                     "--data-dir", data_dir, "--out", str(tmp_path / "cli"), "--threads", "1"])
    assert code == 0
    assert "gru on ptb: test perplexity" in capsys.readouterr().out
