"""OpenMM executes the model: its forces equal the numba reference evaluator's."""

import dataclasses

import numpy as np
import openmm as mm
import pytest

from openmm_learning.openmm.forces import ANTISYMMETRIC_GROUP, SHARED_GROUP, create_system
from tolerances import (OPENMM_CPU, OPENMM_CPU_SERIES, OPENMM_PME, OPENMM_REFERENCE, OPENMM_REFERENCE_SERIES,
                        PME_ERROR_TOLERANCE)
from openmm_learning.openmm.integrator import LearningIntegrator, agent_forces


TOLERANCE = {("spline", "Reference"): OPENMM_REFERENCE, ("spline", "CPU"): OPENMM_CPU,
             ("chebyshev", "Reference"): OPENMM_REFERENCE_SERIES, ("chebyshev", "CPU"): OPENMM_CPU_SERIES}


def assert_engine_forces(model, omm, run, system, platform, n_frames, tolerance, properties=None):
    """OpenMM's learning-dynamics forces on n_frames CP2K frames equal the numba reference's
    to `tolerance` (relative RMS); returns the last frame's (index, OpenMM forces, reference)."""
    context = mm.Context(omm, mm.VerletIntegrator(0.0005), mm.Platform.getPlatformByName(platform),
                         properties or {})
    for frame in np.linspace(0, run.n_frames - 1, n_frames).astype(int):
        context.setPositions(run.positions[frame])
        got = agent_forces(context, model.mode, system.species)
        want, _ = model.forces(run.positions[frame], run.box_nm[frame], system.species, system.molecules)
        rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        assert rel < tolerance, f"frame {frame}: relative force difference {rel:.2e}"
    return frame, got, want


@pytest.mark.parametrize("basis", ["spline", "chebyshev"])
@pytest.mark.parametrize("platform", ["Reference", "CPU"])
@pytest.mark.parametrize("mode", ["agent", "reciprocal"])
def test_openmm_forces_equal_reference_forces(xtb, xtb_models, xtb_compiled, mode, platform, basis):
    run, system = xtb
    model = (xtb_models if basis == "spline" else xtb_compiled)[mode]
    omm = create_system(model, system.species, system.molecules, run.box_nm[0])
    assert_engine_forces(model, omm, run, system, platform, 20, TOLERANCE[(basis, platform)])


@pytest.mark.parametrize("platform", ["CUDA", "OpenCL"])
@pytest.mark.parametrize("mode", ["agent", "reciprocal"])
def test_gpu_platforms_run_the_same_system(xtb, xtb_models, mode, platform):
    """The System that runs on the CPU runs on the GPU platforms, forces equal to the numba
    reference (double precision) with the model's charges. Skipped only where OpenMM has
    no such platform; a platform that is there but cannot run the System fails."""
    names = [mm.Platform.getPlatform(k).getName() for k in range(mm.Platform.getNumPlatforms())]
    if platform not in names:
        pytest.skip(f"OpenMM has no {platform} platform on this machine (no GPU or no driver); "
                    f"it has {', '.join(names)}")
    run, system = xtb
    model = dataclasses.replace(xtb_models[mode], charge_h=0.4)  # the PME path as well
    omm = create_system(model, system.species, system.molecules, run.box_nm[0], ewald_tolerance=PME_ERROR_TOLERANCE)
    assert_engine_forces(model, omm, run, system, platform, 5, OPENMM_PME, {"Precision": "double"})


def test_pair_forces_use_the_neighbour_list(xtb, xtb_models):
    """O(N) pair forces: one CustomNonbondedForce per force group, no interaction groups
    (OpenMM's CPU platform loops over all pairs of two groups), a per-particle species."""
    run, system = xtb
    for mode, groups in (("reciprocal", {0}), ("agent", {0, 1})):
        omm = create_system(xtb_models[mode], system.species, system.molecules, run.box_nm[0])
        pairs = [f for f in omm.getForces() if isinstance(f, mm.CustomNonbondedForce)]
        assert {f.getForceGroup() for f in pairs} == groups and len(pairs) == len(groups)
        assert all(f.getNumInteractionGroups() == 0 and f.getNumTabulatedFunctions() == 1 for f in pairs)


