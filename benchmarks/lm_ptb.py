"""EGRU vs GRU vs LSTM language models at CPU scale, with the same wall-clock budget each.

Same size for all three (preset ``ranvier/presets/<task>.toml``: 2 layers of 512 units, tied
512-d embedding). Reports validation and test perplexity, activity and backward sparsity,
effective MACs per token, training and evaluation throughput (tokens/s) and wall time.
Target (EGRU issue): EGRU test perplexity <= 1.10 x GRU's at activity sparsity >= 80 % and
backward sparsity >= 40 %.

    RANVIER_DATA=../shared/data python benchmarks/lm_ptb.py [--task ptb|wikitext2] [--minutes 5]

Parameter sparsity (issue 7): ``--prune 0.8 --steps N`` trains dense EGRU, EGRU whose recurrent
weights are magnitude-pruned to 80 % on Zhu & Gupta's cubic schedule (from step N/10 to N/2,
per layer), and dense GRU, each for the same N optimiser steps (equal work, not equal wall
time, which a shared machine makes unfair), and writes ``lm_<task>_prune.json``. Target: the
pruned EGRU needs >= 5x fewer effective MACs per token than the dense GRU at <= 1.15x its test
perplexity.

    RANVIER_DATA=../shared/data python benchmarks/lm_ptb.py --prune 0.8 --steps 600

A long pruning run leaves out the dense EGRU (``--models gru``: two processes, one per core), prints
validation points every K steps (``--curve K``, also drawn in ``<name>.png``) and writes under its
own name:

    RANVIER_DATA=../shared/data python benchmarks/lm_ptb.py --prune 0.5 --steps 9000 --curve 1000 \
        --models gru --name lm_ptb_prune_long

Learning curves (``--curve K --steps N``): EGRU and GRU side by side for the same N optimiser steps,
with the validation perplexity every K steps on the first ``--curve-tokens`` tokens of the
validation stream; writes ``lm_<task>_curve.json`` and ``lm_<task>_curve.png``. It shows how the
EGRU/GRU perplexity ratio moves with training, which one wall-clock budget cannot.

    RANVIER_DATA=../shared/data python benchmarks/lm_ptb.py --curve 500 --steps 6000
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import shutil
import tempfile
import time

import torch
from common import RESULTS, target, write_results

from ranvier.config import build_config
from ranvier.train import fit
from ranvier.train_lm import LanguageModelJob

MODELS = ("egru", "gru", "lstm")


def eval_tokens_per_second(cfg, run_dir: str, tokens: int = 20_000) -> float:
    """Inference throughput over the first ``tokens`` of the validation stream (median of 3)."""
    from ranvier.checkpoint import load_checkpoint

    job = LanguageModelJob(cfg)
    load_checkpoint(f"{run_dir}/checkpoint.safetensors", job.model, restore_rng=False)
    steps = max(1, tokens // cfg.eval_batch_size)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        job._perplexity(job.valid_data, limit=steps)
        times.append(time.perf_counter() - start)
    return steps * cfg.eval_batch_size / sorted(times)[1]


def recurrent_weight_sparsity(cfg, run_dir: str) -> float:
    """Fraction of masked entries of the recurrent layers' weights (0 for a dense or torch RNN)."""
    from ranvier.checkpoint import load_checkpoint
    from ranvier.sparse import maskable_weights, weight_sparsity

    job = LanguageModelJob(cfg)
    load_checkpoint(f"{run_dir}/checkpoint.safetensors", job.model, restore_rng=False)
    weights = maskable_weights(job.model)
    return weight_sparsity(weights) if weights else 0.0


