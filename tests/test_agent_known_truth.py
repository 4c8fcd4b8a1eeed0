"""A known truth for agent dynamics (validation/agent_known_truth.py says it whole): with
every O-H coupling acting on O with weight 1 + D and on H with 1 - D, agent dynamics is
Hamiltonian dynamics of U = (O-H terms) + (O-O terms)/(1 + D) + (H-H terms)/(1 - D) with
masses m_O/(1 + D) and m_H/(1 - D), and conserves K_O/(1 + D) + K_H/(1 - D) + U.

Here the agent System and the learning integrator (NVE) must retrace the trajectory of
that conservative System under velocity Verlet; an asymmetry that depends on r (planted)
has no such Hamiltonian and must not. Retracing the trajectory implies the temperature
ratio T_O/T_H = (1 + D)/(1 - D). In learned water the ratio itself scatters by 1-3 % over
5 ps of NVE at 64 and 512 waters (the slow exchange between molecular translation and
internal vibration; the study measures it over long runs,
validation/results/agent-known-truth.json), so the ratio is tested to 2 % on a carrier
that mixes fast (below); a distance-dependent asymmetry (planted) misses it.
"""

import numpy as np
import openmm as mm
import pytest

from openmm_learning.openmm.integrator import LearningIntegrator
from conftest import validation_script
from openmm_learning.units import KB_KJMOL_K

study = validation_script("agent_known_truth")

D = 0.1
STEPS = 200


def velocity_verlet(dt_ps):
    """OpenMM's own velocity Verlet (its VerletIntegrator is leapfrog: velocities half a
    step behind, another trajectory from the same start)."""
    integrator = mm.CustomIntegrator(dt_ps)
    integrator.addUpdateContextState()
    integrator.addComputePerDof("v", "v + 0.5*dt*f/m")
    integrator.addComputePerDof("x", "x + dt*v")
    integrator.addComputePerDof("v", "v + 0.5*dt*f/m")
    return integrator


