"""The packages' layers: imports point one way (I/O at the bottom, engines and validation on
top), and no two modules import each other, however indirectly."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "openmm_learning"

#: layer of each first-level part of openmm_learning; a module may import its own layer or lower
LAYERS = {"units": 0, "io": 1, "losses": 2, "dynamics": 2, "openmm": 3, "validation": 4, "pipeline": 5, "cli": 6,
          "__main__": 7, "__init__": 0}
#: lammps_plugin is the LAMMPS engine, beside openmm: it reads models (losses) and frames (io),
#: and the validation and the command line drive it
LAMMPS_LAYER = LAYERS["openmm"]
LAMMPS = ROOT / "lammps_plugin"


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
    if parts[0] == "lammps_plugin":
        return LAMMPS_LAYER
    if parts[0] != "openmm_learning" or len(parts) < 2:
        return None
    return LAYERS.get(parts[1])


def _package_files():
    return sorted(p for p in PACKAGE.rglob("*.py")) + sorted(LAMMPS.glob("*.py"))


def import_graph(files: dict) -> dict:
    """{module: set of the modules it imports, anywhere in the file} among `files`
    ({module: path}); an import of a name from a package counts as its module where there
    is one (from . import kernels), else as the package."""
    graph = {}
    for module, path in files.items():
        graph[module] = set()
        for _, target in _imports(path, module):
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != module:
                graph[module].add(target)
    return graph


def find_cycle(graph: dict):
    """One import circle as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


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


def test_no_import_circles():
    """No module imports another that imports it back, directly or through others, in the
    same layer or across both packages (imports inside functions count: they only hide one)."""
    files = {_module_name(p): p for p in _package_files()}
    files = {m: p for m, p in files.items() if m != "openmm_learning"}  # the front door re-exports
    assert find_cycle(import_graph(files)) is None, find_cycle(import_graph(files))


def test_circle_finder_catches_a_planted_circle(tmp_path):
    """Planted: two modules of one layer importing each other, one of them inside a function."""
    (tmp_path / "a.py").write_text("from . import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import x\n")
    files = {"openmm_learning.losses.a": tmp_path / "a.py", "openmm_learning.losses.b": tmp_path / "b.py"}
    cycle = find_cycle(import_graph(files))
    assert cycle is not None and set(cycle) == set(files), cycle
    (tmp_path / "b.py").write_text("import numpy\n")
    assert find_cycle(import_graph(files)) is None


def test_no_global_state_at_import_or_run():
    """No matplotlib backend switching and no change of the working directory."""
    for path in _package_files():
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


#: the upper floors users call: their public functions stay small enough to read at once
SIZE_CHECKED = [PACKAGE / "pipeline", PACKAGE / "validation", PACKAGE / "openmm" / "simulate.py",
                PACKAGE / "openmm" / "integrator.py",
                PACKAGE / "cli.py", PACKAGE / "dynamics.py", LAMMPS / "writer.py"]
MAX_PARAMETERS, MAX_LINES = 10, 60


def oversized_functions(path: Path) -> list:
    """Public functions and methods of a file with more than MAX_PARAMETERS parameters
    (self and cls not counted) or more than MAX_LINES lines, as 'file:line name (why)'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            continue
        a = node.args
        names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs] + [x.arg for x in (a.vararg, a.kwarg) if x]
        n = len([x for x in names if x not in ("self", "cls")])
        lines = node.end_lineno - node.lineno + 1
        if n > MAX_PARAMETERS or lines > MAX_LINES:
            found.append(f"{path.name}:{node.lineno} {node.name} ({n} parameters, {lines} lines)")
    return found


def test_upper_floors_have_small_public_functions():
    files = [f for p in SIZE_CHECKED for f in (sorted(p.rglob("*.py")) if p.is_dir() else [p])]
    assert len(files) > 15
    assert [x for f in files for x in oversized_functions(f)] == []


def test_size_check_catches_a_planted_long_signature(tmp_path):
    """Planted: 11 parameters, then a 61-line body; a private helper is not checked."""
    path = tmp_path / "planted.py"
    path.write_text("def run(a, b, c, d, e, f, g, h, i, j, *, k=1):\n    pass\n")
    assert oversized_functions(path) == ["planted.py:1 run (11 parameters, 2 lines)"]
    helper = "\n\ndef _helper(" + ", ".join("abcdefghijkl") + "):\n    pass\n"
    path.write_text("def run(self):\n" + "    x = 1\n" * 60 + helper)
    assert oversized_functions(path) == ["planted.py:1 run (0 parameters, 61 lines)"]
