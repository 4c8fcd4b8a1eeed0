"""The deficit study's three-body coupling (validation/deficit_study.py): the design
columns the fit uses are the forces of the energy OpenMM runs, and that energy is the one
the study's docstring writes (checked by finite differences, independently of OpenMM)."""

import numpy as np
import openmm as mm
import pytest

from conftest import validation_script
from openmm_learning.io.water_run import example_run_dir, load_water_run

study = validation_script("deficit_study")


@pytest.fixture(scope="module")
def frame():
    run, water = load_water_run(example_run_dir("water64-xtb-langevin-300K"))
    return run.positions[700], run.box_nm[700], water


def coefficients(seed=0):
    n = len(study.CENTRES_NM)
    return np.random.default_rng(seed).normal(size=n * len(study.POWERS)) * np.r_[np.full(n, 500.0),
                                                                                   np.full(n, 5e4)]


def openmm_forces(force, positions, box):
    system = mm.System()
    for _ in positions:
        system.addParticle(1.0)
    system.setDefaultPeriodicBoxVectors(*[mm.Vec3(*row) for row in np.diag(box)])
    system.addForce(force)
    context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context.getState(getForces=True).getForces(asNumpy=True)._value


def energy(c, positions, box, water):
    """The coupling's energy as the docstring writes it, in numpy."""
    n = len(study.CENTRES_NM)
    total = 0.0
    for m, (o, h1, h2) in enumerate(water.molecules):
        for h in (h1, h2):
            d = positions[h] - positions[o]
            r = np.linalg.norm(d - box * np.rint(d / box))
            for m2, (a, _, _) in enumerate(water.molecules):
                e = positions[h] - positions[a]
                s = np.linalg.norm(e - box * np.rint(e / box))
                if m2 == m or s >= study.S_MAX_NM:
                    continue
                for p, k in enumerate(study.POWERS):
                    for q, centre in enumerate(study.CENTRES_NM):
                        b = study._bspline((s - centre) / study.WIDTH_NM)[0]
                        total += c[p * n + q] * (r - study.R0_NM) ** k * b
    return total


def test_openmm_runs_the_energy_whose_forces_the_fit_uses(frame):
    positions, box, water = frame
    c = coefficients()
    columns = study.coupling_columns(water)(positions, box) @ c
    assert np.abs(columns).max() > 100.0  # the frame has hydrogen bonds in range
    got = openmm_forces(study.coupling_force(c, water.molecules), positions, box).reshape(-1)
    assert np.sqrt(np.mean((got - columns) ** 2) / np.mean(columns ** 2)) < 1e-9
    # planted: 5 % of one power's coefficients changed is seen
    planted = c.copy()
    planted[len(study.CENTRES_NM):] *= 1.05
    moved = openmm_forces(study.coupling_force(planted, water.molecules), positions, box).reshape(-1)
    assert np.sqrt(np.mean((moved - columns) ** 2) / np.mean(columns ** 2)) > 1e-3


def test_the_columns_are_minus_the_gradient_of_the_written_energy(frame):
    positions, box, water = frame
    c = coefficients(1)
    forces = (study.coupling_columns(water)(positions, box) @ c).reshape(-1, 3)
    atoms = np.argsort(-np.abs(forces).max(axis=1))[:4]  # where the coupling acts most
    step = 1e-6
    for atom in atoms:
        for x in range(3):
            plus, minus = positions.copy(), positions.copy()
            plus[atom, x] += step
            minus[atom, x] -= step
            numeric = -(energy(c, plus, box, water) - energy(c, minus, box, water)) / (2 * step)
            assert numeric == pytest.approx(forces[atom, x], rel=1e-5, abs=1e-3)