def test_joined_table_is_each_pair_function_exactly(xtb_models):
    """The joined table's natural spline equals each pair function's own on its interval;
    with the gaps left at zero (planted) the functions bend near their ends."""
    from scipy.interpolate import CubicSpline
    from openmm_learning.openmm import forces

    terms = [t for t in xtb_models["reciprocal"].terms() if t.invariant == "pair"]
    table, placement = forces._joined_table(terms)
    y = np.array(table.getFunctionParameters()[0])
    x = np.linspace(0, table.getFunctionParameters()[2], len(y))
    for gaps_filled in (True, False):
        if not gaps_filled:
            known = np.zeros(len(y), bool)
            for t in terms:
                scale, off = placement[tuple(sorted(t.species))]
                k0 = int(round((t.function.x0 * scale + off) / (x[1] - x[0])))
                known[k0:k0 + t.function.n] = True
            y = np.where(known, y, 0.0)
        joined = CubicSpline(x, y, bc_type="natural")
        worst = 0.0
        for t in terms:
            scale, off = placement[tuple(sorted(t.species))]
            r = np.linspace(t.lower, t.function.x1, 500)
            own = CubicSpline(t.function.grid, t.function.values, bc_type="natural")(r)
            worst = max(worst, np.max(np.abs(joined(r * scale + off) - own)) / np.max(np.abs(own)))
        assert (worst < 1e-10) if gaps_filled else (worst > 1e-4), (gaps_filled, worst)


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
@pytest.mark.parametrize("mode", ["agent", "reciprocal"])
def test_openmm_forces_with_point_charges(spcfw, spcfw_charged, mode, platform):
    """Charges run as PME on every atom (agent mode too): equal to the numba Ewald reference
    to PME's accuracy; without the charge force the difference is large (planted)."""
    run, system = spcfw
    model = spcfw_charged[mode].model
    omm = create_system(model, system.species, system.molecules, run.box_nm[0], ewald_tolerance=PME_ERROR_TOLERANCE)
    assert sum(isinstance(omm.getForce(k), mm.NonbondedForce) for k in range(omm.getNumForces())) == 1
    frame, got, want = assert_engine_forces(model, omm, run, system, platform, 5, OPENMM_PME)
    bare = dataclasses.replace(model, charge_h=None)  # the same splines without their charges
    bare, _ = bare.forces(run.positions[frame], run.box_nm[frame], system.species, system.molecules)
    assert np.linalg.norm(got - bare) / np.linalg.norm(want) > 0.1


def test_reciprocal_energy_is_the_sum_of_agent_losses(xtb, xtb_models):
    """In reciprocal mode the OpenMM energy is the potential whose gradient is the force."""
    run, system = xtb
    model = xtb_models["reciprocal"]
    omm = create_system(model, system.species, system.molecules, run.box_nm[0])
    context = mm.Context(omm, mm.VerletIntegrator(0.0005), mm.Platform.getPlatformByName("Reference"))
    x = run.positions[100].copy()
    f, _ = model.forces(x, run.box_nm[100], system.species, system.molecules)
    # finite difference of the OpenMM energy along the force direction
    d = f / np.linalg.norm(f)
    e = []
    for s in (-1e-5, 1e-5):
        context.setPositions(x + s * d)
        e.append(context.getState(getEnergy=True).getPotentialEnergy()._value)
    np.testing.assert_allclose(-(e[1] - e[0]) / 2e-5, np.sum(f * d), rtol=1e-4)


def test_agent_mode_is_non_reciprocal(xtb, xtb_models):
    run, system = xtb
    f, _ = xtb_models["agent"].forces(run.positions[0], run.box_nm[0], system.species, system.molecules)
    fr, _ = xtb_models["reciprocal"].forces(run.positions[0], run.box_nm[0], system.species, system.molecules)
    assert np.linalg.norm(f.sum(axis=0)) > 1.0  # agent forces do not cancel
    assert np.linalg.norm(fr.sum(axis=0)) < 1e-6 * np.abs(fr).sum()


