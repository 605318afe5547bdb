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
        pass  # no /proc (not Linux): keep platform's coarser name
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}"


def command() -> str:
    """The command line that reproduces this run, from the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), Path(__file__).resolve().parent.parent)
    prefix = "RANVIER_DATA=../shared/data " if os.environ.get("RANVIER_DATA") else ""
    return prefix + " ".join(["python", script, *sys.argv[1:]])


def target(name: str, value: float, op: str, goal: float) -> dict[str, Any]:
    met = {">=": value >= goal, "<=": value <= goal, ">": value > goal, "<": value < goal}[op]
    return {"name": name, "value": value, "op": op, "target": goal, "met": bool(met)}


def write_results(name: str, rows: list[dict[str, Any]], targets: list[dict[str, Any]]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with command, date, machine, rows and targets."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "command": command(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "rows": rows,
        "targets": targets,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path
