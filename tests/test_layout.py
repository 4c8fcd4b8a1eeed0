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


def _imports(path: Path):
    """Dotted names of the openmm_learning modules a file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    here = _module_name(path).split(".")
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
    mine = _layer(_module_name(path))
    if path.name == "__init__.py" and path.parent == PACKAGE:
        mine = max(LAYERS.values())  # the package's front door may re-export anything
    assert mine is not None, f"{path}: module outside the known layers {sorted(LAYERS)}"
    for lineno, target in _imports(path):
        theirs = _layer(target)
        if theirs is not None:
            assert theirs <= mine, f"{path}:{lineno} imports {target} from a higher layer"


def test_layer_checker_catches_an_upward_import(tmp_path):
    """Planted: an io module importing the validation layer must be flagged."""
    bad = PACKAGE / "io" / "_planted_upward_import.py"
    bad.write_text("from ..validation import analysis\n")
    try:
        with pytest.raises(AssertionError, match="higher layer"):
            test_imports_point_down(bad)
    finally:
        bad.unlink()


def test_no_global_state_at_import_or_run():
    """No matplotlib backend switching and no change of the working directory."""
    for path in _package_files() + sorted((ROOT / "lammps_plugin").glob("*.py")):
        text = path.read_text()
        assert "matplotlib.use(" not in text, path
        assert "os.chdir(" not in text, path
