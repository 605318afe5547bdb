"""Event-driven engine vs dense torch: batch-1 per-step latency of an EGRU layer, and a trained PTB EGRU.

Sweep: hidden size H ∈ {256, 512, 1024} × activity density ∈ {5, 10, 20, 50, 100} % × weight
density ∈ {100, 20, 10} %. The layer is one EGRU(H → H) (float32, biases) inside a stack: its
input is the event output of a layer below at the same activity (synthetic sparse vectors), and
its own event rate is set by per-unit thresholds calibrated on the torch model (the update gate
is biased to keep its state, so each unit integrates and fires like a neuron; the threshold
sets how often). The density reported is the one MEASURED while timing: the fraction of weight
columns the engine reads, (input events + recurrent events) / 2H, averaged over the timed steps.

Per step, the same model, the same inputs, batch 1:
  engine      ranvier.engine.Session.step (numba), Session(threads=1) and Session(threads=2)
              (the input and recurrent products side by side when both are large)
  dense       ranvier's own EGRU step in torch (F.linear + egru_step, masked weights), torch.no_grad,
              1 thread and 2 threads
  nn.GRU      torch.nn.GRU(H, H) stepped one token at a time (1 and 2 threads), for reference
Every step is timed on its own and the median over all timed steps is reported (a preemption
by another process hits a few steps, not the median); blocks of steps of the methods are
interleaved so that slow phases of a shared machine hit all methods alike. A block is 200
consecutive steps (``--block``), a short stream: the engine reads a different few rows of the
weights at every step, so it needs a stream of steps to have them in the cache after the other
methods' blocks pushed them out; the dense step reads all the weights at every step and does
not care (``--block 40`` repeats the earlier, shorter blocks).

Speedups compare equal thread counts: engine 1 thread vs dense 1 thread, engine 2 threads vs
dense 2 threads. Targets (issue 6): for H ≥ 512 and activity ≤ 20 %, speedup over the dense step
≥ 0.8/density (worst case over those rows and both thread counts, as the ratio speedup·density);
with 10 % weight density as well, speedup ≥ 10× (worst case).

With ``--ptb RUN_DIR`` (a trained ``ranvier train --task ptb --model egru`` run) it also
evaluates the PTB test split with the engine and with torch (the run's own evaluation code) in
float32 and float64, and measures tokens/s at batch 1.

    python benchmarks/engine.py [--quick] [--ptb runs/ptb-egru]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from common import RESULTS, target, write_results

from ranvier import EGRU
from ranvier.engine import Session, freeze, perplexity
from ranvier.neurons.egru import EGRUState, egru_step
from ranvier.sparse import effective_weight, set_mask

HIDDEN = (256, 512, 1024)
ACTIVITY = (0.05, 0.10, 0.20, 0.50, 1.00)
WEIGHTS = (1.00, 0.20, 0.10)
WARMUP = 60  # steps run before timing (the state leaves its zero start)


def event_inputs(steps: int, hidden: int, density: float, gen: torch.Generator) -> torch.Tensor:
    """``[steps, hidden]`` event vectors: exactly round(density·H) active units per step, with
    graded values in [0.2, 1) like EGRU events."""
    k = max(1, round(density * hidden))
    x = torch.zeros(steps, hidden)
    for t in range(steps):
        idx = torch.randperm(hidden, generator=gen)[:k]
        x[t, idx] = 0.2 + 0.8 * torch.rand(k, generator=gen)
    return x


def build_layer(hidden: int, weight_density: float, seed: int) -> EGRU:
    torch.manual_seed(seed)
    egru = EGRU(hidden, hidden, threshold_init="beta", threshold_mean=0.5).eval()
    with torch.no_grad():
        h = hidden
        egru.bias_ih_l0[:h].uniform_(2.0, 3.0)  # update gate z ≈ 0.9: units keep their state and integrate
        egru.bias_ih_l0[2 * h:].uniform_(1.0, 2.0)  # candidate g > 0: the state charges up, the event resets it
    if weight_density < 1.0:
        gen = torch.Generator().manual_seed(seed + 1)
        for name in ("weight_ih_l0", "weight_hh_l0"):
            w = getattr(egru, name)
            set_mask(egru, name, torch.rand(w.shape, generator=gen) < weight_density)
    return egru


def calibrate(egru: EGRU, x: torch.Tensor, density: float, rounds: int = 6) -> float:
    """Set each unit's threshold to a high quantile of its pre-event state ĉ, a few times over:
    the threshold reset changes ĉ, so the quantile level is corrected by the event rate each
    round measured. Returns the layer's event density after the last round."""
    level = density
    with torch.no_grad():
        for _ in range(rounds):
            _, states = egru.trajectory(x.unsqueeze(1))
            rate = states[0].o[WARMUP:, 0].mean().item()
            if density >= 1.0:
                egru.threshold_l0.zero_()  # every unit with ĉ > 0 fires
                continue
            level = min(1.0, max(1e-3, level * density / max(rate, 1e-3)))
            c_hat = (states[0].margin + egru.threshold_values()[0])[WARMUP:, 0]  # [T, H]
            egru.threshold_l0.copy_(torch.quantile(c_hat, 1.0 - level, dim=0).clamp(0.0, 1.0))
        _, states = egru.trajectory(x.unsqueeze(1))
    return states[0].o[WARMUP:, 0].mean().item()


