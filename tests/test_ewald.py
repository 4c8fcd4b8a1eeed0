"""The Ewald reference of the point-charge term: OpenMM's Ewald sum, the energy's gradient,
independence from the splitting, and the intramolecular exclusions."""

import numpy as np
import openmm as mm
import pytest

from openmm_learning.losses import ewald


@pytest.fixture(scope="module")
def frame(spcfw):
    run, system = spcfw
    return run.positions[120], run.box_nm[120], system


def unit_forces(frame, r_cut=0.6, tolerance=ewald.DEFAULT_TOLERANCE, positions=None):
    x, box, system = frame
    return ewald.unit_charge_forces(x if positions is None else positions, box, system.species,
                                    system.molecules, system.molecule_id, r_cut, tolerance)


def openmm_ewald(frame, exclude=True):
    x, box, system = frame
    s = mm.System()
    s.setDefaultPeriodicBoxVectors(*(mm.Vec3(*(box * v)) for v in np.eye(3)))
    nb = mm.NonbondedForce()
    nb.setNonbondedMethod(mm.NonbondedForce.Ewald)
    nb.setCutoffDistance(0.6)
    nb.setEwaldErrorTolerance(1e-7)
    for code in system.species:
        s.addParticle(1.0)
        nb.addParticle(ewald.UNIT_CHARGES[code], 1.0, 0.0)
    if exclude:
        for o, h1, h2 in system.molecules:
            for i, j in ((o, h1), (o, h2), (h1, h2)):
                nb.addException(int(i), int(j), 0.0, 1.0, 0.0)
    s.addForce(nb)
    ctx = mm.Context(s, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(x)
    state = ctx.getState(getForces=True, getEnergy=True)
    return state.getForces(asNumpy=True)._value, state.getPotentialEnergy()._value


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_ewald_forces_and_energy_equal_openmm_ewald(frame):
    f, e = unit_forces(frame)
    f_omm, e_omm = openmm_ewald(frame)
    assert rel(f, f_omm) < 1e-6
    assert abs(e.sum() - e_omm) < 1e-6 * abs(e_omm)
    # planted: without the intramolecular exclusions the forces are a different term
    f_all, _ = openmm_ewald(frame, exclude=False)
    assert rel(f, f_all) > 0.1


def test_ewald_forces_are_the_energy_gradient(frame):
    """(tolerance 1e-12: the energy jump of a pair crossing the real-space cutoff is then
    far below the finite difference's resolution)"""
    x, _, _ = frame
    f, _ = unit_forces(frame, tolerance=1e-12)
    d = np.random.default_rng(1).normal(size=x.shape)
    d /= np.linalg.norm(d)
    eps = 1e-5
    e_plus = unit_forces(frame, tolerance=1e-12, positions=x + eps * d)[1].sum()
    e_minus = unit_forces(frame, tolerance=1e-12, positions=x - eps * d)[1].sum()
    assert abs(-(e_plus - e_minus) / (2 * eps) - np.sum(f * d)) < 1e-6 * np.linalg.norm(f)


def test_ewald_does_not_depend_on_the_splitting(frame):
    """A shorter real-space cutoff moves work to reciprocal space; the sum stays the same,
    and it conserves momentum (a neutral box: forces sum to zero)."""
    f, _ = unit_forces(frame)
    f_short, _ = unit_forces(frame, r_cut=0.45, tolerance=1e-10)
    assert rel(f_short, f) < 1e-7
    assert np.linalg.norm(f.sum(axis=0)) < 1e-8 * np.linalg.norm(f)
    with pytest.raises(ValueError, match="twice"):
        unit_forces(frame, r_cut=0.7)
