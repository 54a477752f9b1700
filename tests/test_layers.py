"""The package's layers, read from its source with `ast` (nothing is imported).

Every import counts: at module level, inside functions, under `if TYPE_CHECKING:`, and the
module paths written as strings in dict, tuple and list literals or import_module
calls, which code imports by name (`"unilseg.cli.segment:main"` in
`__main__.SUBCOMMANDS`, `"unilseg.inference.backends.onnx:OnnxBackend"` in `BACKENDS`).
Each test lists every violation it finds, one per line, with the importing line.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "unilseg"

# Low to high: a module may import from its own layer and the layers before it, never after.
# A name is a top-level module or subpackage of unilseg ("__init__" is the package itself).
LAYERS: list[set[str]] = [
    {"errors"},
    {"io"},
    {"modeling"},
    {"model"},
    {"inference"},
    {"tasks", "data", "export", "integrations"},
    {"batch"},
    {"demo", "serve", "train", "eval"},
    {"cli"},
    {"__main__", "__init__"},  # with every package's own __main__.py: the launchers
]
# where `argparse` may be imported: the command-line layer and the launchers
ARGPARSE_ALLOWED = ("cli/", "__main__.py", "demo/__main__.py", "train/__main__.py", "eval/__main__.py",
                    "data/__main__.py")
MAX_TOP_LEVEL_MODULES = 6
# names any layer may take from the package root: its body defines them and imports nothing of the package
ROOT_ANY_LAYER = {"__version__"}

# a whole string constant naming a module of the package, optionally with ":attribute"
MODULE_STRING = re.compile(r"unilseg(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?")


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. "unilseg.batch.run"
    target: str  # imported module of the package
    line: int

    def where(self) -> str:
        return f"{rel(self.source)}:{self.line}"


@cache
def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package by its __init__.py)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def rel(module: str) -> str:
    return modules()[module].relative_to(PACKAGE).as_posix()


def resolve(name: str) -> str | None:
    """The package module `name` means: itself if it is one, else the nearest enclosing module."""
    known = modules()
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name if name.startswith("unilseg") else None


def imports_of(module: str, path: Path) -> tuple[list[Import], list[int]]:
    """The package modules `module` imports (with line numbers), and the lines importing argparse."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    known = modules()
    found: list[Import] = []
    argparse_lines: list[int] = []

    def add(name: str, line: int) -> None:
        target = resolve(name)
        if target and target != module and Import(module, target, line) not in found:
            found.append(Import(module, target, line))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "argparse":
                    argparse_lines.append(node.lineno)
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.module == "unilseg" and not node.level and {a.name for a in node.names} <= ROOT_ANY_LAYER:
                continue
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            if origin.split(".")[0] == "argparse":
                argparse_lines.append(node.lineno)
            for alias in node.names:
                sub = f"{origin}.{alias.name}"
                add(sub if sub in known else origin, node.lineno)
        elif isinstance(node, (ast.Dict, ast.Tuple, ast.List, ast.Set, ast.Call)):
            if isinstance(node, ast.Call):  # importlib.import_module("unilseg....")
                func = node.func
                named = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                strings = node.args[:1] if named == "import_module" else []
            else:
                strings = [*node.keys, *node.values] if isinstance(node, ast.Dict) else node.elts
            for item in strings:
                if isinstance(item, ast.Constant) and isinstance(item.value, str) \
                        and MODULE_STRING.fullmatch(item.value):
                    name = item.value.partition(":")[0]
                    if name in known:  # a string naming a real module: not "unilseg.video" (an old alias)
                        add(name, item.lineno)
    return found, argparse_lines


@cache
def graph() -> tuple[tuple[Import, ...], dict[str, tuple[int, ...]]]:
    edges: list[Import] = []
    argparse_uses = {}
    for module, path in modules().items():
        found, lines = imports_of(module, path)
        edges += found
        if lines:
            argparse_uses[module] = tuple(lines)
    return tuple(edges), argparse_uses


def layer_name(module: str) -> str:
    parts = module.split(".")
    if parts[-1] == "__main__":  # `python -m unilseg.train`: a launcher, above the command line it calls
        return "__main__"
    return parts[1] if len(parts) > 1 else "__init__"


