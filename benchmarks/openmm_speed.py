"""OpenMM cost per step of the learned models against SPC/Fw in OpenMM and CP2K itself.

All OpenMM numbers are measured in this run on this machine, on the same 64-water box;
CP2K's comes from the UsedTime column of the bundled run (same kind of machine, 2 cores).
Also: the numba reference evaluator against OpenMM's own force evaluation.

    python benchmarks/openmm_speed.py [--steps 2000] [--platform CPU]
"""

import argparse
import time

import numpy as np
import openmm as mm

from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.losses.fit import fit_modes
from openmm_learning.openmm.forces import create_system
from openmm_learning.openmm.integrator import LearningIntegrator
from openmm_learning.openmm.spcfw import spcfw_system


def time_steps(system, integrator, positions, velocities, platform, steps):
    ctx = mm.Context(system, integrator, mm.Platform.getPlatformByName(platform))
    ctx.setPositions(positions)
    ctx.setVelocities(velocities)
    integrator.step(100)  # warm up
    t0 = time.perf_counter()
    integrator.step(steps)
    ctx.getState(getPositions=True)  # wait for the platform to finish
    return (time.perf_counter() - t0) / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--platform", default="CPU")
    args = ap.parse_args()
    run, water = load_water_run(example_run_dir())
    idx = np.arange(0, run.n_frames, 4)
    models = {m: r.model for m, r in fit_modes(run.positions[idx], run.forces[idx], run.box_nm[idx],
                                               water, progress=False).items()}
    x, v, box = run.positions[-1], run.velocities[-1], run.box_nm[-1]
    dt, T = run.settings.timestep_ps, run.settings.temperature_k
    n = len(water.species)
    rows = {}
    rows["SPC/Fw (NonbondedForce PME + harmonic)"] = time_steps(
        spcfw_system(n // 3, box), mm.VerletIntegrator(dt), x, v, args.platform, args.steps)
    for mode, model in models.items():
        integ = LearningIntegrator(T, dt, agent_species=water.species if mode == "agent" else None, n_atoms=n)
        rows[f"learned {mode} (LearningIntegrator)"] = time_steps(
            create_system(model, water.species, water.molecules, box), integ, x, v, args.platform, args.steps)
    rows["learned reciprocal (VerletIntegrator)"] = time_steps(
        create_system(models["reciprocal"], water.species, water.molecules, box), mm.VerletIntegrator(dt),
        x, v, args.platform, args.steps)
    base = rows["SPC/Fw (NonbondedForce PME + harmonic)"]
    cp2k = run.seconds_per_step()
    print(f"{'system':45s} {'ms/step':>9s} {'/ SPC/Fw':>9s} {'CP2K / this':>12s}")
    for name, s in rows.items():
        print(f"{name:45s} {1e3 * s:9.3f} {s / base:9.2f} {cp2k / s:12.0f}")
    print(f"{'CP2K GFN1-xTB (UsedTime median)':45s} {1e3 * cp2k:9.1f}")
    # numba reference evaluator against one OpenMM force evaluation
    model = models["agent"]
    model.forces(x, box, water.species, water.molecules)
    t0 = time.perf_counter()
    for _ in range(50):
        model.forces(x, box, water.species, water.molecules)
    t_numba = (time.perf_counter() - t0) / 50
    ctx = mm.Context(create_system(model, water.species, water.molecules, box), mm.VerletIntegrator(dt),
                     mm.Platform.getPlatformByName(args.platform))
    ctx.setPositions(x)
    ctx.getState(getForces=True)
    t0 = time.perf_counter()
    for k in range(50):
        ctx.setPositions(x + 1e-6 * k)
        ctx.getState(getForces=True)
    t_omm = (time.perf_counter() - t0) / 50
    print(f"agent forces of one frame: numba reference {1e3 * t_numba:.2f} ms, OpenMM {args.platform} "
          f"{1e3 * t_omm:.2f} ms, ratio numba/OpenMM {t_numba / t_omm:.2f}")


if __name__ == "__main__":
    main()
