"""The layout shows the flow: a step imports only the steps before it (analysis never imports
presentation or the CLI, records never import analysis, …), and no module grows past ~400
lines without a reason."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The steps of the flow, in order (docs/layout.md); a module may import its own step and earlier.
ORDER = ["errors", "units", "backends", "plan", "machine", "measure", "records", "runner",
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