def run_both(xtb, reciprocal, d, planted=None):
    """Both Systems from one CP2K frame with velocities at 300 K, STEPS of 0.5 fs on the
    Reference platform: positions of both, and the pseudo-Hamiltonian along the agent run."""
    run, system = xtb
    species = system.species
    agent_system, pseudo_system = study.constant_asymmetry_systems(reciprocal, species, system.molecules,
                                                             run.box_nm[-1], d, planted)
    masses = np.array([agent_system.getParticleMass(i)._value for i in range(len(species))])
    v = np.random.default_rng(3).normal(size=(len(species), 3)) * np.sqrt(KB_KJMOL_K * 300.0 / masses)[:, None]
    reference = mm.Platform.getPlatformByName("Reference")
    agent = mm.Context(agent_system, LearningIntegrator(300.0, 0.0005, agent_species=species, thermostat="none"),
                       reference)
    pseudo = mm.Context(pseudo_system, velocity_verlet(0.0005), reference)
    # the energy of U along the agent run, from a copy of the pseudo System
    energy = mm.Context(pseudo_system, mm.VerletIntegrator(0.0005), reference)
    for c in (agent, pseudo):
        c.setPositions(run.positions[-1])
        c.setVelocities(v)
    h_tilde = []
    for _ in range(STEPS // 10):
        state = agent.getState(getPositions=True, getVelocities=True)
        h_tilde.append(study.pseudo_hamiltonian(energy, state, masses, species, d))
        agent.getIntegrator().step(10)
    pseudo.getIntegrator().step(STEPS)
    x = [c.getState(getPositions=True).getPositions(asNumpy=True)._value for c in (agent, pseudo)]
    return x[0], x[1], np.array(h_tilde)


def test_constant_asymmetry_is_hamiltonian_dynamics(xtb, xtb_models):
    """Agent dynamics with constant D retraces the pseudo-Hamiltonian system's trajectory
    (100 fs, 64 waters) and conserves its pseudo-Hamiltonian to Verlet's fluctuation."""
    x_agent, x_pseudo, h_tilde = run_both(xtb, xtb_models["reciprocal"], D)
    assert np.max(np.abs(x_agent - x_pseudo)) < 1e-9
    # Verlet's energy fluctuates at 0.5 fs by about 1 kJ/mol here; the kinetic energy
    # alone moves by hundreds
    assert np.ptp(h_tilde) < 5.0


@pytest.mark.parametrize("amplitude", [0.5, 0.05])
def test_r_dependent_asymmetry_is_not(xtb, xtb_models, amplitude):
    """Planted: the O view of the O-H pair weighted by 1 + a (r - 0.3 nm)/0.3 nm on top
    (a = 0.5, and a subtle 0.05): no pseudo-Hamiltonian system retraces it."""
    x_agent, x_pseudo, _ = run_both(xtb, xtb_models["reciprocal"], D,
                                    planted=lambda c: c.values * (1 + amplitude * (c.grid - 0.3) / 0.3))
    assert np.max(np.abs(x_agent - x_pseudo)) > 1e-6


# --------------------------------------------------------------------------- the temperature ratio
# A carrier that mixes fast: a Lennard-Jones fluid of 64 "O" and 128 "H" atoms of equal
# mass (water's 1:2, no bonds: no slow exchange between kinds of motion, no stiff mode for
# Verlet to under-read). Weighting its forces by 1 + D on O and 1 - D on H is Hamiltonian
# dynamics of the same energy with masses m/(1 + D) and m/(1 - D): T_O/T_H = (1 + D)/(1 - D).
# Five seeds of 90 ps gave 1.2244 +- 0.0024 (predicted 1.2222); runs of 60 ps 1.218-1.230.
LJ_BOX_NM, LJ_MASS, LJ_DT = 1.8, 4.0, 0.002
LJ_SPECIES = np.array([0, 1, 1] * 64)


def lj_fluid(antisymmetric):
    """The fluid's System: LJ in the shared group, `antisymmetric(nb)` (a force) in the other."""
    import copy

    from openmm_learning.openmm.forces import ANTISYMMETRIC_GROUP, SHARED_GROUP

    system = mm.System()
    system.setDefaultPeriodicBoxVectors(*(mm.Vec3(*(LJ_BOX_NM * e)) for e in np.eye(3)))
    nb = mm.NonbondedForce()
    nb.setNonbondedMethod(mm.NonbondedForce.CutoffPeriodic)
    nb.setCutoffDistance(0.6)
    for s in LJ_SPECIES:
        system.addParticle(LJ_MASS)
        nb.addParticle(0.0, 0.3 if s == 0 else 0.2, 0.65 if s == 0 else 0.3)
    nb.setForceGroup(SHARED_GROUP)
    twin = antisymmetric(copy.deepcopy(nb))
    twin.setForceGroup(ANTISYMMETRIC_GROUP)
    system.addForce(nb)
    system.addForce(twin)
    return system


def constant_weight(d):
    def scale(nb):
        for i in range(nb.getNumParticles()):
            q, sigma, eps = nb.getParticleParameters(i)
            nb.setParticleParameters(i, q, sigma, eps * d)
        return nb
    return scale


def r_dependent_weight(d, a):
    """Planted: the antisymmetric part weighted by d (1 + a (r - 0.3 nm)/0.3 nm)."""
    def replace(nb):
        f = mm.CustomNonbondedForce(f"{d}*(1 + {a}*(r - 0.3)/0.3)*4*eps*((sig/r)^12 - (sig/r)^6); "
                                    "sig = 0.5*(sig1 + sig2); eps = sqrt(eps1*eps2)")
        f.addPerParticleParameter("sig")
        f.addPerParticleParameter("eps")
        f.setNonbondedMethod(mm.CustomNonbondedForce.CutoffPeriodic)
        f.setCutoffDistance(0.6)
        for i in range(nb.getNumParticles()):
            _, sigma, eps = nb.getParticleParameters(i)
            f.addParticle([sigma, eps])
        return f
    return replace


def lj_nve(system, ps, seed=1):
    """Melted at 300 K, velocities drawn at 300 K for both species, then NVE agent dynamics
    (the learning integrator): per 40 fs, T_O, T_H and K_O/(1 + D) + K_H/(1 - D) + U."""
    from openmm_learning.openmm.forces import SHARED_GROUP

    rng = np.random.default_rng(seed)
    k = 6
    grid = (np.indices((k, k, k)).reshape(3, -1).T + 0.5) * LJ_BOX_NM / k
    cpu = mm.Platform.getPlatformByName("CPU")
    melt = mm.Context(lj_fluid(constant_weight(0.0)), mm.LangevinMiddleIntegrator(300, 5, LJ_DT), cpu)
    melt.setPositions(grid[rng.permutation(len(grid))[:len(LJ_SPECIES)]])
    mm.LocalEnergyMinimizer.minimize(melt)
    melt.setVelocitiesToTemperature(300, seed)
    melt.getIntegrator().step(500)
    integrator = LearningIntegrator(300.0, LJ_DT, agent_species=LJ_SPECIES, thermostat="none")
    context = mm.Context(system, integrator, cpu)
    context.setPositions(melt.getState(getPositions=True).getPositions())
    context.setVelocitiesToTemperature(300, seed + 100)
    o = LJ_SPECIES == 0
    rows = []
    for _ in range(int(round(ps / LJ_DT)) // 20):
        integrator.step(20)
        state = context.getState(getVelocities=True, getEnergy=True, groups={SHARED_GROUP})
        twice_kinetic = LJ_MASS * np.sum(state.getVelocities(asNumpy=True)._value ** 2, axis=1)
        rows.append((twice_kinetic[o].mean() / (3 * KB_KJMOL_K), twice_kinetic[~o].mean() / (3 * KB_KJMOL_K),
                     0.5 * (twice_kinetic[o].sum() / (1 + D) + twice_kinetic[~o].sum() / (1 - D))
                     + state.getPotentialEnergy()._value))
    return np.array(rows)


def late_ratio(rows, after_ps=4.0):
    late = np.arange(len(rows)) * 20 * LJ_DT >= after_ps
    return rows[late, 0].mean() / rows[late, 1].mean()


@pytest.mark.slow
def test_constant_asymmetry_gives_the_predicted_temperature_ratio():
    """Both species' velocities are drawn at 300 K; the learning integrator's agent dynamics
    alone moves them to T_O/T_H = (1 + D)/(1 - D) (within 2 %, after 4 ps; it gets there
    within a fraction of a ps) and conserves its pseudo-Hamiltonian (no drift beyond
    Verlet's fluctuation)."""
    rows = lj_nve(lj_fluid(constant_weight(D)), 64.0)
    ratio = late_ratio(rows)
    print(f"T_O/T_H {ratio:.4f} (predicted {(1 + D) / (1 - D):.4f})")
    assert ratio == pytest.approx((1 + D) / (1 - D), rel=0.02)
    drift = np.polyfit(np.arange(len(rows)) * 20 * LJ_DT, rows[:, 2], 1)[0]
    assert abs(drift) < 0.1, drift  # kJ/mol/ps; the kinetic energy alone moves by hundreds


@pytest.mark.slow
def test_r_dependent_asymmetry_misses_the_ratio():
    """Planted: the antisymmetric part weighted by 1 + 2 (r - 0.3 nm)/0.3 nm, an asymmetry
    that depends on distance: no pseudo-Hamiltonian, and T_O/T_H ends more than 2 % from
    (1 + D)/(1 - D) (about 10 % low over 8 ps; a weight of 1 + 0.5 (...) about 4 %, which
    one such run does not always tell from 2 %)."""
    ratio = late_ratio(lj_nve(lj_fluid(r_dependent_weight(D, 2.0)), 12.0))
    assert ratio != pytest.approx((1 + D) / (1 - D), rel=0.02), ratio
