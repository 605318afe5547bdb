"""LIF, ALIF, GRU and LSTM on MNIST-1D at about equal parameter counts and the same budget.

Every model gets the same input (the analog value plus onset/offset spikes at 24 levels), the same
number of epochs and batch size, and the preset's settings (``ranvier/presets/mnist1d.toml``).
GRU and LSTM hidden sizes are chosen so their parameter counts match the spiking models'.

    python benchmarks/mnist1d.py [--epochs 40] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile

from common import target, write_results

from ranvier.config import build_config
from ranvier.models import build_classifier
from ranvier.train import fit

MODELS = ("lif", "alif", "gru", "lstm")


def parameters(cfg, n_inputs: int) -> int:
    return sum(p.numel() for p in build_classifier(cfg, n_inputs, 10).parameters())


def matched_hidden_size(model: str, budget: int, n_inputs: int) -> int:
    """The hidden size whose parameter count is closest to ``budget``."""
    return min(range(8, 512), key=lambda h: abs(parameters(build_config({"model": model, "hidden_size": h}), n_inputs) - budget))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=0, help="0: the preset's")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    reference = build_config({"model": "alif"})
    n_inputs = 1 + 2 * reference.levels
    budget = parameters(reference, n_inputs)
    rows = []
    for model in MODELS:
        hidden = reference.hidden_size if model in ("lif", "alif") else matched_hidden_size(model, budget, n_inputs)
        for seed in args.seeds:
            out = tempfile.mkdtemp(prefix=f"ranvier-{model}-")
            settings = {"model": model, "hidden_size": hidden, "seed": seed, "out": out, "threads": args.threads,
                        "progress": False}
            if args.epochs:
                settings["epochs"] = args.epochs
            cfg = build_config(settings)
            m = fit(cfg)
            shutil.rmtree(out, ignore_errors=True)
            rows.append({"model": model, "seed": seed, "hidden_size": hidden, "parameters": m["parameters"],
                         "epochs": cfg.epochs, "test_accuracy": m["test_accuracy"],
                         "activity_sparsity": m["activity_sparsity"]["layer0"], "train_seconds": m["train_seconds"]})
            print(f"{model:5s} seed {seed}: H={hidden} params={m['parameters']} acc={m['test_accuracy']:.4f} "
                  f"sparsity={m['activity_sparsity']['layer0']:.3f} time={m['train_seconds']:.0f}s", flush=True)
    acc = {model: statistics.mean(r["test_accuracy"] for r in rows if r["model"] == model) for model in MODELS}
    write_results("mnist1d", rows, [
        target("ALIF minus LIF mean test accuracy", acc["alif"] - acc["lif"], ">", 0.0),
        target("ALIF mean test accuracy (the `ranvier train` default)", acc["alif"], ">=", 0.75),
    ])


if __name__ == "__main__":
    main()
