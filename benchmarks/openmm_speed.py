"""OpenMM cost per step of the learned models against SPC/Fw with PME, 64 to 32768 waters.

The bundled 64-water CP2K frame is replicated to 1, 2, 4 and 8 boxes a side (64, 512,
4096 and 32768 waters). For each box, measured in this run on this machine: SPC/Fw (PME,
Verlet) as the baseline, the learned reciprocal model (Verlet and the learning
integrator) and the learned agent model (learning integrator), each as `fit` writes it
by default (Chebyshev series; the agent model with its asymmetry range, also without
it: the antisymmetric remainder then evaluated over the whole cutoff) and as its fitted
splines (`fit --basis spline`), all with the models' point charges (PME), timed
interleaved (seconds_per_step). Printed: ms per step, microseconds per atom-step, the
ratio to SPC/Fw and ns/day at the bundled run's timestep; then CP2K's own cost per step
for 64 waters (UsedTime of the bundled run), the numba reference evaluator against one
OpenMM force evaluation, and the compiled agent model's held-out force error with and
without its asymmetry range.

    python benchmarks/openmm_speed.py [--waters 64 512 4096 32768] [--platform CPU] [--seconds 3]

On a GPU machine: --platform CUDA (or OpenCL) --waters 4096 32768.
"""

import argparse
import dataclasses
import os
import platform as host
import time

import numpy as np
import openmm as mm

from openmm_learning.io.topology import WaterSystem
from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.losses.fit import FitSettings, chebyshev_model, fit_modes, force_errors
from openmm_learning.openmm.forces import create_system
from openmm_learning.openmm.integrator import LearningIntegrator
from openmm_learning.openmm.spcfw import spcfw_system


