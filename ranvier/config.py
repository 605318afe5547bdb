"""Typed training configuration, TOML presets, and the CLI options generated from them.

Precedence (later wins): dataclass defaults → the task's preset ``presets/<task>.toml`` (its
top-level keys, then its ``[<model>]`` table) → ``--preset FILE`` → command-line flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["TrainConfig", "load_preset", "build_config", "add_config_arguments", "to_toml", "PRESET_DIR"]

PRESET_DIR = Path(__file__).parent / "presets"
MODELS = ("lif", "alif", "lsnn", "egru", "gru", "lstm", "delay-snn")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Field docs become ``--help`` text."""

    # what to train
    task: str = field(default="mnist1d", metadata={"help": "mnist1d | smnist | smnist-threshold | fashion | fashion-threshold | mnist-latency | fashion-latency | ptb | wikitext2"})
    model: str = field(default="alif", metadata={"help": "lif | alif | lsnn (LIF+ALIF mix) | egru | gru | lstm | delay-snn"})
    # model shape and neuron constants
    hidden_size: int = field(default=128, metadata={"help": "recurrent units"})
    n_adaptive: int = field(default=-1, metadata={"help": "lsnn: adaptive units among hidden_size (-1: half)"})
    tau_mem: float = field(default=20.0, metadata={"help": "membrane time constant (steps)"})
    tau_mem_max: float = field(default=0.0, metadata={"help": "if > tau_mem: per-neuron τ_m log-uniform in [tau_mem, tau_mem_max]"})
    tau_adapt: float = field(default=200.0, metadata={"help": "threshold adaptation time constant (steps)"})
    tau_adapt_max: float = field(default=0.0, metadata={"help": "if > tau_adapt: per-neuron τ_a log-uniform in [tau_adapt, tau_adapt_max]"})
    beta: float = field(default=1.8, metadata={"help": "threshold adaptation strength"})
    threshold: float = field(default=0.01, metadata={"help": "base firing threshold"})
    n_refractory: int = field(default=0, metadata={"help": "refractory period (steps)"})
    gamma: float = field(default=0.3, metadata={"help": "pseudo-derivative peak (dampening factor)"})
    convention: str = field(default="lsnn", metadata={"help": "neuron convention: lsnn | eprop (SCIENCE.md §9.1)"})
    tau_out: float = field(default=20.0, metadata={"help": "readout filter time constant (0: none)"})
    readout_steps: int = field(default=1, metadata={"help": "predict from the mean logits of the last k steps (0: all)"})
    input_gain: float = field(default=1.0, metadata={"help": "scale of the input weights at init"})
    repeat: int = field(default=1, metadata={"help": "present each input step this many times"})
    levels: int = field(default=0, metadata={"help": "mnist1d: add onset/offset spike channels at this many levels"})
    reset: str = field(default="subtract", metadata={"help": "LIF/ALIF reset: subtract | zero (zero + --convention eprop exports to NIR exactly; docs/nir.md)"})  # issue 10
    # language models (--task ptb | wikitext2; --model egru | gru | lstm)
    num_layers: int = field(default=1, metadata={"help": "stacked recurrent layers"})
    embedding_size: int = field(default=0, metadata={"help": "tied embedding size (0: hidden_size)"})
    bptt: int = field(default=70, metadata={"help": "truncated-BPTT window (tokens)"})
    eval_batch_size: int = field(default=10, metadata={"help": "streams evaluated in parallel"})
    dropout: float = field(default=0.0, metadata={"help": "variational dropout on recurrent outputs (and between layers)"})
    dropout_input: float = field(default=0.0, metadata={"help": "variational dropout on the embedded input"})
    dropout_embedding: float = field(default=0.0, metadata={"help": "drop whole words from the embedding"})
    dropconnect: float = field(default=0.0, metadata={"help": "EGRU: DropConnect on the recurrent weights"})
    zoneout: float = field(default=0.0, metadata={"help": "EGRU: zoneout probability"})
    epsilon: float = field(default=1.0, metadata={"help": "EGRU: pseudo-derivative support ε (window |c − ϑ| < 1/ε)"})
    threshold_init: str = field(default="sigmoid", metadata={"help": "EGRU: threshold parameterisation, sigmoid | beta"})
    threshold_mean: float = field(default=0.0, metadata={"help": "EGRU: threshold init (logit mean for sigmoid, mean for beta)"})
    threshold_lr: float = field(default=1.0, metadata={"help": "EGRU: learning-rate multiplier of the thresholds"})
    # optimisation
    epochs: int = field(default=10, metadata={"help": "passes over the training set"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimiser steps (0: no limit)"})
    time_budget: float = field(default=0.0, metadata={"help": "stop after this many seconds of training (0: no limit); the lr schedule follows elapsed time"})
    batch_size: int = field(default=128, metadata={"help": "samples per step"})
    lr: float = field(default=1e-2, metadata={"help": "Adam learning rate"})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam's first-moment decay (0: no momentum, as in EvNN's language models)"})
    lr_decay: float = field(default=1.0, metadata={"help": "multiply lr by this every lr_decay_every steps"})
    lr_decay_every: int = field(default=0, metadata={"help": "steps between lr decays (0: cosine to 0 over the run)"})
    grad_clip: float = field(default=0.0, metadata={"help": "clip the gradient norm (0: off)"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay (never on thresholds)"})
    rate_reg: float = field(default=0.0, metadata={"help": "weight of the firing-rate regulariser"})
    target_rate: float = field(default=0.01, metadata={"help": "target spikes per unit per step"})
    seed: int = field(default=0, metadata={"help": "random seed; a fixed seed gives the same run"})
    # bookkeeping
    eval_every: int = field(default=0, metadata={"help": "evaluate every N steps (test set; validation set for language models; 0: at the end only)"})
    eval_samples: int = field(default=0, metadata={"help": "test samples used for intermediate evaluations (0: all)"})
    checkpoint_every: int = field(default=200, metadata={"help": "save a checkpoint every N steps (and every epoch)"})
    device: str = field(default="cpu", metadata={"help": "torch device, e.g. cpu or cuda"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch default)"})
    data_dir: str = field(default="", metadata={"help": "data root (default: $RANVIER_DATA or ~/.cache/ranvier/data)"})
    download: bool = field(default=False, metadata={"help": "download missing data files from the canonical sources"})
    out: str = field(default="", metadata={"help": "run directory (default: runs/<task>-<model>-seed<seed>)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    # learnable delays (issue 8; --model delay-snn)
    train_params: str = field(default="weights", metadata={"help": "delay-snn: what to train, delays | weights | both", "flag": "--train"})
    ternary: bool = field(default=False, metadata={"help": "delay-snn: frozen ternary weights {-w, 0, +w} (with --train delays)"})
    max_delay: float = field(default=10.0, metadata={"help": "delay-snn: largest synaptic delay D_max (steps)"})
    weight_lr: float = field(default=0.0, metadata={"help": "delay-snn: Adam learning rate of the weights (0: --lr); the weights are ~10x larger than the delays"})
    # learning rule (issue 9): BPTT or online e-prop (ranvier.learning.eprop, SCIENCE.md §7)
    learning: str = field(default="bptt", metadata={"help": "bptt | eprop (online e-prop; lif, alif and lsnn only)"})
    feedback: str = field(default="symmetric", metadata={"help": "e-prop learning signals: symmetric | random | adaptive"})
    feedback_decay: float = field(default=0.0, metadata={"help": "e-prop adaptive feedback: weight decay added to B's gradient"})
    filter_traces: bool = field(default=True, metadata={"help": "e-prop: low-pass the eligibility traces with the readout decay"})
    # parameter sparsity (issue 7): DEEP R rewiring or magnitude pruning of the recurrent layers' weights
    rewiring: float = field(default=0.0, metadata={"help": "DEEP R: fraction of connections kept active (0: dense; LSNN: 0.12)"})
    rewiring_l1: float = field(default=1e-2, metadata={"help": "DEEP R: L1 prior on active parameters (LSNN-official 1e-2)"})
    rewiring_temperature: float = field(default=0.0, metadata={"help": "DEEP R: temperature of the parameter noise (LSNN-official 0)"})
    rewiring_budget: str = field(default="global", metadata={"help": "DEEP R: keep K per weight matrix (per_matrix) or in total (global)"})
    rewiring_mode: str = field(default="hard", metadata={"help": "hard (DEEP R: exactly K active) | soft (soft DEEP R: --rewiring is the initial fraction, dormant weights diffuse back)"})
    rewiring_theta_min: float = field(default=0.0, metadata={"help": "soft DEEP R: lower bound of dormant parameters (0: -3 x --rewiring-l1)"})
    dale: float = field(default=0.0, metadata={"help": "DEEP R: Dale's law on the recurrent weights, fraction of excitatory units (0: off, signs of the initial weights)"})
    prune: float = field(default=0.0, metadata={"help": "magnitude pruning: final fraction of weights removed (0: off)"})
    prune_start: int = field(default=0, metadata={"help": "pruning: first pruning after this many steps (0: before training)"})
    prune_end: int = field(default=0, metadata={"help": "pruning: final sparsity reached at this step, cubic schedule (<= prune_start: one-shot)"})
    prune_every: int = field(default=100, metadata={"help": "pruning: steps between pruning events"})
    prune_scope: str = field(default="layer", metadata={"help": "pruning: layer (same fraction per weight) | global (one threshold)"})

    def __post_init__(self) -> None:
        from .tasks.registry import LANGUAGE_TASKS, TASKS

        if self.task not in TASKS and self.task not in LANGUAGE_TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join([*TASKS, *LANGUAGE_TASKS])}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.task in LANGUAGE_TASKS and self.model not in ("egru", "gru", "lstm"):
            raise ValueError(f"task {self.task} needs --model egru, gru or lstm")
        for name in ("hidden_size", "batch_size", "repeat", "num_layers", "bptt", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.train_params not in ("delays", "weights", "both"):  # issue 8
            raise ValueError(f"train must be delays, weights or both, got {self.train_params!r}")
        if not 0.0 <= self.adam_beta1 < 1.0:
            raise ValueError(f"adam_beta1 must be in [0, 1), got {self.adam_beta1}")
        if self.epochs <= 0 and self.max_steps <= 0 and self.time_budget <= 0:
            raise ValueError("set epochs > 0, max_steps > 0 or time_budget > 0")

    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / f"{self.task}-{self.model}-seed{self.seed}"


def _known(overrides: dict[str, Any], source: str) -> dict[str, Any]:
    names = {f.name for f in fields(TrainConfig)}
    unknown = [k for k, v in overrides.items() if k not in names and not isinstance(v, dict)]
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {', '.join(sorted(unknown))}")
    return {k: v for k, v in overrides.items() if not isinstance(v, dict)}


def load_preset(path: str | Path) -> dict[str, Any]:
    """Read a TOML preset (a file path, or the name of a file in ``ranvier/presets``)."""
    p = Path(path)
    if not p.exists() and (PRESET_DIR / f"{path}.toml").exists():
        p = PRESET_DIR / f"{path}.toml"
    if not p.exists():
        available = ", ".join(sorted(q.stem for q in PRESET_DIR.glob("*.toml")))
        raise FileNotFoundError(f"preset {path!r} not found (built-in presets: {available})")
    with open(p, "rb") as fh:
        return tomllib.load(fh)


def _with_model_table(preset: dict[str, Any], model: str, source: str) -> dict[str, Any]:
    merged = _known(preset, source)
    table = preset.get(model, {})
    merged.update(_known(table, f"{source} [{model}]"))
    return merged


def build_config(cli: dict[str, Any] | None = None, preset: str | Path | None = None) -> TrainConfig:
    """Merge defaults, the task preset, an optional preset file and explicit settings."""
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    user = load_preset(preset) if preset else {}
    task = cli.get("task", user.get("task", TrainConfig.task))
    task_preset = load_preset(task) if (PRESET_DIR / f"{task}.toml").exists() else {}
    model = cli.get("model", user.get("model", task_preset.get("model", TrainConfig.model)))
    values: dict[str, Any] = {}
    if task_preset:
        values.update(_with_model_table(task_preset, model, f"preset {task}"))
    if user:
        values.update(_with_model_table(user, model, f"preset {preset}"))
    values.update(_known(cli, "command line"))
    values["task"], values["model"] = task, model
    return TrainConfig(**values)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per TrainConfig field; unset flags stay None so presets can fill them."""
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        flags = [flag, f.metadata["flag"]] if "flag" in f.metadata else [flag]  # e.g. --train for train_params
        help_text = f"{f.metadata.get('help', '')} (default {f.default!r})"
        if f.type in ("bool", bool):
            parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            parser.add_argument(*flags, dest=f.name, type=kind, default=None, help=help_text)


def to_toml(cfg: TrainConfig) -> str:
    """Serialise a config as TOML (flat keys), readable back with ``--preset``."""
    lines = []
    for key, value in dataclasses.asdict(cfg).items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            lines.append(f"{key} = {value!r}")
        else:
            lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"
