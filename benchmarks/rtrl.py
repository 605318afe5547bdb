"""Sparse against dense exact RTRL on one EGRU layer (SCIENCE.md §5.3): operations, wall time
and memory per step, over state size × activity density × weight density.

The network is a real EGRU (batch 1, 4 inputs). Activity is set per unit: a fraction ``a`` of the
units gets biases that drive it above threshold (ĉ ≈ +1, an event every step), the rest biases
that hold it far below threshold and outside the pseudo-derivative window (ĉ ≈ −1). The
*measured* fraction of units with a non-zero event derivative is reported next to the nominal
one and used for the comparison. Weight density ``w`` is a random synapse mask shared by the
three gates (a synapse exists or not), on the input and the recurrent weights.

Both versions run the same exact recursion (``ranvier.learning.rtrl.EGRURTRL``); the dense one
forms ``J`` densely and keeps every row and column. Operations are the multiply-adds each version
actually performs (counted by the code); wall times are medians over the measured steps, the two
versions stepping alternately in one process on a shared machine (ratios are what to compare).

    python benchmarks/rtrl.py [--quick] [--steps 6] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import RESULTS, target, write_results

from ranvier import EGRU
from ranvier.learning.rtrl import EGRURTRL
from ranvier.sparse.masks import set_mask

INPUTS = 4
SIZES = (16, 32, 64, 128)
ACTIVITY = (1.0, 0.5, 0.2, 0.1)
WEIGHT_DENSITY = (1.0, 0.5, 0.2)
WARMUP = 8  # steps before measuring, so that the influence matrix has filled in


def make_egru(n: int, activity: float, weight_density: float, seed: int) -> EGRU:
    torch.manual_seed(seed)
    egru = EGRU(INPUTS, n, threshold_init="beta", threshold_mean=0.3)
    n_active = max(1, round(activity * n))
    drive = torch.full((n,), -3.0)
    drive[torch.randperm(n)[:n_active]] = 3.0
    with torch.no_grad():
        egru.bias_ih_l0.zero_()
        egru.bias_ih_l0[:n] = -3.0  # update gate z ≈ 0: ĉ follows the candidate g
        egru.bias_ih_l0[2 * n:] = drive  # candidate g ≈ +1 (events) or ≈ −1 (silent, outside the window)
    if weight_density < 1.0:
        for name, cols in (("weight_hh_l0", n), ("weight_ih_l0", INPUTS)):
            synapses = (torch.rand(n, cols) < weight_density).float()
            set_mask(egru, name, synapses.repeat(3, 1))  # the same synapses for the three gates
    return egru


def run_side_by_side(egru: EGRU, xs: torch.Tensor) -> dict[str, tuple[float, dict]]:
    """Sparse and dense RTRL step by step in lockstep (alternating), so that the load of a shared
    machine hits both alike. Returns ``{"sparse"|"dense": (median seconds per step, counts)}``."""
    runs = {"sparse": EGRURTRL(egru, sparse=True), "dense": EGRURTRL(egru, sparse=False)}
    states = {k: r.initial_state(1) for k, r in runs.items()}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for t, x_t in enumerate(xs.unbind(0)):
        for k, rtrl in runs.items():
            start = time.perf_counter()
            y, states[k] = rtrl.step(x_t, states[k])
            states[k] = rtrl.accumulate(states[k], torch.ones_like(y))
            if t >= WARMUP:
                times[k].append(time.perf_counter() - start)
    out = {}
    measured = slice(WARMUP, None)
    for k, rtrl in runs.items():
        density_state, density_event = rtrl.influence_density(states[k])
        s = rtrl.stats
        out[k] = (statistics.median(times[k]), {
            "ops_product": statistics.mean(s.ops_product[measured]),
            "ops_total": statistics.mean(s.ops()[measured]),
            "active_fraction": statistics.mean(s.active[measured]) / rtrl.hidden_size,
            "density_state_influence": density_state,
            "density_event_influence": density_event,
            "state_bytes": rtrl.state_bytes(states[k]),
        })
    torch.testing.assert_close(states["sparse"].grad, states["dense"].grad[runs["dense"].column_mask != 0])
    return out


def bptt_saved_bytes(egru: EGRU, steps: int) -> int:
    """Bytes autograd keeps for BPTT over ``steps`` steps (grows with T)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, _ = egru(torch.randn(steps, 1, INPUTS))
        y.sum().backward()
    return total


