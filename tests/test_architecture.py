"""The layering of docs/architecture.md, checked on the source (no imports needed)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "galearn"

#: docs/architecture.md, bottom (0) to top (6). gan/evaluate.py and gan/balancing.py sit with evaluate.
LAYERS = {
    "errors": 0, "_optional": 0, "_lazy": 0, "runtime": 0, "imaging": 0, "morphology": 0, "morphometry": 0, "config": 0, "compute": 0,
    "store": 0, "galearn": 0, "__main__": 6,
    "survey": 1, "mock": 1, "features": 2, "gan": 2, "maps": 3, "evaluate": 4, "gan.evaluate": 4, "explore": 4,
    "report": 5, "pipeline": 6, "cli": 6,
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> list[tuple[str, str]]:
    """(importer, imported) for every galearn import, module level or inside functions."""
    edges = []
    for path in SRC.rglob("*.py"):
        mod = _module(path)
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
                edges += [(mod, t) for t in names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("galearn"):
                edges.append((mod, node.module))
            elif isinstance(node, ast.Import):
                edges += [(mod, a.name) for a in node.names if a.name.startswith("galearn")]
    return edges


def _group(mod: str) -> str:
    parts = mod.split(".")
    if len(parts) == 1:
        return "galearn"
    if parts[1] == "gan" and len(parts) > 2 and parts[2] in ("evaluate", "balancing"):
        return "gan.evaluate"
    return "galearn" if parts[1].startswith("__") and parts[1] != "__main__" else parts[1]  # from . import __version__


def test_no_module_imports_a_higher_layer():
    upward = [(a, b) for a, b in _imports() if LAYERS[_group(b)] > LAYERS[_group(a)]]
    assert not upward, f"imports against the layering of docs/architecture.md: {upward}"


def test_no_import_cycles_between_modules():
    modules = {_module(p) for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for a, b in _imports():
        while b not in modules and "." in b:  # `from .x import name` -> module .x
            b = b.rsplit(".", 1)[0]
        if b in modules and a != b and not b == a.rsplit(".", 1)[0]:  # a package's own __init__ is not a cycle
            graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if not state.get(n):
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m)


def test_stages_never_read_metrics_json():
    """metrics.json is write-only for stages: reads only in store.py and report/."""
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "store.py" or rel.startswith("report/"):
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\bread_metrics\b|json\.load.*metrics|metrics\.json\"\)", line):
                offenders.append(f"{rel}:{i}: {line.strip()}")
    assert not offenders, offenders


def test_only_the_store_spells_workspace_file_names():
    names = re.compile(r"""["'](split\.json|morphology\.ecsv|manifest\.json|config\.toml|sample\.h5|library\.h5|"""
                       r"""ckpt-[^"']*|adapted\.pt|adapt-ckpt\.pt|stats\.csv|classes\.ecsv)["']""")
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "store.py":
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if names.search(line) and not line.lstrip().startswith(("#", "help=")) and "``" not in line:
                offenders.append(f"{rel}:{i}: {line.strip()}")
    assert not offenders, offenders