@pytest.mark.parametrize("basis", ["spline", "chebyshev"])
def test_asymmetry_range_ends_the_remainder(xtb, xtb_models, xtb_compiled, basis):
    """An agent model's pair remainder D = (view_O - view_H)/2 is the fitted one within
    r_a - ASYMMETRY_SWITCH_NM and exactly 0 from r_a on (a switch between), so OpenMM runs
    it with cutoff r_a, equal to the numba reference; planted: without the range, D is not
    0 there."""
    from openmm_learning.losses.model import ASYMMETRY_RANGE_NM, ASYMMETRY_SWITCH_NM
    from openmm_learning.losses.terms import split_agent_terms

    run, system = xtb
    model = (xtb_models if basis == "spline" else xtb_compiled)["agent"]
    r_a = model.asymmetry_range
    assert r_a == ASYMMETRY_RANGE_NM  # FitSettings' default, kept by the compiled model
    whole = dataclasses.replace(model, asymmetry_range=None)
    d_range = next(t for t in split_agent_terms(model)[1] if t.invariant == "pair")
    d_whole = next(t for t in split_agent_terms(whole)[1] if t.invariant == "pair")
    inside = np.linspace(d_range.lower, r_a - ASYMMETRY_SWITCH_NM, 50)
    beyond = np.linspace(r_a, model.r_cut, 50)
    np.testing.assert_allclose(d_range.energy(inside)[1], d_whole.energy(inside)[1], rtol=1e-12, atol=1e-12)
    assert np.all(d_range.energy(beyond)[1] == 0.0) and np.all(d_range.energy(beyond)[0] == 0.0)
    assert np.abs(d_whole.energy(beyond)[1]).max() > 1e-3  # planted: the free agents' views differ there
    omm = create_system(model, system.species, system.molecules, run.box_nm[0])
    cutoffs = {f.getForceGroup(): f.getCutoffDistance()._value for f in omm.getForces()
               if isinstance(f, mm.CustomNonbondedForce)}
    assert cutoffs == {SHARED_GROUP: model.r_cut, ANTISYMMETRIC_GROUP: r_a}
    tolerance = OPENMM_REFERENCE if basis == "spline" else OPENMM_REFERENCE_SERIES
    assert_engine_forces(model, omm, run, system, "Reference", 2, tolerance)
    # the model's forces are its two parts, and the range changes them only a little
    x, box = run.positions[0], run.box_nm[0]
    f = model.forces(x, box, system.species, system.molecules)[0]
    parts = [p.forces(x, box, system.species, system.molecules)[0]
             for p in (model.symmetric_part(), model.antisymmetric_part())]
    np.testing.assert_allclose(f, parts[0] + parts[1], rtol=0, atol=1e-9)
    f_whole = whole.forces(x, box, system.species, system.molecules)[0]
    # (1.4 % for these free agents; the default penalised fit: 0.05 % more held-out error)
    assert 0 < np.sqrt(np.mean((f - f_whole) ** 2)) < 0.05 * np.sqrt(np.mean(f_whole ** 2))


def test_box_smaller_than_cutoff_is_refused(xtb, xtb_models):
    run, system = xtb
    with pytest.raises(ValueError, match="twice the model cutoff"):
        create_system(xtb_models["agent"], system.species, system.molecules, [0.9, 0.9, 0.9])
    box = run.box_nm[-1]
    assert create_system(xtb_models["agent"], system.species, system.molecules, np.diag(box)).getNumParticles() == 192
    for bad in (np.ones((3, 3)) + np.diag(box), [box[0], box[1]], [box[0], box[1], np.nan]):
        with pytest.raises(ValueError, match="edge lengths"):
            create_system(xtb_models["agent"], system.species, system.molecules, bad)