def rtrl_bytes(egru: EGRU, steps: int) -> int:
    rtrl = EGRURTRL(egru)
    state = rtrl.initial_state(1)
    for x_t in torch.randn(steps, 1, INPUTS).unbind(0):
        y, state = rtrl.step(x_t, state)
        state = rtrl.accumulate(state, torch.ones_like(y))
    return rtrl.state_bytes(state)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for n in sorted({r["n"] for r in rows}):
        sel = [r for r in rows if r["n"] == n]
        ax1.scatter([r["active_fraction"] * r["weight_density"] for r in sel], [r["ops_ratio"] for r in sel], label=f"n={n}", s=18)
        ax2.scatter([r["active_fraction"] * r["weight_density"] for r in sel], [r["time_ratio"] for r in sel], label=f"n={n}", s=18)
    for ax, what in ((ax1, "operations"), (ax2, "wall time")):
        ax.plot([0.005, 1], [0.005, 1], "k--", lw=1, label="= activity × weight density")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("measured activity density × weight density")
        ax.set_ylabel(f"sparse / dense RTRL {what} per step")
        ax.legend(fontsize=7)
    fig.suptitle("Exact RTRL on EGRU: sparse vs dense (python benchmarks/rtrl.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n ≤ 64 and 4 measured steps")
    parser.add_argument("--steps", type=int, default=6, help="measured steps per configuration (after the warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = SIZES[:3] if args.quick else SIZES
    steps = 4 if args.quick else args.steps
    rows = []
    started = time.perf_counter()
    for n in sizes:
        for w in WEIGHT_DENSITY:
            for a in ACTIVITY:
                egru = make_egru(n, a, w, seed=n)
                xs = torch.randn(WARMUP + steps, 1, INPUTS, generator=torch.Generator().manual_seed(1))
                results = run_side_by_side(egru, xs)
                sparse_time, sparse = results["sparse"]
                dense_time, dense = results["dense"]
                row = {
                    "n": n, "activity_nominal": a, "weight_density": w,
                    "active_fraction": sparse["active_fraction"],
                    "params_dense": EGRURTRL(egru, sparse=False).n_params, "params_sparse": EGRURTRL(egru).n_params,
                    "ops_dense": dense["ops_total"], "ops_sparse": sparse["ops_total"],
                    "ops_product_dense": dense["ops_product"], "ops_product_sparse": sparse["ops_product"],
                    "ops_ratio": sparse["ops_total"] / dense["ops_total"],
                    "ops_product_ratio": sparse["ops_product"] / dense["ops_product"],
                    "seconds_dense": dense_time, "seconds_sparse": sparse_time, "time_ratio": sparse_time / dense_time,
                    "density_state_influence": sparse["density_state_influence"],
                    "density_event_influence": sparse["density_event_influence"],
                    "state_bytes_sparse": sparse["state_bytes"], "state_bytes_dense": dense["state_bytes"],
                }
                aw = max(row["active_fraction"], 1.0 / n) * w
                row["ops_ratio_over_aw"] = row["ops_ratio"] / aw
                row["ops_product_ratio_over_aw"] = row["ops_product_ratio"] / aw
                rows.append(row)
                print(f"n={n:3d} w={w:.1f} a={a:.1f} (measured {row['active_fraction']:.2f}): ops sparse/dense "
                      f"{row['ops_ratio']:.4f} (product {row['ops_product_ratio']:.4f}), a·w {aw:.3f}; time "
                      f"{sparse_time * 1e3:.2f} / {dense_time * 1e3:.2f} ms", flush=True)
    memory = []
    for n in sizes:
        egru = make_egru(n, 0.2, 0.5, seed=n)
        for steps_t in (25, 100):
            memory.append({"n": n, "sequence_length": steps_t, "rtrl_state_bytes": rtrl_bytes(egru, steps_t),
                           "bptt_saved_bytes": bptt_saved_bytes(egru, steps_t)})
    for m in memory:
        print(f"memory n={m['n']} T={m['sequence_length']}: RTRL state {m['rtrl_state_bytes']} B, "
              f"BPTT saved tensors {m['bptt_saved_bytes']} B")
    plot(rows, RESULTS / "rtrl.png")
    big = [r for r in rows if r["n"] >= 64]
    growth = max(b["rtrl_state_bytes"] / a["rtrl_state_bytes"] for a, b in zip(memory[::2], memory[1::2]))
    fastest = max(rows, key=lambda r: (r["n"], -r["activity_nominal"] * r["weight_density"]))
    targets = [
        target("max over configs of (J·M product ops sparse/dense) / (activity × weight density)",
               max(r["ops_product_ratio_over_aw"] for r in rows), "<=", 1.0),
        target("max over n >= 64 of (all RTRL ops sparse/dense) / (activity × weight density)",
               max(r["ops_ratio_over_aw"] for r in big), "<=", 2.0),
        target("RTRL state bytes at T=100 / at T=25", growth, "<=", 1.0),
        target(f"wall-time speed-up sparse vs dense at n={fastest['n']}, activity {fastest['activity_nominal']}, "
               f"weight density {fastest['weight_density']}", 1.0 / fastest["time_ratio"], ">=", 5.0),
    ]
    for r in memory:
        r["kind"] = "memory"
    write_results("rtrl", rows + memory, targets)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
