"""The package's layers: imports point one way (I/O at the bottom, engines and validation on top)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "openmm_learning"

#: layer of each first-level part of openmm_learning; a module may import its own layer or lower
LAYERS = {"units": 0, "io": 1, "losses": 2, "openmm": 3, "validation": 4, "workflow": 5, "evaluate": 5, "iterate": 5,
          "cli": 6, "__main__": 7, "__init__": 0}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, module: str):
    """Dotted names of the openmm_learning modules a file imports (relative imports
    resolved as if the file were the module `module`)."""
    tree = ast.parse(path.read_text())
    here = module.split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None or target == "openmm_learning":
                for alias in node.names:  # from . import kernels
                    yield node.lineno, f"{target}.{alias.name}"
            else:
                yield node.lineno, target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def _layer(dotted: str):
    parts = dotted.split(".")
    if parts[0] != "openmm_learning" or len(parts) < 2:
        return None
    return LAYERS.get(parts[1])


def _package_files():
    return sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _package_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    assert_imports_point_down(path, _module_name(path))


def assert_imports_point_down(path: Path, module: str):
    mine = _layer(module)
    if module == "openmm_learning":
        mine = max(LAYERS.values())  # the package's front door may re-export anything
    assert mine is not None, f"{path}: module outside the known layers {sorted(LAYERS)}"
    for lineno, target in _imports(path, module):
        theirs = _layer(target)
        if theirs is not None:
            assert theirs <= mine, f"{path}:{lineno} imports {target} from a higher layer"


def test_layer_checker_catches_an_upward_import(tmp_path):
    """Planted: an io module importing the validation layer must be flagged (the file is
    written under the test's own folder and read as if it were openmm_learning.io's)."""
    bad = tmp_path / "_planted_upward_import.py"
    bad.write_text("from ..validation import analysis\n")
    with pytest.raises(AssertionError, match="higher layer"):
        assert_imports_point_down(bad, "openmm_learning.io._planted_upward_import")


def test_no_global_state_at_import_or_run():
    """No matplotlib backend switching and no change of the working directory."""
    for path in _package_files() + sorted((ROOT / "lammps_plugin").glob("*.py")):
        text = path.read_text()
        assert "matplotlib.use(" not in text, path
        assert "os.chdir(" not in text, path


def test_repository_guard_sees_a_write(tmp_path):
    """Planted: the session's guard (conftest.tree_changes) notices a file added, one changed
    and one removed, and ignores caches."""
    from conftest import tree_changes, tree_snapshot

    (tmp_path / "kept.txt").write_text("a")
    (tmp_path / "changed.txt").write_text("a")
    (tmp_path / "removed.txt").write_text("a")
    before = tree_snapshot(tmp_path)
    (tmp_path / "changed.txt").write_text("bb")
    (tmp_path / "removed.txt").unlink()
    (tmp_path / "added.txt").write_text("a")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_text("a")
    assert tree_changes(before, tree_snapshot(tmp_path)) == ["added.txt", "changed.txt", "removed.txt"]