def layer_index(module: str) -> int | None:
    name = layer_name(module)
    return next((i for i, layer in enumerate(LAYERS) if name in layer), None)


def cycles(edges: tuple[Import, ...]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each as one cycle through it."""
    succ: dict[str, list[str]] = {}
    for e in edges:
        succ.setdefault(e.source, [])
        if e.target not in succ[e.source]:
            succ[e.source].append(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ.get(v, []):
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
                components.append(component)

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return [cycle_through(sorted(c), succ) for c in components]


def cycle_through(component: list[str], succ: dict[str, list[str]]) -> list[str]:
    """A shortest cycle from the component's first module back to it (breadth first, inside the component)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in succ.get(v, []):
            if w == start:
                return paths[v] + [start]
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return component


def test_every_layer_is_in_the_table():
    unknown = sorted({layer_name(m) for m in modules() if layer_index(m) is None})
    if unknown:
        pytest.fail(f"modules outside the layer table (add them to LAYERS): {', '.join(unknown)}", pytrace=False)


def test_no_import_cycles():
    edges, _ = graph()
    lines = {(e.source, e.target): e.line for e in edges}
    found = []
    for cycle in cycles(edges):
        steps = [f"{rel(a)}:{lines[a, b]} -> {b}" for a, b in zip(cycle, cycle[1:])]
        found.append("cycle: " + "; ".join(steps))
    if found:
        pytest.fail(f"{len(found)} import cycle(s):\n" + "\n".join(found), pytrace=False)


def test_no_upward_imports():
    edges, _ = graph()
    order = " < ".join("{" + ", ".join(sorted(layer)) + "}" if len(layer) > 1 else next(iter(layer))
                       for layer in LAYERS)
    found = []
    for e in sorted(edges, key=lambda e: (e.source, e.line, e.target)):
        low, high = layer_index(e.source), layer_index(e.target)
        if low is not None and high is not None and high > low:
            found.append(f"{e.where()} imports {e.target} ({layer_name(e.source)} < {layer_name(e.target)})")
    if found:
        pytest.fail(f"{len(found)} upward import(s) by the layer order {order}:\n" + "\n".join(found), pytrace=False)


def test_argparse_only_in_the_command_line_layer():
    _, uses = graph()
    found = [f"{rel(m)}:{','.join(map(str, lines))} imports argparse" for m, lines in sorted(uses.items())
             if not rel(m).startswith(ARGPARSE_ALLOWED)]
    if found:
        pytest.fail(f"{len(found)} module(s) import argparse outside cli/ and the launchers "
                    f"({', '.join(ARGPARSE_ALLOWED[1:])}):\n" + "\n".join(found), pytrace=False)


def test_few_top_level_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    if len(top) > MAX_TOP_LEVEL_MODULES:
        pytest.fail(f"{len(top)} modules directly under src/unilseg/ (at most {MAX_TOP_LEVEL_MODULES}): "
                    f"{', '.join(top)}", pytrace=False)


def test_the_walk_sees_imports_inside_functions_and_module_strings():
    """The walk itself: a function-level import and a "module:function" string are edges."""
    edges, _ = graph()
    pairs = {(e.source, e.target) for e in edges}
    assert ("unilseg.__main__", "unilseg.cli.segment") in pairs  # inside segment_main
    assert ("unilseg.inference.backends", "unilseg.inference.backends.onnx") in pairs  # BACKENDS' string
    assert cycles((Import("a", "b", 1), Import("b", "c", 2), Import("c", "a", 3), Import("c", "d", 4))) == [
        ["a", "b", "c", "a"]]


def test_every_layer_states_its_purpose():
    """Each package's __init__ docstring (every layer's, and inference/backends, data/synthetic) opens with
    one line, a sentence, saying what it is for: the docs' internals page shows it (scripts/layout.py)."""
    found = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = (ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or "").strip()
        first = doc.splitlines()[0] if doc else ""
        if not first.endswith(".") or first.startswith("TODO"):
            found.append(f"{init.relative_to(PACKAGE).as_posix()}: {first or 'no docstring'!r}")
    if found:
        pytest.fail("packages whose docstring does not open with a one-line purpose:\n" + "\n".join(found),
                    pytrace=False)
