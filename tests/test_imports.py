"""Dependencies point one way (DESIGN.md §2): core ← neurons/layers ← models/tasks ← train/cli."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ranvier"

# package → sub-packages it must never import
FORBIDDEN = {
    "core": {"neurons", "layers", "models", "tasks", "data", "train", "cli", "config", "checkpoint"},
    "neurons": {"models", "tasks", "data", "train", "cli", "config", "checkpoint"},
    "layers": {"neurons", "models", "tasks", "data", "train", "cli", "config", "checkpoint"},
    "metrics": {"models", "tasks", "data", "train", "cli", "config", "checkpoint"},
    "sparse": {"models", "tasks", "data", "train", "cli", "config", "checkpoint"},
    "data": {"core", "neurons", "layers", "models", "tasks", "train", "cli", "config"},
}


def imported_subpackages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level >= 2 and node.module:  # from ..x import y
                names.add(node.module.split(".")[0])
            elif node.level == 0 and node.module and node.module.startswith("ranvier."):
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("ranvier.")}
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_direction(package):
    for path in (PACKAGE / package).glob("*.py"):
        bad = imported_subpackages(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {sorted(bad)}"


def test_import_is_light():
    # `import ranvier` must not drag in matplotlib, mnist1d or scipy (they load on first use).
    code = "import sys, ranvier; print(sorted(m for m in ('matplotlib', 'mnist1d', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
