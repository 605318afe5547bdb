"""Online e-prop against BPTT on MNIST-1D and sequential MNIST, same network, same updates.

Each pair of runs uses one preset (``ranvier/presets/mnist1d.toml`` with ALIF;
``ranvier/presets/smnist-lsnn.toml`` with the LSNN and threshold-crossing input) and differs only
in ``--learning``: the same initial weights, batches, optimiser and number of updates. e-prop uses
symmetric feedback (``B = W_outᵀ``) unless ``--feedback`` says otherwise. MNIST-1D runs through
``ranvier.train.fit`` (cosine learning rate, full test set); sequential MNIST runs the same job
for a few updates at the preset's constant learning rate and is scored on the first
``--smnist-test`` test images, because one pass over the 10 000 test sequences of 840 steps
would take longer than the training. The two tasks run in two processes side by side. The
budgets are short (minutes on a shared 2-core CPU): these are accuracies of short runs, not of
converged ones.

    RANVIER_DATA=../shared/data python benchmarks/eprop.py [--mnist1d-epochs 2] [--smnist-steps 10]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import torch
from common import target, write_results

from ranvier.config import build_config
from ranvier.train import fit, make_job


def mnist1d(learning: str, feedback: str, epochs: int, threads: int, seed: int) -> dict:
    out = tempfile.mkdtemp(prefix="ranvier-eprop-")
    try:
        m = fit(build_config({"task": "mnist1d", "model": "alif", "epochs": epochs, "learning": learning,
                              "feedback": feedback, "threads": threads, "seed": seed, "out": out, "progress": False}))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"task": "mnist1d", "model": "alif", "steps": m["steps"], "batch_size": 128,
            "test_accuracy": m["test_accuracy"], "activity_sparsity": m["activity_sparsity"]["layer0"], "train_seconds": m["train_seconds"]}


def smnist(learning: str, feedback: str, steps: int, batch: int, test: int, threads: int, seed: int) -> dict:
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as fit() does: decaying traces pass through subnormal floats
    cfg = build_config({"task": "smnist-threshold", "learning": learning, "feedback": feedback, "batch_size": batch,
                        "max_steps": steps, "seed": seed, "progress": False}, preset="smnist-lsnn")
    torch.manual_seed(cfg.seed)
    job = make_job(cfg)
    optimizer = torch.optim.Adam(job.parameter_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = time.perf_counter()
    for step in range(steps):
        loss, _ = job.loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    result = job.evaluate(limit=test)
    return {"task": "smnist-lsnn", "model": "lsnn", "steps": steps, "batch_size": batch,
            "test_accuracy": result["accuracy"], "test_samples": result["samples"],
            "activity_sparsity": result["activity_sparsity"], "train_seconds": seconds}


def run_task(task: str, args: argparse.Namespace) -> list[dict]:
    rows = []
    for learning, feedback in [("bptt", "symmetric")] + [("eprop", fb) for fb in args.feedback]:
        if task == "mnist1d":
            row = mnist1d(learning, feedback, args.mnist1d_epochs, args.threads, args.seed)
        else:
            row = smnist(learning, feedback, args.smnist_steps, args.smnist_batch, args.smnist_test, args.threads, args.seed)
        row = {**row, "learning": learning, "feedback": feedback if learning == "eprop" else ""}
        print(f"{task:12s} {learning:5s} {row['feedback']:9s}: accuracy {row['test_accuracy']:.4f} after "
              f"{row['steps']} updates, {row['train_seconds']:.0f} s", flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist1d-epochs", type=int, default=2)
    parser.add_argument("--smnist-steps", type=int, default=10, help="updates on sequential MNIST (0: skip it)")
    parser.add_argument("--smnist-batch", type=int, default=32)
    parser.add_argument("--smnist-test", type=int, default=2000, help="test images scored on sequential MNIST")
    parser.add_argument("--feedback", nargs="+", default=["symmetric"], help="e-prop feedback modes to run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tasks = ["mnist1d"] + (["smnist-lsnn"] if args.smnist_steps > 0 else [])
    with ProcessPoolExecutor(len(tasks)) as pool:
        rows = [row for rows in pool.map(run_task, tasks, [args] * len(tasks)) for row in rows]
    targets = []
    for task in tasks:
        bptt = next(r for r in rows if r["task"] == task and r["learning"] == "bptt")
        for r in rows:
            if r["task"] == task and r["learning"] == "eprop":
                targets.append(target(f"{task}: BPTT minus e-prop ({r['feedback']}) test accuracy after the same updates",
                                      bptt["test_accuracy"] - r["test_accuracy"], "<=", 0.10))
    write_results("eprop", rows, targets)


if __name__ == "__main__":
    main()
