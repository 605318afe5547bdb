"""The EGRU kernel's recurrent-weight gradient over the units that fired only.

``Σ_t δRh_tᵀ y_{t−1}`` has a zero column for every unit without an event anywhere in the batch
and sequence. ``ranvier.kernels.egru.event_weight_grad`` runs the GEMM over the other columns
when at most ``COMPACT_MAX_FIRING`` of the units fired. This script times it against the full
GEMM on random float32 data of shape B of ``benchmarks/speed.py`` (T = 70, B = 32, H = 512, three
gates), 2 threads, for several fractions of units that fired (each of them with an event in 30 %
of the steps), interleaved, median of 15.

    python benchmarks/weight_grad_compaction.py
"""
from __future__ import annotations

import statistics
import time

import torch
from common import write_results

from ranvier.kernels import egru as egru_kernel

T, B, H = 70, 32, 512
FIRING = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def main() -> None:
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    d_rh = torch.randn((T - 1) * B, 3 * H, generator=gen)
    rows = []
    egru_kernel.COMPACT_MAX_FIRING = 1.0  # always compact here; the full product is timed beside it
    for firing in FIRING:
        units = torch.rand(H, generator=gen) < firing
        events = (torch.rand((T - 1) * B, H, generator=gen) < 0.3) * units * torch.rand((T - 1) * B, H, generator=gen)
        full = lambda: d_rh.t() @ events  # noqa: E731, B023
        compact = lambda: egru_kernel.event_weight_grad(d_rh, events)  # noqa: E731, B023
        torch.testing.assert_close(compact(), full(), rtol=1e-4, atol=1e-3)
        times = {"full": [], "compact": []}
        for _ in range(15):
            for name, fn in (("full", full), ("compact", compact)):
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
        row = {"units_fired": float(units.double().mean()), "full_ms": statistics.median(times["full"]),
               "compact_ms": statistics.median(times["compact"])}
        row["compact_over_full"] = row["compact_ms"] / row["full_ms"]
        rows.append(row)
        print(" ".join(f"{k}={v:.3g}" for k, v in row.items()), flush=True)
    write_results("weight_grad_compaction", rows, [])


if __name__ == "__main__":
    main()
