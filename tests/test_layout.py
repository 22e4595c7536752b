"""The layout shows the flow: a step imports only the steps before it (analysis never imports
presentation or the CLI, records never import analysis, …), nothing imports the top-level
package, the import graph has no circles, what one module offers another has a public name,
and no module grows past ~400 lines without a reason.

The graph is read from the source with `ast` (every import, at module level or inside a
function, TYPE_CHECKING ones included: each is a dependency a reader has to follow)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The steps of the flow, in order (docs/layout.md); a module may import its own step and earlier.
ORDER = ["version", "errors", "units", "cell_key", "backends", "plan", "machine", "measure", "records", "runner",
         "analysis", "present", "cluster", "bisect", "api", "cli"]
MAX_LINES = 410  # the ~400 of the design card; a module over it has to be split


def _step(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "qkbench" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ORDER else None


def _modules() -> dict[str, Path]:
    found = {}
    for folder, prefix in (("harness", "qkbench"), ("backends", "qkbench.backends")):
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join((prefix, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def test_no_step_imports_a_later_one():
    wrong = []
    for name, path in _modules().items():
        here = _step(name)
        if here is None:
            continue  # qkbench/__init__ and __main__ sit above everything
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                there = _step(target)
                if there is not None and ORDER.index(there) > ORDER.index(here):
                    wrong.append(f"{name} imports {target}")
    assert not sorted(set(wrong)), sorted(set(wrong))


def _imports(name: str, path: Path) -> list[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for every qkbench import of a module;
    relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            if module.split(".")[0] == "qkbench":
                out += [(module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names
                    if alias.name.split(".")[0] == "qkbench"]
    return out


def _graph() -> dict[str, set[str]]:
    """module → the qkbench modules it imports (a name taken from a package that is itself a
    module counts as that module)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for module, taken in _imports(name, path):
            target = f"{module}.{taken}" if f"{module}.{taken}" in modules else module
            if target != name and target in modules:
                graph[name].add(target)
    return graph


def test_nothing_below_the_top_imports_the_top_level_package():
    # `import qkbench` from a step reaches the API, which imports every step: a circle.
    modules = _modules()
    wrong = [f"{name} imports qkbench" for name, path in modules.items()
             if name != "qkbench" and any(module == "qkbench" and f"qkbench.{taken}" not in modules
                                          for module, taken in _imports(name, path))]
    assert not wrong, wrong


def test_no_underscore_name_is_imported_from_another_module():
    wrong = []
    modules = _modules()
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}  # local name → qkbench module, for `module._name` reads
        for module, taken in _imports(name, path):
            private = taken is not None and taken.startswith("_") and not taken.startswith("__")
            if private and module != name:
                wrong.append(f"{name} imports {module}.{taken}")
            if taken is not None and f"{module}.{taken}" in modules:
                aliases[taken] = f"{module}.{taken}"
        for node in ast.walk(tree):
            if isinstance(node, ast.alias) and node.asname and node.name in modules:
                aliases[node.asname] = node.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                wrong.append(f"{name} reads {aliases[node.value.id]}.{node.attr}")
    assert not sorted(set(wrong)), sorted(set(wrong))


def test_the_import_graph_has_no_circles():
    graph = _graph()
    circles, state = [], {}  # state: 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(" → ".join(path[path.index(target):] + [module, target]))
            elif target not in state:
                visit(target, path + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not circles, circles


def test_no_module_is_a_god_module():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_every_module_says_where_it_sits_in_the_flow():
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if path.name == "__init__.py" and not tree.body:
            continue
        assert ast.get_docstring(tree), f"{name} has no opening line"