def train_one(job: tuple) -> dict:
    """Train one model; ``job`` = (task, model, settings, data_dir, measure eval throughput, threads).

    A ``curve_tokens`` entry in ``settings`` sets the intermediate evaluations' length in tokens,
    and the row then carries the run's ``history``.
    """
    task, model, settings, data_dir, throughput, threads = job
    settings = dict(settings)
    curve_tokens = settings.pop("curve_tokens", 0)
    out = tempfile.mkdtemp(prefix=f"ranvier-lm-{model}-")
    # a progress bar for the one-at-a-time runs (threads 0); side-by-side runs would interleave theirs
    cfg = build_config({"task": task, "model": model, "out": out, "data_dir": data_dir, "progress": threads == 0,
                        "threads": threads, **settings})
    if curve_tokens:  # eval_samples counts steps of the validation stream, eval_batch_size tokens each
        cfg = dataclasses.replace(cfg, eval_samples=max(1, curve_tokens // cfg.eval_batch_size))
    torch.manual_seed(0)
    m = fit(cfg)
    tokens = m["steps"] * cfg.batch_size * cfg.bptt
    row = {"task": task, "model": model + (f" pruned {cfg.prune:g}" if cfg.prune > 0 else ""),
           "hidden": f"{cfg.num_layers}x{cfg.hidden_size}",
           "parameters": m["parameters"], "steps": m["steps"], "train_seconds": m["train_seconds"],
           "valid_ppl": m["valid_perplexity"], "test_ppl": m["test_perplexity"],
           "activity_sparsity": m["activity_sparsity"]["overall"],
           "backward_sparsity": m["backward_sparsity"].get("overall", 0.0) if m["backward_sparsity"] else 0.0,
           "effective_macs_per_token": m["effective_macs_per_token"],
           "dense_macs_per_token": m["dense_macs_per_token"],
           "train_tokens_per_s": tokens / m["train_seconds"]}
    if throughput:
        row["eval_tokens_per_s"] = eval_tokens_per_second(cfg, out)
    else:  # issue 7's comparison is at equal steps: its runs share the machine, so no speeds are reported
        del row["train_tokens_per_s"]
        # only pruning or rewiring masks weights; a dense run's is 0 without reloading its checkpoint
        sparse = cfg.prune > 0 or cfg.rewiring > 0
        row["recurrent_weight_sparsity"] = recurrent_weight_sparsity(cfg, out) if sparse else 0.0
        row["connection_sparsity"] = m["connection_sparsity"]
    if curve_tokens:
        row["history"] = m["history"]
    shutil.rmtree(out, ignore_errors=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="ptb", choices=["ptb", "wikitext2"])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per model")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--steps", type=int, default=0, help="train every model for this many steps instead of --minutes")
    parser.add_argument("--prune", type=float, default=0.0,
                        help="compare dense EGRU, EGRU pruned to this weight sparsity, and dense GRU (issue 7)")
    parser.add_argument("--curve", type=int, default=0, metavar="K",
                        help="learning curves: EGRU and GRU side by side for --steps steps, validated every K steps")
    parser.add_argument("--curve-tokens", type=int, default=20_000,
                        help="validation tokens per point of the learning curve")
    parser.add_argument("--name", default="", help="results file name (default lm_<task>_prune with --prune)")
    parser.add_argument("--replot", action="store_true",
                        help="redraw the curves' PNG from its results file (--name, default lm_<task>_curve)")
    args = parser.parse_args()
    if args.replot:
        results = RESULTS / f"{args.name or f'lm_{args.task}_curve'}.json"
        data = json.loads(results.read_text())
        plot_curves(data["rows"], results.with_suffix(".png"), args.task, ppl_target(data["targets"]))
        return
    if args.curve > 0 and args.prune <= 0:
        if args.steps <= 0:
            parser.error("--curve needs --steps (the curves compare equal numbers of steps)")
        learning_curves(args)
        return
    variants = [(model, {}) for model in args.models]
    if args.prune > 0:
        if args.steps <= 0:
            parser.error("--prune needs --steps (the pruning schedule is in steps)")
        schedule = {"prune": args.prune, "prune_start": args.steps // 10, "prune_end": args.steps // 2,
                    "prune_every": max(1, args.steps // 30), "prune_scope": "layer"}
        # the pruned EGRU always runs; --models can leave out the dense EGRU (a long run's third process)
        variants = [("egru", {})] * ("egru" in args.models) + [("egru", schedule)] + [("gru", {})]
        if args.curve > 0:  # validation points along the way (printed as they come, kept in the results)
            variants = [(model, {**extra, "eval_every": args.curve, "curve_tokens": args.curve_tokens})
                        for model, extra in variants]
    # --minutes: the whole budget for every model (no epoch cap; the learning rate's cosine runs over
    # the budget). The preset's single epoch would otherwise end a fast model's run early.
    budget = {"max_steps": args.steps, "epochs": 0} if args.steps > 0 else {"time_budget": args.minutes * 60, "epochs": 0}
    jobs = [(args.task, model, {**budget, **extra}, args.data_dir, args.prune <= 0) for model, extra in variants]
    if args.prune > 0:
        # equal steps, so the three can share the machine: side by side, one thread each
        with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
            rows = pool.map(train_one, [(*job, 1) for job in jobs])
    else:
        rows = [train_one((*job, 0)) for job in jobs]
    curve = curve_points(rows)  # empty without --curve
    print_rows(rows)
    by = {r["model"]: r for r in rows}
    if args.prune > 0:
        pruned, gru = by[f"egru pruned {args.prune:g}"], by["gru"]
        for row in rows:  # how the two savings multiply, against the dense GRU and the dense EGRU
            row["macs_saving_vs_gru"] = gru["effective_macs_per_token"] / row["effective_macs_per_token"]
            if "egru" in by:
                row["macs_saving_vs_dense_egru"] = by["egru"]["effective_macs_per_token"] / row["effective_macs_per_token"]
        targets = [
            target("dense GRU effective MACs / pruned EGRU effective MACs", pruned["macs_saving_vs_gru"], ">=", 5.0),
            target("pruned EGRU test ppl / dense GRU test ppl", pruned["test_ppl"] / gru["test_ppl"], "<=", 1.15),
        ]
        path = write_results(args.name or f"lm_{args.task}_prune", rows + curve, targets)
        if curve:
            plot_curves(rows + curve, path.with_suffix(".png"), args.task, ppl_target(targets))
        return
    targets = []
    if "egru" in by and "gru" in by:
        targets = [
            target("EGRU test ppl / GRU test ppl", by["egru"]["test_ppl"] / by["gru"]["test_ppl"], "<=", 1.10),
            target("EGRU activity sparsity", by["egru"]["activity_sparsity"], ">=", 0.80),
            target("EGRU backward sparsity", by["egru"]["backward_sparsity"], ">=", 0.40),
        ]
    write_results(f"lm_{args.task}", rows, targets)


def learning_curves(args: argparse.Namespace) -> None:
    """EGRU and GRU for ``args.steps`` steps each, side by side on one thread each (equal work)."""
    settings = {"max_steps": args.steps, "epochs": 0, "eval_every": args.curve, "curve_tokens": args.curve_tokens}
    jobs = [(args.task, model, settings, args.data_dir, False, 1) for model in ("egru", "gru")]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        finals = pool.map(train_one, jobs)
    rows = curve_points(finals)
    rows += [{"model": final["model"], "step": final["steps"], "train_seconds": final["train_seconds"],
              "valid_ppl": final["valid_ppl"], "test_ppl": final["test_ppl"],
              "activity_sparsity": final["activity_sparsity"], "backward_sparsity": final["backward_sparsity"]}
             for final in finals]
    print_rows(rows)
    egru, gru = (next(r for r in rows if r["model"] == m and "test_ppl" in r) for m in ("egru", "gru"))
    targets = [target(f"EGRU test ppl / GRU test ppl after {args.steps} steps each",
                      egru["test_ppl"] / gru["test_ppl"], "<=", 1.10),
               target("EGRU activity sparsity", egru["activity_sparsity"], ">=", 0.80)]
    path = write_results(f"lm_{args.task}_curve", rows, targets)
    plot_curves(rows, path.with_suffix(".png"), args.task, ppl_target(targets))


def curve_points(rows: list[dict]) -> list[dict]:
    """Take the ``history`` out of each row and return its intermediate validation points as flat rows
    (the history's last point is the full validation set, which the row itself already reports)."""
    return [{"model": row["model"], "step": point["step"], "train_seconds": point["time"],
             "valid_ppl_partial": point["valid_ppl"], "activity_sparsity": point.get("valid_activity_sparsity", 0.0)}
            for row in rows for point in row.pop("history", []) if "valid_ppl" in point and point["step"] < row["steps"]]


def print_rows(rows: list[dict]) -> None:
    for row in rows:
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)


def ppl_target(targets: list[dict]) -> float:
    """The perplexity-ratio target among a results file's targets (drawn as a line in the plot)."""
    return next(t["target"] for t in targets if "test ppl" in t["name"])


def plot_curves(rows: list[dict], path, task: str, target_ratio: float) -> None:
    """Validation perplexity (first tokens of the set) of the EGRU (dense or pruned) and the GRU and their
    ratio against the step; the ratio's last point is the test-set ratio at the end of the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    final = {r["model"]: r for r in rows if "test_ppl" in r}
    # the pruned EGRU where there is one (a pruning run's subject), else the dense one
    egru = next((m for m in final if m.startswith("egru pruned")), "egru")
    points = {m: [(r["step"], r["valid_ppl_partial"]) for r in rows if r["model"] == m and "valid_ppl_partial" in r]
              for m in (egru, "gru")}
    last_step = final[egru].get("step", final[egru].get("steps"))  # curve rows say step, pruning rows steps
    name = {m: " ".join([m.split()[0].upper(), *m.split()[1:]]) for m in points}  # "EGRU pruned 0.5"
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    for model, pts in points.items():
        top.plot(*zip(*pts), marker="o", label=name[model])
    top.set_yscale("log")
    top.set_ylabel("validation perplexity (partial set)")
    top.legend()
    top.set_title(f"{task}: {last_step} steps each, one thread each")
    ratio = [(s, e / g) for (s, e), (_, g) in zip(points[egru], points["gru"])]
    bottom.plot(*zip(*ratio), marker="o", color="k", label="validation (partial set)")
    bottom.plot([last_step], [final[egru]["test_ppl"] / final["gru"]["test_ppl"]], marker="*",
                markersize=12, ls="", color="tab:blue", label="test set, end of run")
    bottom.axhline(target_ratio, ls="--", color="tab:red", label=f"target {target_ratio:g}")
    bottom.set_ylabel(f"{name[egru]} / GRU perplexity")
    bottom.set_xlabel("optimiser step")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
