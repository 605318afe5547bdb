"""Shared by the benchmark scripts: machine description and the results-file format."""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}"


def target(name: str, value: float, op: str, goal: float) -> dict[str, Any]:
    met = {">=": value >= goal, "<=": value <= goal, ">": value > goal, "<": value < goal}[op]
    return {"name": name, "value": value, "op": op, "target": goal, "met": bool(met)}


def write_results(name: str, rows: list[dict[str, Any]], targets: list[dict[str, Any]]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with command, date, machine, rows and targets."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "rows": rows,
        "targets": targets,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path
