"""Why the MNIST-1D preset looks the way it does: ALIF with one ingredient removed at a time.

Each variant trains ALIF for the same short budget (15 epochs by default) from the preset
``ranvier/presets/mnist1d.toml`` with one group of settings changed.

    python benchmarks/mnist1d_ablation.py [--epochs 15]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile

from common import write_results

from ranvier.config import build_config
from ranvier.train import fit

VARIANTS = {
    "preset": {},
    "analog input only (levels=0)": {"levels": 0},
    "homogeneous time constants": {"tau_mem": 20.0, "tau_mem_max": 0.0, "tau_adapt": 200.0, "tau_adapt_max": 0.0},
    "LSNN convention (v_th 0.01, gamma 0.3)": {"convention": "lsnn", "threshold": 0.01, "gamma": 0.3},
    "adaptation beta 0.4": {"beta": 0.4},
    "adaptation beta 1.8 (the LSNN value)": {"beta": 1.8},
    "no adaptation (LIF)": {"model": "lif"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    rows = []
    for name, change in VARIANTS.items():
        out = tempfile.mkdtemp(prefix="ranvier-ablation-")
        m = fit(build_config({"model": "alif", "epochs": args.epochs, "out": out, "progress": False, **change}))
        shutil.rmtree(out, ignore_errors=True)
        rows.append({"variant": name, "epochs": args.epochs, "test_accuracy": m["test_accuracy"],
                     "activity_sparsity": m["activity_sparsity"]["layer0"], "train_seconds": m["train_seconds"]})
        print(f"{name:45s} acc {m['test_accuracy']:.4f} sparsity {m['activity_sparsity']['layer0']:.3f}", flush=True)
    write_results("mnist1d_ablation", rows, [])  # an explanation of the preset: no issue target


if __name__ == "__main__":
    main()
