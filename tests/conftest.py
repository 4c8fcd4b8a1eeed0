"""Shared fixtures: the bundled CP2K runs and models fitted on part of them; a guard that
the tests write only under their temporary folders."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.losses.fit import FitSettings, chebyshev_model, fit_modes


@pytest.fixture(scope="session")
def xtb():
    return load_water_run(example_run_dir("water64-xtb-300K"))


@pytest.fixture(scope="session")
def spcfw():
    return load_water_run(example_run_dir("water64-spcfw-300K"))


@pytest.fixture(scope="session")
def xtb_models(xtb):
    """Both modes fitted on every 4th bundled xTB frame (fast, still a real fit): the
    paper's free agents and splines only, the strongest asymmetry and an exact match in
    every engine (charges and the asymmetry penalty have their own tests)."""
    run, system = xtb
    idx = np.arange(0, run.n_frames, 4)
    results = fit_modes(run.positions[idx], run.forces[idx], run.box_nm[idx], system,
                        settings=FitSettings(agent_asymmetry="free", charges=False, basis="spline"),
                        progress=False)
    return {mode: r.model for mode, r in results.items()}


@pytest.fixture(scope="session")
def xtb_compiled(xtb, xtb_models):
    """xtb_models compiled to Chebyshev series (FitSettings.basis "chebyshev") on their frames."""
    run, system = xtb
    idx = np.arange(0, run.n_frames, 4)
    return {mode: chebyshev_model(m, run.positions[idx], run.box_nm[idx], system) for mode, m in xtb_models.items()}


@pytest.fixture(scope="session")
def spcfw_charged(spcfw):
    """Both modes with point charges fitted on the SPC/Fw known truth after 5 ps, as splines
    (every engine route, pair_style python included): {mode: FitResult}."""
    run, system = spcfw
    keep = run.steps >= 10000
    return fit_modes(run.positions[keep], run.forces[keep], run.box_nm[keep], system,
                     settings=FitSettings(charges=True, basis="spline"), progress=False)


#: fixtures that fit models (tens of seconds): every test using one is in the slow tier
SLOW_FIXTURES = {"xtb_models", "xtb_compiled", "saved_models", "spcfw_fit", "spcfw_charged", "fitted", "suite"}
#: tests outside those that run LAMMPS or CP2K (the fast tier runs neither)
SLOW_TESTS = {"test_lammps_forces_continuous_at_table_ends", "test_run_cp2k_xtb_nve",
              "test_run_cp2k_xtb_langevin_heavy_hydrogen", "test_run_cp2k_failure_reports_output"}
#: modules that drive LAMMPS, CP2K or whole runs throughout
SLOW_MODULES = {"test_lammps", "test_validation_suite", "test_cli", "test_simulate"}


#: engines the fast tier must not run (asking a binary for -h or --version is not a run)
ENGINE_PROGRAMS = ("cp2k", "lmp", "mpirun", "mpiexec")


@pytest.fixture(autouse=True)
def _fast_tier_runs_no_engine(request, monkeypatch):
    """A test of the fast tier that starts CP2K, LAMMPS or MPI fails: the README says the
    tier runs none (mark such a test slow)."""
    if request.node.get_closest_marker("slow"):
        return
    import subprocess

    popen = subprocess.Popen

    def guarded(args, *a, **kw):
        argv = [str(x) for x in ([args] if isinstance(args, (str, os.PathLike)) else args)]
        program = Path(argv[0].split()[0]).name if argv else ""
        if program.startswith(ENGINE_PROGRAMS) and argv[1:] not in (["-h"], ["--version"]):
            raise AssertionError(f"a fast-tier test ran {' '.join(argv)}: mark it slow")
        return popen(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", guarded)


def pytest_collection_modifyitems(config, items):
    """Two tiers: `pytest -m "not slow"` during development (under a minute), all in CI."""
    for item in items:
        if (SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.module.__name__ in SLOW_MODULES
                or item.originalname in SLOW_TESTS):
            item.add_marker(pytest.mark.slow)


ROOT = Path(__file__).resolve().parents[1]


def validation_script(name):
    """A validation/ script as a module (they are not a package): the studies' formatters
    and constructions that tests compare with or reuse."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "validation" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # numba's cached kernels find their module by name
    spec.loader.exec_module(module)
    return module


#: what Python, numba and pytest write for themselves
_CACHES = {"__pycache__", ".pytest_cache", ".git"}


def tree_snapshot(root: Path) -> dict:
    """{relative path: (size, mtime)} of every file under root, caches and egg-info left out."""
    files = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _CACHES and not d.endswith(".egg-info")]
        for name in names:
            path = Path(folder) / name
            st = path.lstat()
            files[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return files


def tree_changes(before: dict, after: dict) -> list[str]:
    """Files added, removed or rewritten between two snapshots."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def pytest_sessionstart(session):
    session.config._tree_before = tree_snapshot(ROOT)


def pytest_sessionfinish(session, exitstatus):
    """Tests write only under their temporary folders: a file of the repository added,
    removed or changed during the run fails it."""
    before = getattr(session.config, "_tree_before", None)
    if before is None or getattr(session.config.option, "collectonly", False):
        return
    changed = tree_changes(before, tree_snapshot(ROOT))
    if changed:
        print(f"\nthe tests wrote into the repository (use tmp_path): {', '.join(changed[:10])}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