def seconds_per_step(rows, positions, velocities, platform, seconds, rounds=10):
    """Wall time of one step of each row {name: (system, integrator)}: 10 steps of warm-up,
    then `rounds` rounds that each run one batch (about seconds/rounds) of every row in
    turn; per row the fastest batch's time per step. Whatever else the machine runs only
    slows a batch down, and it comes and goes over seconds: interleaved, every row meets
    the same quiet moments (one row after another, SPC/Fw at 4096 waters read 11.6 to
    16.5 ms within one afternoon, which moved every ratio by a third)."""
    contexts, batch, best = {}, {}, {}
    for name, (system, integrator) in rows.items():
        ctx = mm.Context(system, integrator, mm.Platform.getPlatformByName(platform))
        ctx.setPositions(positions)
        ctx.setVelocities(velocities)
        t0 = time.perf_counter()
        integrator.step(10)
        ctx.getState(getEnergy=True)
        contexts[name] = ctx
        batch[name] = max(1, int(seconds / rounds / ((time.perf_counter() - t0) / 10)))
        best[name] = np.inf
    for _ in range(rounds):
        for name, ctx in contexts.items():
            t1 = time.perf_counter()
            ctx.getIntegrator().step(batch[name])
            ctx.getState(getPositions=True)  # wait for the platform to finish
            best[name] = min(best[name], (time.perf_counter() - t1) / batch[name])
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--waters", type=int, nargs="+", default=[64, 512, 4096, 32768])
    ap.add_argument("--platform", default="CPU")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed wall time per row (after warm-up)")
    args = ap.parse_args()
    run, water = load_water_run(example_run_dir())
    idx = np.arange(0, run.n_frames, 4)
    # the default fit as its splines (fit --basis spline) and compiled as `fit` writes it:
    # agent models with their asymmetry range (and without it, below)
    fits = fit_modes(run.positions[idx], run.forces[idx], run.box_nm[idx], water, progress=False,
                     settings=FitSettings(basis="spline"))
    splines = {m: r.model for m, r in fits.items()}
    models = {"spline": splines, "chebyshev": {m: chebyshev_model(model, run.positions[idx], run.box_nm[idx], water)
                                               for m, model in splines.items()}}
    # the same compiled agent model with its asymmetry over the whole cutoff (fit --asymmetry-range 0)
    whole = dataclasses.replace(models["chebyshev"]["agent"], asymmetry_range=None)
    dt, T = run.settings.timestep_ps, run.settings.temperature_k
    plat = mm.Platform.getPlatformByName(args.platform)
    print(
        f"OpenMM {mm.__version__}, platform {args.platform}, "
        f"{os.cpu_count()} CPUs ({host.processor() or host.machine()}); "
        f"timestep {1000 * dt:g} fs; models with point charges (PME) as fitted by default"
    )
    header = f"{'waters':>7s} {'system':38s} {'ms/step':>9s} {'us/atom-step':>13s} {'/ SPC/Fw':>9s} {'ns/day':>8s}"
    print(header)
    last = run.select(slice(-1, None))
    per_atom = {}
    for waters in args.waters:
        n = round((waters / 64) ** (1 / 3))
        if n ** 3 * 64 != waters:
            raise SystemExit(f"--waters {waters}: use 64 times a cube (64, 512, 4096, 32768)")
        frame = last.replicated(n)
        x, v, box = frame.positions[0], frame.velocities[0], frame.box_nm[0]
        system = WaterSystem.from_frame(frame.elements, x, box)
        atoms = len(system.species)
        rows = {"SPC/Fw (PME, Verlet)": (spcfw_system(atoms // 3, box), mm.VerletIntegrator(dt))}
        for basis in ("spline", "chebyshev"):
            recip, agent = models[basis]["reciprocal"], models[basis]["agent"]
            rows[f"reciprocal {basis} (Verlet)"] = (create_system(recip, system.species, system.molecules, box),
                                                    mm.VerletIntegrator(dt))
            if basis == "chebyshev":
                rows[f"reciprocal {basis} (learning, CSVR)"] = (
                    create_system(recip, system.species, system.molecules, box),
                    LearningIntegrator(T, dt, n_atoms=atoms),
                )
            rows[f"agent {basis} (learning, CSVR)"] = (create_system(agent, system.species, system.molecules, box),
                                                       LearningIntegrator(T, dt, agent_species=system.species))
        rows["agent chebyshev, no asymmetry range"] = (create_system(whole, system.species, system.molecules, box),
                                                       LearningIntegrator(T, dt, agent_species=system.species))
        times = seconds_per_step(rows, x, v, args.platform, args.seconds)
        base = times[next(iter(rows))]
        for name, s in times.items():
            per_atom.setdefault(name, {})[waters] = 1e6 * s / atoms
            print(f"{waters:7d} {name:38s} {1e3 * s:9.2f} {1e6 * s / atoms:13.3f} {s / base:9.2f} "
                  f"{dt * 1e-3 * 86400 / s:8.2f}", flush=True)
    if len(args.waters) > 1:
        lo, hi = min(args.waters), max(args.waters)
        print(f"\nmicroseconds per atom-step, largest over smallest box ({hi} / {lo} waters):")
        for name, d in per_atom.items():
            print(f"  {name:38s} {d[hi] / d[lo]:6.2f}")
    test = fits["agent"].test_frames
    for name, model in ((f"with its asymmetry range ({models['chebyshev']['agent'].asymmetry_range:g} nm)",
                         models["chebyshev"]["agent"]), ("over the whole cutoff", whole)):
        pred = np.stack([model.forces(run.positions[idx[f]], run.box_nm[idx[f]], water.species, water.molecules)[0]
                         for f in test])
        err = force_errors(run.forces[idx[test]], pred, water.species)
        print(f"\ncompiled agent model {name}: held-out force RMSE "
              + ", ".join(f"{s} {e['rmse']:.2f} kJ/mol/nm ({100 * e['relative_rmse']:.3f} %)" for s, e in err.items()),
              end="")
    print()
    cp2k = run.seconds_per_step()
    print(f"\nCP2K GFN1-xTB, 64 waters (bundled run's UsedTime median): {1e3 * cp2k:.0f} ms/step")
    # numba reference evaluator against one OpenMM force evaluation, 64 waters
    model, x, box = models["chebyshev"]["agent"], run.positions[-1], run.box_nm[-1]
    model.forces(x, box, water.species, water.molecules)
    t0 = time.perf_counter()
    for _ in range(20):
        model.forces(x, box, water.species, water.molecules)
    t_numba = (time.perf_counter() - t0) / 20
    ctx = mm.Context(create_system(model, water.species, water.molecules, box), mm.VerletIntegrator(dt), plat)
    ctx.setPositions(x)
    ctx.getState(getForces=True)
    t0 = time.perf_counter()
    for k in range(20):
        ctx.setPositions(x + 1e-6 * k)
        ctx.getState(getForces=True)
    t_omm = (time.perf_counter() - t0) / 20
    print(
        f"compiled agent forces of one 64-water frame: numba reference {1e3 * t_numba:.2f} ms, OpenMM {args.platform} "
        f"{1e3 * t_omm:.2f} ms"
    )


if __name__ == "__main__":
    main()
