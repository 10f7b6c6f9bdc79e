"""The layering rules of docs/architecture.md, read from the source: no import cycles (function-local and
TYPE_CHECKING imports included), the library never imports the CLI, argparse lives only in xvit.cli."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in (SRC / "xvit").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the xvit modules it imports anywhere in its body (``from a.b import c`` counts ``a.b.c`` when
    that is a module, else ``a.b``)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_detector_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert _cycles(_imports(_modules())) == []


def test_the_library_never_imports_the_cli():
    graph = _imports(_modules())
    offenders = sorted(m for m, deps in graph.items()
                       if not m.startswith("xvit.cli") and m != "xvit.__main__"
                       and any(d == "xvit.cli" or d.startswith("xvit.cli.") for d in deps))
    assert offenders == []


def test_argparse_lives_only_in_the_cli_package():
    users = sorted(name for name, path in _modules().items()
                   if not name.startswith("xvit.cli") and "argparse" in path.read_text())
    assert users == []


# The layers of docs/architecture.md: a module may import its own layer and the ones below, never above.
LAYERS = {
    "_compat": 0, "utils": 0, "registry": 0, "params": 0, "version": 0,
    "models": 1,
    "adapters": 2, "data": 2,
    "targets": 3, "capture": 3, "relevance": 3, "perturb": 3,
    "methods": 4,
    "viz": 5, "result": 5, "explainer": 5,
    "pipeline": 6, "errors": 6, "analysis": 6, "evaluate": 6, "training": 6, "bench": 6, "report": 6,
    "app": 7,
    "cli": 8, "__main__": 8, "xvit": 8,
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "xvit"


def test_every_top_level_module_has_a_layer():
    assert {_part(m) for m in _modules()} <= set(LAYERS)


def test_imports_only_go_down_the_layers():
    upward = sorted(f"{a} -> {b}" for a, deps in _imports(_modules()).items() for b in deps
                    if LAYERS[_part(b)] > LAYERS[_part(a)])
    assert upward == []
