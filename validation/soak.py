"""Long learning-dynamics runs: do they stay stable? (a study, not a test)

Both modes, fitted on the bundled xTB run and compiled (the fastest OpenMM form), run on
the bundled 64-water box at 300 K with CSVR and a 0.5 fs step for `--ps` (1 ns by
default; 1.5-2.5 hours per mode on one core), checkpointed: run the same command again to
continue an interrupted soak. Reported per mode: blow-ups (the run's guard stops at a
temperature over 4x the target), the mean temperature and its drift per 100 ps, the
fraction of reports with an invariant outside the fitted range, and in reciprocal mode
the drift of the conserved quantity (kinetic + potential energy + the heat CSVR removed,
Bussi's effective energy: it drifts only by integration error) and of the total energy
in 20 ps of plain NVE (Verlet) from the soak's end.

    python validation/soak.py [--ps 1000] [--out soak] [--modes reciprocal agent] [--readme README.md]

Prints a table and writes soak/soak.json (each mode's entry replaced when it is run again;
the two modes can run side by side, one thread each: OPENMM_CPU_THREADS=1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import openmm as mm
from openmm import unit

from openmm_learning.io.run_folder import RunFolder
from openmm_learning.dynamics import Dynamics, StartFrame
from openmm_learning.io.atomic import write_json_atomic
from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.losses.fit import FitSettings, fit_modes
from openmm_learning.openmm.forces import create_system
from openmm_learning.openmm.integrator import LearningIntegrator
from openmm_learning.openmm.reporters import SimulationError
from openmm_learning.openmm.simulate import Reporting, read_state_log, simulate

DT_PS = 0.0005
TEMPERATURE_K = 300.0
WINDOW_PS = 100.0
#: picoseconds of plain NVE after the reciprocal soak
NVE_PS = 20.0


def nve_drift(model, system, box_nm, checkpoint: Path, ps: float = NVE_PS) -> float:
    """Drift of the total energy (kJ/mol/ns per atom) in plain NVE, OpenMM's Verlet at the
    same step for `ps` from the soak's last checkpoint: integration error alone, no thermostat."""
    steps, every = int(round(ps / DT_PS)), 200
    system_mm = create_system(model, system.species, system.molecules, box_nm)
    cpu = mm.Platform.getPlatformByName("CPU")
    saved = mm.Context(system_mm, LearningIntegrator(TEMPERATURE_K, DT_PS, n_atoms=len(system.species)), cpu)
    saved.loadCheckpoint(checkpoint.read_bytes())
    state = saved.getState(getPositions=True, getVelocities=True)
    verlet = mm.VerletIntegrator(DT_PS)
    context = mm.Context(system_mm, verlet, cpu)
    context.setPositions(state.getPositions())
    context.setVelocities(state.getVelocities())
    energies = []
    for _ in range(steps // every):
        verlet.step(every)
        e = context.getState(getEnergy=True)
        energies.append((e.getKineticEnergy() + e.getPotentialEnergy()).value_in_unit(unit.kilojoule_per_mole))
    t_ns = np.arange(1, len(energies) + 1) * every * DT_PS / 1000.0
    return float(np.polyfit(t_ns, energies, 1)[0]) / len(system.species)


def soak(mode, model, run, system, out: Path, ps: float) -> dict:
    """One mode's soak, resumed from its checkpoint when there is one."""
    steps = int(round(ps / DT_PS))
    blow_ups = 0
    try:
        simulate(model, StartFrame.of_run(run, system, velocities=False),
                 Dynamics(TEMPERATURE_K, DT_PS, steps, "csvr", equilibration_ps=2.0), out,
                 reporting=Reporting(200, 20000))
    except SimulationError as e:
        blow_ups, note = 1, str(e)
    log = read_state_log(RunFolder(out).log)
    t, temp = log["time_ps"], log["temperature_K"]
    slope = float(np.polyfit(t, temp, 1)[0]) * WINDOW_PS if len(t) > 2 else float("nan")
    result = {"mode": mode, "ps": float(t[-1]) if len(t) else 0.0, "blow_ups": blow_ups,
              "temperature_mean_K": float(np.mean(temp)), "temperature_drift_K_per_100ps": slope,
              "window_means_K": [float(np.mean(temp[(t >= a) & (t < a + WINDOW_PS)]))
                                 for a in np.arange(0.0, t[-1], WINDOW_PS) if np.any((t >= a) & (t < a + WINDOW_PS))],
              "out_of_range_fraction": float(np.mean(log["out_of_range_terms"] > 0))}
    if mode == "reciprocal":
        conserved = log["kinetic_kJmol"] + log["potential_kJmol"] + log["thermostat_heat_kJmol"]
        per_ns = float(np.polyfit(t, conserved, 1)[0]) * 1000.0
        result.update(conserved_drift_kJmol_per_ns=per_ns,
                      conserved_drift_kJmol_per_ns_per_atom=per_ns / len(system.species))
        if not blow_ups:
            result["nve_drift_kJmol_per_ns_per_atom"] = nve_drift(model, system, run.box_nm[-1],
                                                                  RunFolder(out).checkpoint)
            result["nve_ps"] = NVE_PS
    if blow_ups:
        result["blow_up"] = note
    return result


BEGIN, END = "<!-- soak: begin -->", "<!-- soak: end -->"


def soak_block(results: list[dict]) -> str:
    """The README's soak table (markdown), from soak.json."""
    rows = ["| mode | ps run | blow-ups | T mean (K) | T drift (K per 100 ps) | 100 ps means (K) "
            "| reports outside the fitted range | conserved quantity drift (kJ/mol/ns per atom) "
            "| NVE drift afterwards (kJ/mol/ns per atom) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: r["mode"]):
        drift, nve = r.get("conserved_drift_kJmol_per_ns_per_atom"), r.get("nve_drift_kJmol_per_ns_per_atom")
        nve_text = "-" if nve is None else f"{nve:+.4f} ({r['nve_ps']:g} ps)"
        windows = r["window_means_K"]
        rows.append(f"| {r['mode']} | {r['ps']:.1f} | {r['blow_ups']} | {r['temperature_mean_K']:.1f} "
                    f"| {r['temperature_drift_K_per_100ps']:+.2f} | {min(windows):.1f}-{max(windows):.1f} "
                    f"| {100 * r['out_of_range_fraction']:.2f} % | {'-' if drift is None else f'{drift:+.4f}'} "
                    f"| {nve_text} |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ps", type=float, default=1000.0)
    ap.add_argument("--out", default="soak")
    ap.add_argument("--modes", nargs="+", default=["reciprocal", "agent"], choices=["reciprocal", "agent"])
    ap.add_argument("--readme", type=Path, default=None, help="write the table into this README's markers")
    args = ap.parse_args()
    run, system = load_water_run(example_run_dir())
    models = {m: r.model for m, r in fit_modes(run.positions, run.forces, run.box_nm, system, tuple(args.modes),
                                               FitSettings(basis="chebyshev"), progress=False).items()}
    out = Path(args.out)
    # one file for both modes, so each mode may run in its own process (OPENMM_CPU_THREADS=1)
    record = out / "soak.json"
    for m in args.modes:
        result = soak(m, models[m], run, system, out / m, args.ps)
        earlier = json.loads(record.read_text()) if record.exists() else []
        write_json_atomic(record, [r for r in earlier if r["mode"] != m] + [result])
    block = soak_block(json.loads(record.read_text()))
    print(block)
    if args.readme:
        from readme_results import replace_block  # beside this script

        replace_block(args.readme, BEGIN, END, block)

if __name__ == "__main__":
    main()
