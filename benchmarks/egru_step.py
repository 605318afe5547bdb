"""EGRU training step: ranvier's kernel vs its reference step loop vs torch.nn.GRU, 2 threads.

One layer, the same inputs for all three, thresholds at logit −2 (13-18 % of the units active),
loss ``mean(y²)``, Adam step included; median of 10 timed steps after 2 warm-up steps, the
three interleaved. Shapes: the speed issue's B (T=70, B=32, I=200, H=512), one layer of the PTB
preset (T=35, B=32, I=512, H=512), and H=256.

    python benchmarks/egru_step.py
"""
from __future__ import annotations

import statistics
import time

import torch
from common import write_results

from ranvier import EGRU

SHAPES = ((70, 32, 200, 512), (35, 32, 512, 512), (70, 32, 200, 256))


def main() -> None:
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    rows = []
    for steps, batch, inputs, hidden in SHAPES:
        torch.manual_seed(0)
        x = torch.randn(steps, batch, inputs)
        models = {name: EGRU(inputs, hidden, backend=name, threshold_mean=-2.0) for name in ("reference", "kernel")}
        models["nn.GRU"] = torch.nn.GRU(inputs, hidden)
        optimizers = {name: torch.optim.Adam(m.parameters(), 1e-3) for name, m in models.items()}
        times: dict[str, list[float]] = {name: [] for name in models}
        activity = 0.0
        for repeat in range(12):
            for name, model in models.items():
                start = time.perf_counter()
                y, _ = model(x)
                y.pow(2).mean().backward()
                optimizers[name].step()
                optimizers[name].zero_grad()
                times[name].append(time.perf_counter() - start)
                if name == "kernel":
                    activity = float((y != 0).float().mean())
        ms = {name: statistics.median(t[2:]) * 1e3 for name, t in times.items()}
        row = {"T": steps, "B": batch, "I": inputs, "H": hidden, "reference_ms": ms["reference"],
               "kernel_ms": ms["kernel"], "nn_gru_ms": ms["nn.GRU"], "kernel_vs_reference": ms["kernel"] / ms["reference"],
               "kernel_vs_nn_gru": ms["kernel"] / ms["nn.GRU"], "activity": activity, "threads": 2}
        rows.append(row)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    write_results("egru_step", rows, [])


if __name__ == "__main__":
    main()