class DenseStep:
    """ranvier's EGRU step in torch for one sample: the same function the model runs per step."""

    def __init__(self, egru: EGRU) -> None:
        self.w_ih = effective_weight(egru, "weight_ih_l0").detach().clone()
        self.w_hh = effective_weight(egru, "weight_hh_l0").detach().clone()
        self.b_ih, self.b_hh = egru.bias_ih_l0.detach().clone(), egru.bias_hh_l0.detach().clone()
        self.threshold = egru.threshold_values()[0].detach().clone()
        self.surrogate = egru.surrogate
        zeros = torch.zeros(1, egru.hidden_size)
        self.state = EGRUState(zeros, zeros, zeros, zeros, zeros)

    def __call__(self, x_t: torch.Tensor) -> torch.Tensor:
        y, self.state = egru_step(F.linear(x_t, self.w_ih, self.b_ih), self.state, recurrent_weight=self.w_hh,
                                  recurrent_bias=self.b_hh, threshold=self.threshold, surrogate=self.surrogate)
        return y


def time_steps(fn, inputs, into: list[float]) -> None:
    """Time every step on its own: the median over many steps is robust to the preemptions of a
    shared machine, which hit a few steps rather than a whole block."""
    clock = time.perf_counter
    for x_t in inputs:
        start = clock()
        fn(x_t)
        into.append(clock() - start)


