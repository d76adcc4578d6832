"""The layers of the code base point one way (see the design notes): a module may import from
the layers below its own, never from those above."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "codeinterp"
ORDER = ["api", "services", "agent", "sessions", "sandbox"]  # top to bottom
# store and telemetry are leaves: any layer may use them, they use none


def imported_modules(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
    return modules


def test_no_module_imports_upward() -> None:
    upward = []
    for layer in [*ORDER, "store", "telemetry"]:
        above = ORDER[: ORDER.index(layer)] if layer in ORDER else ORDER
        for path in (SRC / layer).rglob("*.py"):
            for module in imported_modules(path):
                parts = module.split(".")
                if parts[0] == "codeinterp" and len(parts) > 1 and parts[1] in above:
                    upward.append(f"{path.relative_to(SRC)} imports {module}")
    assert upward == []


def test_the_agents_functions_stay_short() -> None:
    """The model loop and its door adapters are read often: no function of agent/ is over 60
    lines."""
    long = []
    for path in (SRC / "agent").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert long == []
