"""The shape of the code: no import cycle in the core or any plugin, and configs that never load plugins."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _package_roots() -> list[Path]:
    return [ROOT / "quantzoo", *sorted(p for p in (ROOT / "plugins").glob("*/quantzoo_plugin_*") if p.is_dir())]


def _module_name(path: Path, root: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.Module):
    """Every import statement that can run: at module level and inside functions (a deferred import that
    only breaks a cycle at import time is still a cycle between the modules), but not ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            stack += node.orelse
        else:
            stack += list(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """Module → project modules it imports. Importing ``a.b.c`` also runs the packages
    ``a`` and ``a.b`` (their ``__init__``), except those the importer itself lives in (already running)."""
    modules: dict[str, Path] = {}
    for root in _package_roots():
        for path in root.rglob("*.py"):
            modules[_module_name(path, root)] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                parts = t.split(".")
                for i in range(1, len(parts) + 1):
                    name = ".".join(parts[:i])
                    if name in modules and name != mod and not (mod + ".").startswith(name + "."):
                        graph[mod].add(name)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out = set(), [], []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_is_read_from_every_package():
    graph = import_graph()
    assert "quantzoo.pipeline" in graph and "quantzoo.quantizer" in graph["quantzoo.pipeline"]
    assert any(m.startswith("quantzoo_plugin_brevitas.") for m in graph)


def test_no_import_cycle_in_the_core_or_any_plugin():
    assert find_cycles(import_graph()) == []


def test_find_cycles_finds_one():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_validating_a_core_config_imports_no_plugin():
    code = (
        "import sys, quantzoo\n"
        "from quantzoo.quantizers import UniformConfig\n"
        "UniformConfig(weight_observer='minmax', activation_observer='percentile', first_layer='int8')\n"
        "quantzoo.QuantSpec(bits=4)\n"
        "from quantzoo.quantizers import UniformQuantizer\n"
        "UniformQuantizer(weight_observer='mse')\n"  # core observer names resolve without the registry
        "import quantzoo.registry as r\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('quantzoo_plugin'))\n"
        "assert not loaded and r._REGISTRY is None, (loaded, r._REGISTRY)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
