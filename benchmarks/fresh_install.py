"""Time the README's first command on a fresh clone in a fresh virtual environment.

Clones this repository's HEAD into a temporary folder, creates an empty venv, and runs the
README's `ranvier train` command there (install included), with an empty ranvier cache so
MNIST-1D is generated from scratch. Targets (foundation issue): <= 5 minutes, MNIST-1D test
accuracy >= 75 %.

    python benchmarks/fresh_install.py
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import target, write_results

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    readme = (REPO / "README.md").read_text()
    command = next(line.strip() for line in readme.splitlines() if re.match(r"^pip install torch==.*ranvier train$", line.strip()))
    with tempfile.TemporaryDirectory(prefix="ranvier-fresh-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        subprocess.run([sys.executable, "-m", "venv", str(Path(tmp) / "venv")], check=True)
        env = {**os.environ, "PATH": f"{Path(tmp) / 'venv' / 'bin'}:{os.environ['PATH']}",
               "VIRTUAL_ENV": str(Path(tmp) / "venv"), "RANVIER_CACHE": str(Path(tmp) / "cache")}
        env.pop("PYTHONPATH", None)
        start = time.perf_counter()
        done = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"the README command failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        metrics = json.loads((clone / "runs" / "mnist1d-alif-seed0" / "metrics.json").read_text())
    summary = [line for line in done.stdout.splitlines() if "test accuracy" in line][-1]
    print(summary)
    print(f"README first command: {wall:.0f} s wall, install included")
    rows = [{"command": command, "wall_seconds": wall, "train_seconds": metrics["train_seconds"],
             "test_accuracy": metrics["test_accuracy"], "activity_sparsity": metrics["activity_sparsity"]["layer0"]}]
    write_results("fresh_install", rows, [target("README first command wall time (s)", wall, "<=", 300.0),
                                          target("MNIST-1D test accuracy", metrics["test_accuracy"], ">=", 0.75)])


if __name__ == "__main__":
    main()
