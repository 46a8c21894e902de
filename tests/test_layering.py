"""The package's floors: each kerapos package imports only packages below it,
and no module imports itself back through others (no import cycles).

Read from the source with `ast` (every import statement, also those inside
functions), so a late import cannot hide an upward dependency.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "kerapos"

# Lower floors first; a package may import its own floor and those below.
FLOORS = (
    ("utils",),
    ("layers", "positions"),
    ("models", "data"),
    ("metrics", "checkpoints", "export", "serving"),
    ("training",),
    ("benchmarks",),
)
FLOOR_OF = {package: level for level, packages in enumerate(FLOORS) for package in packages}


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _kerapos_imports(path):
    """The names `path` imports from kerapos: `from kerapos.a import b` gives
    `kerapos.a.b` (a submodule, or an attribute of `kerapos.a`: see `_resolve`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("kerapos."))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "kerapos" or node.module.startswith("kerapos."):
                found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


MODULES = {_module_name(p): _kerapos_imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _floor(name):
    return FLOOR_OF[name.split(".")[1]]


def test_every_package_has_a_floor():
    assert {m.split(".")[1] for m in MODULES if m != "kerapos"} <= set(FLOOR_OF)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "kerapos"))
def test_imports_only_its_floor_or_lower(module):
    upward = sorted(i for i in MODULES[module] if _floor(i) > _floor(module))
    assert not upward, f"{module} imports higher floors: {upward}"


def _resolve(name):
    """`kerapos.a.b` may name a module or an attribute of package `kerapos.a`."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def test_no_import_cycles():
    graph = {m: {_resolve(i) for i in imports} - {m} for m, imports in MODULES.items()}
    state = {}

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                # A package __init__ re-exporting its own submodules is not a cycle.
                if not all(c == cycle[0] or c.startswith(cycle[0] + ".") for c in cycle):
                    pytest.fail("import cycle: " + " -> ".join(cycle))
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
