"""Online e-prop against BPTT on MNIST-1D and sequential MNIST, same network, same updates.

Each pair of runs uses one preset (``ranvier/presets/mnist1d.toml`` with ALIF;
``ranvier/presets/smnist-lsnn.toml`` with the LSNN, threshold-crossing input) and differs only in
``--learning``: the same batches, optimiser and number of updates. e-prop uses symmetric feedback
(``B = W_outᵀ``) unless ``--feedback`` says otherwise. The budgets are short (minutes on a shared
2-core CPU), so the accuracies are those of short runs, not converged ones.

    RANVIER_DATA=../shared/data python benchmarks/eprop.py [--mnist1d-epochs 10] [--smnist-steps 40]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile

from common import target, write_results

from ranvier.config import build_config
from ranvier.train import fit


def train(settings: dict, preset: str | None) -> dict:
    out = tempfile.mkdtemp(prefix="ranvier-eprop-")
    try:
        metrics = fit(build_config({**settings, "out": out, "progress": False}, preset=preset))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist1d-epochs", type=int, default=10)
    parser.add_argument("--smnist-steps", type=int, default=40, help="updates on sequential MNIST (0: skip it)")
    parser.add_argument("--smnist-batch", type=int, default=32)
    parser.add_argument("--feedback", nargs="+", default=["symmetric"], help="e-prop feedback modes to run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runs = [("mnist1d", {"task": "mnist1d", "model": "alif", "epochs": args.mnist1d_epochs})]
    if args.smnist_steps > 0:
        runs.append(("smnist-lsnn", {"task": "smnist-threshold", "model": "lsnn", "preset": "smnist-lsnn",
                                     "max_steps": args.smnist_steps, "batch_size": args.smnist_batch, "eval_every": 0}))
    rows = []
    for name, settings in runs:
        preset = settings.pop("preset", None)
        variants = [("bptt", "symmetric")] + [("eprop", fb) for fb in args.feedback]
        for learning, feedback in variants:
            full = {**settings, "learning": learning, "feedback": feedback, "threads": args.threads, "seed": args.seed}
            m = train(full, preset)
            row = {"task": name, "learning": learning, "feedback": feedback if learning == "eprop" else "",
                   "model": m["model"], "steps": m["steps"], "batch_size": build_config(full, preset=preset).batch_size,
                   "test_accuracy": m["test_accuracy"], "activity_sparsity": m["activity_sparsity"]["layer0"],
                   "train_seconds": m["train_seconds"]}
            rows.append(row)
            print(f"{name:12s} {learning:5s} {row['feedback']:9s}: accuracy {row['test_accuracy']:.4f} after "
                  f"{row['steps']} updates, {row['train_seconds']:.0f} s", flush=True)
    targets = []
    for name, _ in runs:
        bptt = next(r for r in rows if r["task"] == name and r["learning"] == "bptt")
        for r in rows:
            if r["task"] == name and r["learning"] == "eprop":
                targets.append(target(f"{name}: BPTT minus e-prop ({r['feedback']}) test accuracy, same updates",
                                      bptt["test_accuracy"] - r["test_accuracy"], "<=", 0.10))
    write_results("eprop", rows, targets)


if __name__ == "__main__":
    main()
