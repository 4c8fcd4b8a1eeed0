"""Why CP2K water runs sit out of equipartition, and what restores it (a study, not a test).

Flexible water exchanges kinetic energy between molecular translation, rotation and
internal vibration slowly, and a global thermostat (CSVR, Nose-Hoover: one factor for
every velocity) cannot move energy between them. So a split made once (melting a lattice
start) persists. This script measures it on SPC/Fw in OpenMM, 64 waters of the bundled box:

1. Langevin (2/ps, CP2K's GAMMA 0.002/fs) for `--equilibrate` ps: the equilibrated state.
2. Plant the split of the bundled xTB run (translation 350 K, rotation 370 K, vibration
   190 K, scaled so the total stays at 300 K) by rescaling each kind of motion's velocities.
3. From the planted state: NVE, a global Nose-Hoover chain (50 fs) and Langevin (2/ps);
   the kinetic temperature of each kind of motion in 1 ps windows.

    python validation/equipartition_study.py [--ps 20] [--equilibrate 10] [--out FILE.json]

Prints a table and writes the numbers (JSON) and a plot next to FILE.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import openmm as mm
from openmm import unit

from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.openmm.spcfw import spcfw_system
from openmm_learning.validation import analysis

T = 300.0
DT_PS = 0.0005
PLANTED = {"translation": 350.0, "rotation": 370.0, "vibration": 190.0}
KINDS = ("translation", "rotation", "vibration", "O", "H")


def _state(ctx):
    s = ctx.getState(getPositions=True, getVelocities=True)
    return (s.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
            s.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))


def plant_split(x, v, masses, box, target: dict) -> np.ndarray:
    """Velocities whose translation / rotation / vibration temperatures are scaled to target."""
    parts = analysis.motion_parts(x, v, masses, box)
    now = analysis.kinetic_temperatures(x, v, masses, box)
    return sum(parts[k][0] * np.sqrt(target[k] / now[k][0]) for k in parts)


def run(ctx, integ, masses, box, ps, window_ps=1.0):
    n_win, per = int(round(ps / window_ps)), int(round(window_ps / DT_PS))
    rows = []
    for _ in range(n_win):
        acc = {k: [] for k in KINDS}
        for _ in range(20):
            integ.step(per // 20)
            x, v = _state(ctx)
            kt = analysis.kinetic_temperatures(x, v, masses, box)
            for k in KINDS:
                acc[k].append(float(kt[k][0]))
        rows.append({k: float(np.mean(acc[k])) for k in KINDS})
    return rows


def table_rows(result: dict) -> list[str]:
    """validation/README.md's table: per run, translation / rotation / vibration (K) over
    windows 1-10 ps and 10-20 ps after the planted split."""
    def mean(rows, kind):
        return np.mean([r[kind] for r in rows])

    out = []
    for name, rows in result["runs"].items():
        half = len(rows) // 2
        cells = [" / ".join(f"{mean(part, k):.0f}" for k in ("translation", "rotation", "vibration"))
                 for part in (rows[1:half], rows[half:])]
        out.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ps", type=float, default=20.0)
    ap.add_argument("--equilibrate", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("equipartition_study.json"))
    args = ap.parse_args(argv)

    run0, system = load_water_run(example_run_dir())
    box = run0.box_nm[-1]
    n_mol = len(system.molecules)
    sysmm = spcfw_system(n_mol, box)
    sysmm.addForce(mm.CMMotionRemover())
    masses = np.array([sysmm.getParticleMass(i).value_in_unit(unit.dalton) for i in range(sysmm.getNumParticles())])
    platform = mm.Platform.getPlatformByName("CPU")

    lang = mm.LangevinMiddleIntegrator(T, 2.0, DT_PS)
    lang.setRandomNumberSeed(11)
    ctx = mm.Context(sysmm, lang, platform)
    ctx.setPositions(run0.positions[-1])
    ctx.setVelocitiesToTemperature(T, 11)
    lang.step(int(round(args.equilibrate / DT_PS)))
    x_eq, v_eq = _state(ctx)
    equilibrated = run(ctx, lang, masses, box, 2.0)
    print("after Langevin equilibration:", {k: round(equilibrated[-1][k]) for k in KINDS})
    v_planted = plant_split(x_eq, v_eq, masses, box, PLANTED)

    results = {"equilibrated": equilibrated, "planted": PLANTED, "runs": {}}
    integrators = {
        "NVE": lambda: mm.VerletIntegrator(DT_PS),
        "Nose-Hoover chain (global, 50 fs)": lambda: mm.NoseHooverIntegrator(T, 20.0, DT_PS),
        "Langevin (2/ps)": lambda: mm.LangevinMiddleIntegrator(T, 2.0, DT_PS),
    }
    for name, make in integrators.items():
        integ = make()
        c = mm.Context(sysmm, integ, platform)
        c.setPositions(x_eq)
        c.setVelocities(v_planted)
        results["runs"][name] = run(c, integ, masses, box, args.ps)
        print(f"\n{name}: window (ps) " + " ".join(f"{k:>11s}" for k in KINDS))
        for w, r in enumerate(results["runs"][name]):
            print(f"  {w:4d}-{w + 1:<4d}        " + " ".join(f"{r[k]:11.1f}" for k in KINDS))
    print("\nmeans over windows (K):")
    for name, rows in results["runs"].items():
        for a, b in ((0, 1), (1, len(rows) // 2), (len(rows) // 2, len(rows))):
            mean = {k: round(float(np.mean([r[k] for r in rows[a:b]]))) for k in KINDS}
            print(f"  {name}, {a}-{b} ps: {mean}")
    args.out.write_text(json.dumps(results, indent=1))
    _plot(results, args.out.with_suffix(".png"))
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")


def _plot(results, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(results["runs"]), sharey=True)
    for ax, (name, rows) in zip(axes, results["runs"].items()):
        t = np.arange(len(rows)) + 0.5
        for k in ("translation", "rotation", "vibration"):
            ax.plot(t, [r[k] for r in rows], "o-", ms=3, label=k)
        ax.axhline(T, color="k", lw=0.6)
        ax.set_title(f"SPC/Fw from a planted split: {name}", fontsize=9)
        ax.set_xlabel("time (ps), 1 ps windows")
    axes[0].set_ylabel("kinetic temperature (K)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
