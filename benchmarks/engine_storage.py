"""Dense or CSR: where the engine's weight storage crosses over (``ranvier.engine.graph.SPARSE_BELOW``).

The two products of an EGRU step (input and recurrent, each ``3H × H``) for a stream of event
lists, with the weights stored densely (``Wᵀ``, whole columns read) and as CSR of ``Wᵀ`` (only the
non-zero entries of the active columns), at 1 and 2 threads (``accumulate_both``, as a
``Session`` calls it; 2 threads with the streamed-weights threshold of ``ranvier.engine.run``).
Random weights with the given fraction of non-zero entries, random event lists with exactly
``activity × H`` events per product; every call timed on its own, median over the stream.
``dense/csr`` > 1 means CSR is faster.

    python benchmarks/engine_storage.py [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from common import write_results

from ranvier.engine import kernels
from ranvier.engine.graph import SPARSE_BELOW, Weights
from ranvier.engine.run import PARALLEL_MIN_WORK_STREAMED, _weight_args

HIDDEN = (512, 1024)
ACTIVITY = (0.05, 0.20)
WEIGHTS = (0.15, 0.20, 0.25, 0.33)


def time_products(a, b, events, hidden: int, threads: int) -> float:
    """Median µs of ``wx += A x; rh += B y`` over a stream of event lists."""
    wx, rh = np.zeros(3 * hidden, np.float32), np.zeros(3 * hidden, np.float32)
    times = []
    for (idx_a, val_a), (idx_b, val_b) in zip(events, events[1:] + events[:1]):
        start = time.perf_counter()
        kernels.accumulate_both(threads, PARALLEL_MIN_WORK_STREAMED, wx, *a, idx_a, val_a, len(idx_a),
                                rh, *b, idx_b, val_b, len(idx_b))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter streams, one repeat")
    args = parser.parse_args()
    steps, repeats = (500, 1) if args.quick else (2000, 3)
    rng = np.random.default_rng(0)
    rows = []
    for hidden in HIDDEN:
        for activity in ACTIVITY:
            k = round(activity * hidden)
            events = [(np.sort(rng.choice(hidden, k, replace=False)).astype(np.int64), rng.random(k).astype(np.float32))
                      for _ in range(steps)]
            for density in WEIGHTS:
                matrices = [(rng.normal(size=(3 * hidden, hidden)) * (rng.random((3 * hidden, hidden)) < density))
                            .astype(np.float32) for _ in range(2)]
                dense = [_weight_args(Weights.from_matrix(m, sparse_below=0.0), np.float32) for m in matrices]
                csr = [_weight_args(Weights.from_matrix(m, sparse_below=1.0), np.float32) for m in matrices]
                row = {"hidden": hidden, "activity": activity, "weight_density": density}
                for threads in (1, 2):
                    time_products(*dense, events, hidden, threads)  # warm-up (and compilation)
                    time_products(*csr, events, hidden, threads)
                    pairs = [(time_products(*dense, events, hidden, threads), time_products(*csr, events, hidden, threads))
                             for _ in range(repeats)]  # side by side, alternating
                    row[f"dense_{threads}t_us"] = statistics.median(p[0] for p in pairs)
                    row[f"csr_{threads}t_us"] = statistics.median(p[1] for p in pairs)
                    row[f"dense_over_csr_{threads}t"] = row[f"dense_{threads}t_us"] / row[f"csr_{threads}t_us"]
                row["stored_as"] = "CSR" if density <= SPARSE_BELOW else "dense"
                rows.append(row)
                print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    write_results("engine_storage", rows, [])


if __name__ == "__main__":
    main()