@pytest.mark.parametrize("mode", ["agent", "reciprocal"])
def test_integrator_holds_temperature_and_removes_com(xtb, xtb_models, mode):
    run, system = xtb
    model = xtb_models[mode]
    omm = create_system(model, system.species, system.molecules, run.box_nm[-1])
    # the free agents pump in ~2000 kJ/mol/ps, more than CSVR's 50 fs removes at 300 K (they
    # run ~50 K hot under it, validation/README.md); the Nose-Hoover integral controller holds them
    integ = LearningIntegrator(300.0, 0.0005, agent_species=system.species if mode == "agent" else None,
                               n_atoms=len(system.species), thermostat="nose-hoover" if mode == "agent" else "csvr")
    context = mm.Context(omm, integ, mm.Platform.getPlatformByName("CPU"))
    context.setPositions(run.positions[-1])
    context.setVelocities(run.velocities[-1])
    temps = []
    for _ in range(30):
        integ.step(100)
        temps.append(integ.getGlobalVariableByName("ke2") / (integ.n_dof * 0.00831446261815324))
    assert 260 < np.mean(temps[10:]) < 345
    masses = np.array([omm.getParticleMass(i)._value for i in range(omm.getNumParticles())])

    def momentum(ctx):
        v = ctx.getState(getVelocities=True).getVelocities(asNumpy=True)._value
        return np.linalg.norm((masses[:, None] * v).sum(axis=0))

    # the System's CMMotionRemover zeroes the momentum at the start of each step: what is
    # left is at most the last step's impulse of the net force, never an accumulation
    one_step = 0.0005 * np.linalg.norm(integ.net_force(context))
    assert momentum(context) < 2 * one_step + 1e-6
    if mode == "agent":
        # non-reciprocal forces pump energy in, the thermostat takes it out
        assert integ.getGlobalVariableByName("heat") > 0
        assert one_step > 0
        # planted: without the remover the net force builds momentum step after step
        bare = create_system(model, system.species, system.molecules, run.box_nm[-1])
        bare.removeForce(next(i for i, f in enumerate(bare.getForces()) if isinstance(f, mm.CMMotionRemover)))
        integ = LearningIntegrator(300.0, 0.0005, agent_species=system.species, thermostat="nose-hoover")
        context = mm.Context(bare, integ, mm.Platform.getPlatformByName("CPU"))
        context.setPositions(run.positions[-1])
        context.setVelocities(run.velocities[-1])
        integ.step(200)
        assert momentum(context) > 20 * one_step


@pytest.mark.slow
def test_csvr_is_canonical_and_its_heat_closes_the_energy(spcfw):
    """CSVR (CP2K's thermostat) in the learning integrator, on SPC/Fw: the mean temperature
    is the target, its spread the canonical sqrt(2/N_dof) T, and the kinetic + potential
    energy plus the heat the thermostat took out stays constant (the effective energy)."""
    from openmm import unit

    from openmm_learning.openmm.spcfw import spcfw_system
    from openmm_learning.units import KB_KJMOL_K

    run, water = spcfw
    integ = LearningIntegrator(300.0, 0.0005, 0.05, n_atoms=192, thermostat="csvr", seed=5)
    ctx = mm.Context(spcfw_system(64, run.box_nm[-1]), integ, mm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(run.positions[-1])
    ctx.setVelocities(run.velocities[-1])
    temps, effective = [], []
    for _ in range(1000):
        integ.step(20)
        state = ctx.getState(getEnergy=True)
        ke = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        pe = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        temps.append(2 * ke / (integ.n_dof * KB_KJMOL_K))
        effective.append(ke + pe + integ.getGlobalVariableByName("heat"))
    temps = np.array(temps[200:])
    canonical = 300.0 * np.sqrt(2.0 / integ.n_dof)
    assert abs(temps.mean() - 300.0) < 3.0
    assert 0.85 < temps.std() / canonical < 1.15
    drift = np.polyfit(np.arange(len(effective)) * 0.01, effective, 1)[0]  # kJ/mol per ps
    assert abs(drift) < 0.5 and np.std(effective) < 2.0
    with pytest.raises(ValueError, match="csvr"):
        LearningIntegrator(300.0, 0.0005, n_atoms=192, thermostat="berendsen")


def test_compiled_agent_model_without_asymmetry_is_its_reciprocal_model(xtb, xtb_compiled):
    """An agent model whose views agree (its remainder's series all zero) builds and applies
    the reciprocal model's forces. The series' conversion to monomials once dropped the
    zero coefficients and failed to build such a System."""
    run, system = xtb
    reciprocal = xtb_compiled["reciprocal"]
    agent = dataclasses.replace(reciprocal, mode="agent")
    forces = []
    for model in (agent, reciprocal):
        omm = create_system(model, system.species, system.molecules, run.box_nm[0])
        context = mm.Context(omm, mm.VerletIntegrator(0.0005), mm.Platform.getPlatformByName("Reference"))
        context.setPositions(run.positions[0])
        forces.append(agent_forces(context, model.mode, system.species))
    np.testing.assert_allclose(forces[0], forces[1], atol=1e-6 * np.abs(forces[1]).max())