def sweep_row(hidden: int, activity: float, weight_density: float, repeats: int, block: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    egru = build_layer(hidden, weight_density, seed)
    calibration_rate = calibrate(egru, event_inputs(WARMUP + 240, hidden, activity, gen), activity)
    x = event_inputs(WARMUP + repeats * block, hidden, activity, gen)
    graph = freeze(egru, dtype=np.float32)
    sessions = {threads: Session(graph, threads=threads) for threads in (1, 2)}
    dense = {threads: DenseStep(egru) for threads in (1, 2)}
    x_np = [row for row in x.numpy()]
    x_torch = [row.view(1, -1) for row in x]
    with torch.no_grad():
        # warm-up, and a check that the engine computes what torch computes on these inputs
        engine_y = np.stack([sessions[1].step(x_t) for x_t in x_np[:WARMUP]])
        for x_t in x_np[:WARMUP]:
            sessions[2].step(x_t)
        torch_y = torch.stack([dense[1](x_t)[0] for x_t in x_torch[:WARMUP]]).numpy()
        for x_t in x_torch[:WARMUP]:
            dense[2](x_t)
        same_events = float(np.mean((engine_y != 0) == (torch_y != 0)))
        max_error = float(np.abs(engine_y - torch_y).max())
        times: dict[str, list[float]] = {"engine_1t": [], "engine_2t": [], "dense_1t": [], "dense_2t": []}
        layer_events = 0
        layer = sessions[1]._layers[0]
        for r in range(repeats):  # blocks of the methods interleaved
            chunk = slice(WARMUP + r * block, WARMUP + (r + 1) * block)
            for threads in (1, 2):
                session = sessions[threads]
                for x_t in x_np[chunk]:
                    start = time.perf_counter()
                    session._step_view(x_t)
                    times[f"engine_{threads}t"].append(time.perf_counter() - start)
                    if threads == 1:
                        layer_events += layer.events.n
            for threads in (1, 2):
                torch.set_num_threads(threads)
                time_steps(dense[threads], x_torch[chunk], times[f"dense_{threads}t"])
        torch.set_num_threads(2)
    steps = repeats * block
    input_events = int((x[WARMUP:] != 0).sum())
    columns = (input_events + layer_events) / steps / (2 * hidden)
    median = {k: statistics.median(v) for k, v in times.items()}
    return {
        "section": "sweep", "hidden": hidden, "activity_asked": activity, "weight_density": weight_density,
        "measured_density": columns, "layer_event_density": layer_events / steps / hidden,
        "calibration_event_density": calibration_rate,
        "engine_us": median["engine_1t"] * 1e6, "engine_2t_us": median["engine_2t"] * 1e6,
        "dense_1t_us": median["dense_1t"] * 1e6, "dense_2t_us": median["dense_2t"] * 1e6,
        "speedup_1t": median["dense_1t"] / median["engine_1t"], "speedup_2t": median["dense_2t"] / median["engine_2t"],
        "ideal_speedup": 1.0 / columns, "engine_weights": "CSR" if graph.layers[0].recurrent_weight.sparse else "dense",
        "events_agree": same_events, "max_abs_diff": max_error, "repeats": repeats, "block": block,
    }


def gru_rows(hidden: int, repeats: int, block: int) -> dict:
    """torch.nn.GRU(H, H) stepped one input at a time, batch 1 (1 and 2 threads)."""
    torch.manual_seed(0)
    gru = torch.nn.GRU(hidden, hidden).eval()
    xs = [torch.randn(1, 1, hidden) for _ in range(block)]
    out = {}
    with torch.no_grad():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            h = torch.zeros(1, 1, hidden)

            def step(x_t: torch.Tensor) -> None:
                nonlocal h
                _, h = gru(x_t, h)

            times: list[float] = []
            time_steps(step, xs, [])
            for _ in range(repeats):
                time_steps(step, xs, times)
            out[f"gru_{threads}t_us"] = statistics.median(times) * 1e6
    torch.set_num_threads(2)
    return out


def plot(rows: list[dict], path) -> None:
    from ranvier.plot import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    colors = {256: "tab:blue", 512: "tab:orange", 1024: "tab:green"}
    markers = {1.0: "o", 0.2: "s", 0.1: "^"}
    grid = np.logspace(np.log10(0.03), 0, 50)
    for ax, threads in zip(axes, (1, 2)):
        ax.plot(grid, 1 / grid, "k-", lw=1, label="ideal 1/density")
        ax.plot(grid, 0.8 / grid, "k--", lw=1, label="target 0.8/density")
        for r in rows:
            ax.scatter(r["measured_density"], r[f"speedup_{threads}t"], color=colors[r["hidden"]],
                       marker=markers[r["weight_density"]], s=30)
        for h, c in colors.items():
            ax.scatter([], [], color=c, label=f"H = {h}")
        for w, m in markers.items():
            ax.scatter([], [], color="gray", marker=m, label=f"weights {100 * w:.0f} %")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("measured activity density (weight columns read / all)")
        ax.set_title(f"engine vs dense torch EGRU step, both {threads} thread{'s' if threads > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("speedup (dense step time / engine step time)")
    axes[1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ptb_rows(run_dir: str, limit: int, repeats: int) -> list[dict]:
    """Engine vs torch on a trained PTB EGRU: test perplexity (float32 and float64) and tokens/s."""
    from ranvier.checkpoint import load_checkpoint
    from ranvier.report import load_run
    from ranvier.train import CHECKPOINT
    from ranvier.train_lm import LanguageModelJob

    run = load_run(run_dir)
    job = LanguageModelJob(run.cfg)
    load_checkpoint(f"{run_dir}/{CHECKPOINT}", job.model, restore_rng=False)
    model = job.model.eval()
    test = job.test_data  # [T, eval_batch_size]: the streams the torch evaluation reads
    predictions = len(test) - 1 if limit <= 0 else min(limit, len(test) - 1)
    rows = []
    for dtype in (torch.float32, torch.float64):
        model.to(dtype)
        start = time.perf_counter()
        reference = job._perplexity(test, limit=predictions)
        torch_seconds = time.perf_counter() - start
        session = Session(freeze(model, dtype=dtype))
        engine = perplexity(session, test[:predictions + 1].numpy())
        rows.append({"section": "ptb", "what": f"test perplexity, {str(dtype).split('.')[-1]}",
                     "torch_ppl": reference["ppl"], "engine_ppl": engine["ppl"],
                     "relative_difference": abs(engine["ppl"] / reference["ppl"] - 1.0),
                     "tokens": engine["tokens"], "streams": test.shape[1],
                     "engine_tokens_per_s": engine["tokens"] / engine["seconds"],
                     "torch_eval_tokens_per_s": engine["tokens"] / torch_seconds,
                     "activity": 1.0 - reference.get("activity_sparsity", 0.0),
                     "recorded_test_ppl": (run.metrics or {}).get("test_perplexity")})
        print(rows[-1], flush=True)
    model.to(torch.float32)
    rows.append(ptb_speed(model, test[:, 0], repeats))
    print(rows[-1], flush=True)
    return rows


def ptb_speed(model, stream: torch.Tensor, repeats: int, block: int = 100) -> dict:
    """Batch-1 tokens/s on one test stream, float32: engine step vs torch per token vs torch per window."""
    session = Session(freeze(model, dtype=np.float32))
    tokens = [int(t) for t in stream[: block * repeats + 1]]
    bptt = 35
    times: dict[str, list[float]] = {"engine": [], "torch_token_1t": [], "torch_token_2t": [], "torch_window_1t": []}
    state = {1: None, 2: None}
    window_state = None
    with torch.no_grad():
        session._step_view(tokens[0])
        for r in range(repeats):  # blocks of the methods interleaved; every token (window) timed on its own
            chunk = tokens[r * block:(r + 1) * block]
            time_steps(session._step_view, chunk, times["engine"])
            for threads in (1, 2):
                torch.set_num_threads(threads)

                def token_step(t: int, threads: int = threads) -> None:
                    _, state[threads], _ = model(torch.tensor([[t]]), state[threads])

                time_steps(token_step, chunk, times[f"torch_token_{threads}t"])
            torch.set_num_threads(1)
            windows = torch.tensor(chunk[: (block // bptt) * bptt]).view(-1, 1).split(bptt)

            def window_step(w: torch.Tensor) -> None:
                nonlocal window_state
                _, window_state, _ = model(w, window_state)

            per_window: list[float] = []
            time_steps(window_step, windows, per_window)
            times["torch_window_1t"] += [s / bptt for s in per_window]
    torch.set_num_threads(2)
    tps = {f"{k}_tokens_per_s": 1.0 / statistics.median(v) for k, v in times.items()}
    return {"section": "ptb", "what": "batch-1 tokens/s, float32", **tps,
            "engine_vs_torch_token_1t": tps["engine_tokens_per_s"] / tps["torch_token_1t_tokens_per_s"],
            "engine_vs_torch_token_2t": tps["engine_tokens_per_s"] / tps["torch_token_2t_tokens_per_s"],
            "engine_vs_torch_window_1t": tps["engine_tokens_per_s"] / tps["torch_window_1t_tokens_per_s"],
            "tokens_timed": block * repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a noisier, faster run)")
    parser.add_argument("--repeats", type=int, default=0, help="timed blocks per method (default 10; --quick 3)")
    parser.add_argument("--block", type=int, default=200, help="consecutive steps per timed block")
    parser.add_argument("--hidden", type=int, nargs="+", default=list(HIDDEN))
    parser.add_argument("--ptb", default="", help="a trained PTB EGRU run directory: add the perplexity and tokens/s rows")
    parser.add_argument("--ptb-tokens", type=int, default=0, help="test predictions per stream (0: the whole split)")
    parser.add_argument("--no-sweep", action="store_true", help="only the PTB rows")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 10)
    torch.set_flush_denormal(True)
    rows: list[dict] = []
    if not args.no_sweep:
        gru = {h: gru_rows(h, repeats, args.block) for h in args.hidden}
        for h in args.hidden:
            for weight_density in WEIGHTS:
                for activity in ACTIVITY:
                    row = sweep_row(h, activity, weight_density, repeats, args.block, seed=h)
                    row.update(gru[h])
                    row["speedup_vs_gru_1t"] = row["gru_1t_us"] / row["engine_us"]
                    rows.append(row)
                    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                          flush=True)
        plot(rows, RESULTS / "engine.png")
    if args.ptb:
        rows += ptb_rows(args.ptb, args.ptb_tokens, repeats)
    sweep = [r for r in rows if r["section"] == "sweep"]
    targets = []
    focus = [r for r in sweep if r["hidden"] >= 512 and r["activity_asked"] <= 0.20]
    if focus:
        worst = min(min(r["speedup_1t"], r["speedup_2t"]) * r["measured_density"] for r in focus)
        targets.append(target("H>=512, activity<=20%: min speedup x measured density (dense step, 1 and 2 threads)",
                              worst, ">=", 0.8))
        sparse = [r for r in focus if r["weight_density"] == 0.10]
        if sparse:
            targets.append(target("H>=512, activity<=20%, 10% weights: min speedup over the dense step",
                                  min(min(r["speedup_1t"], r["speedup_2t"]) for r in sparse), ">=", 10.0))
    ptb = [r for r in rows if r["section"] == "ptb" and "relative_difference" in r]
    for r in ptb:
        targets.append(target(f"PTB {r['what']}: |engine/torch - 1|", r["relative_difference"], "<=", 1e-4))
    if rows:
        write_results("engine", rows, targets)
    for t in targets:
        print(f"{t['name']}: {t['value']:.4g} {t['op']} {t['target']} -> {'met' if t['met'] else 'MISSED'}")


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    main()
