"""kerapos.layers is the floor above kerapos.utils: what it imports and registers."""

import ast
import pathlib

import keras
import pytest

import kerapos.layers

LAYERS_DIR = pathlib.Path(kerapos.layers.__file__).parent


def kerapos_imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("kerapos"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kerapos"):
            yield node.module


@pytest.mark.parametrize("path", sorted(LAYERS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_layers_import_only_utils_and_each_other(path):
    allowed = ("kerapos.layers", "kerapos.utils")
    above = [
        name for name in kerapos_imports(path)
        if name != "kerapos" and not name.startswith(allowed)
    ]
    assert not above, f"{path.name} imports {above}"


@pytest.mark.parametrize("name", kerapos.layers.__all__)
def test_public_layers_are_registered(name):
    cls = getattr(kerapos.layers, name)
    assert keras.saving.get_registered_name(cls) == f"kerapos>{name}"
    assert keras.saving.get_registered_object(f"kerapos>{name}") is cls
