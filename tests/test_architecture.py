"""The architecture's rules, read from the source with `ast`: the core imports no modality except through
the run builder, and no module imports itself back through a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEAM = "mmdit/training/build.py"
"""The one core file that turns modality names into adapters."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for d in ("mmdit", "modalities") for p in (ROOT / d).rglob("*.py")}
    return {name: {i for i in _imports(path) if i in files and i != name} for name, path in files.items()}


def test_the_core_imports_modalities_only_through_the_run_builder():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "mmdit").rglob("*.py")
        if str(p.relative_to(ROOT)) != SEAM and any(i.split(".")[0] == "modalities" for i in _imports(p))
    ]
    assert not offenders, f"these core files import modalities (only {SEAM} may): {offenders}"
    assert any(i.startswith("modalities") for i in _imports(ROOT / SEAM))  # the rule names a real seam


def test_no_import_cycles():
    graph = _graph()
    assert len(graph) > 40 and graph["mmdit.training.module"], "the walk found the package's modules"
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            # A package's __init__ that re-exports its own modules is not a cycle through the package.
            if target.startswith(node + "."):
                continue
            assert state.get(target) != 1, f"import cycle: {' -> '.join([*path, node, target])}"
            if target not in state:
                visit(target, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
