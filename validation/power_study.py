"""The validation's power at the example's settings: planted subtle failures must FAIL,
the exact model must PASS.

Known truth: OpenMM's SPC/Fw against CP2K's (FIST) SPC/Fw run under the example's
protocol, the bundled `water64-spcfw-langevin-300K` (Langevin 10/ps on every atom, hydrogen
4 amu, 1.5 fs, 300 K, as the example's xTB reference; 150 ps, so that its own error is
small). Every row runs exactly as `make example` runs one (workflow.EXAMPLE_*: runs, length,
cut, Langevin start, from the reference's frames) under the reference's protocol (its
masses, step and friction: validation.suite.simulate_stage). Cases:

- exact: SPC/Fw itself;
- g_OO first peak low: the point charges scaled by --charge-scale (weaker hydrogen bonds,
  a less structured liquid; the measured effect is in the table);
- O-H bond-length spread 30 % narrow: the bond force constant times 1/0.7^2;
- T_O/T_H split: the constant-D construction of agent dynamics (shared/DESIGN.md section 8)
  on every force: O takes (1 + D) F, H (1 - D) F. Without friction that is Hamiltonian
  dynamics of the same energy with masses m_O/(1 + D) and m_H/(1 - D): the structure is
  SPC/Fw's and T_O/T_H = (1 + D)/(1 - D); friction pulls each atom back to the target, so
  the split it leaves is measured (the table's effect);
- internal vibration 20 K cold: planted in the exact rows' recorded kinetic temperatures
  (no model has it alone; the noise is the real runs');
- diffusion 30 % slow: the exact rows' clock read 1/0.7 times slower, which is what every
  mass times 1/0.49 does to frictionless dynamics (D times 0.7, structure and temperatures
  unchanged).

Each case's headline outcome (the metric it plants) and its row's verdict go to
validation/results/power.json; validation/README.md's table is `table_rows` of it.

    python validation/power_study.py [--out output/power] [--record validation/results/power.json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import openmm as mm

from openmm_learning.io.atomic import write_json_atomic
from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.openmm.forces import ANTISYMMETRIC_GROUP, SHARED_GROUP
from openmm_learning.openmm.reporters import SimulationError
from openmm_learning.openmm.simulate import simulate
from openmm_learning.openmm.spcfw import spcfw_system
from openmm_learning.validation.decision import welch_dof
from openmm_learning.validation.judge import validate
from openmm_learning.validation.suite import reference_row, row_of, start_frames
from openmm_learning.workflow import EXAMPLE_LANGEVIN_PS, EXAMPLE_PS, EXAMPLE_ROW_CUT_PS, EXAMPLE_SEEDS

REFERENCE = "water64-spcfw-langevin-300K"
REFERENCE_CUT_PS = 5.0
#: report every 30 fs, as the example's rows (20 steps of 1.5 fs)
REPORT_PS = 0.03
SPREAD_FACTOR, DIFFUSION_FACTOR, COLD_K, SPLIT_D = 0.7, 0.7, 20.0, 0.025
#: OpenMM's SPC/Fw g_OO peak 5 % low (calibrated: validation/README.md)
CHARGE_SCALE = 0.989


def scaled_spcfw(n_molecules, box_nm, charge_scale=1.0, bond_k_scale=1.0) -> mm.System:
    """SPC/Fw with its charges and its O-H bond constant scaled."""
    system = spcfw_system(n_molecules, box_nm)
    for force in system.getForces():
        if isinstance(force, mm.NonbondedForce):
            for i in range(force.getNumParticles()):
                q, sigma, eps = force.getParticleParameters(i)
                force.setParticleParameters(i, q * charge_scale, sigma, eps)
        elif isinstance(force, mm.HarmonicBondForce):
            for i in range(force.getNumBonds()):
                a, b, r0, k = force.getBondParameters(i)
                force.setBondParameters(i, a, b, r0, k * bond_k_scale)
    return system


def constant_d_spcfw(n_molecules, box_nm, d) -> mm.System:
    """SPC/Fw for the agent-mode integrator: every force in the shared group, and D times
    it in the antisymmetric group (added on O, subtracted on H)."""
    system = spcfw_system(n_molecules, box_nm)
    for force in list(system.getForces()):
        force.setForceGroup(SHARED_GROUP)
        twin = copy.deepcopy(force)
        twin.setForceGroup(ANTISYMMETRIC_GROUP)
        if isinstance(twin, mm.NonbondedForce):
            for i in range(twin.getNumParticles()):
                q, sigma, eps = twin.getParticleParameters(i)
                twin.setParticleParameters(i, q * np.sqrt(d), sigma, eps * d)
        elif isinstance(twin, mm.HarmonicBondForce):
            for i in range(twin.getNumBonds()):
                a, b, r0, k = twin.getBondParameters(i)
                twin.setBondParameters(i, a, b, r0, k * d)
        elif isinstance(twin, mm.HarmonicAngleForce):
            for i in range(twin.getNumAngles()):
                a, b, c, theta0, k = twin.getAngleParameters(i)
                twin.setAngleParameters(i, a, b, c, theta0, k * d)
        system.addForce(twin)
    return system


def run_rows(name, make_system, mode, run, water, out: Path, seeds, ps, first_seed=1) -> list:
    """`seeds` runs of one System as the example runs a row, from frames of `run` under its
    state and protocol (masses, step, friction); the runs that did not blow up."""
    dt = run.settings.timestep_ps
    folders = []
    for k, frame in enumerate(start_frames(run, REFERENCE_CUT_PS, seeds)):
        folder = out / name / f"seed-{k}"
        try:
            simulate(None, run.positions[frame], None, run.box_nm[frame], water.species, water.molecules,
                     temperature_k=run.settings.temperature_k, timestep_ps=dt, steps=int(round(ps / dt)),
                     out_dir=folder, report_interval=int(round(REPORT_PS / dt)), seed=first_seed + k,
                     equilibration_ps=EXAMPLE_LANGEVIN_PS, collision_time_ps=run.settings.csvr_time_ps,
                     system=make_system(len(water.molecules), run.box_nm[frame]), system_mode=mode, name=name,
                     progress=False, masses_amu=run.settings.masses_amu,
                     friction_per_ps=run.settings.langevin_friction_per_ps)
            folders.append(folder)
        except SimulationError as e:
            print(f"{name}: run {k} blew up: {e}")
    return [row_of(f) for f in folders]


def colder_vibration(row, kelvin):
    row = dataclasses.replace(row, kinetic=dict(row.kinetic))
    row.kinetic["vibration"] = row.kinetic["vibration"] - kelvin
    return row


def slower_clock(row, factor):
    """The run seen through a clock `1/factor` times slower: displacements per ps times factor."""
    traj = row.traj[:]
    traj.time = row.traj.time / factor
    return dataclasses.replace(row, traj=traj, temperature_times_ps=row.temperature_times_ps / factor,
                               kinetic_times_ps=row.kinetic_times_ps / factor)


#: case -> (the metric it plants, a short description of the plant)
CASES = {
    "exact (SPC/Fw)": (None, "OpenMM's SPC/Fw"),
    "g_OO first peak low": ("rdf_OO.first_peak_height", "charges scaled"),
    "O-H bond spread 30 % narrow": ("bond_length.width", "bond constant times 1/0.7^2"),
    "T_O/T_H split 15 K": ("kinetic_split.O_minus_H", f"constant D = {SPLIT_D:g} on every force"),
    "internal vibration 20 K cold": ("kinetic_vs_target.vibration", "the exact rows' vibration temperature - 20 K"),
    "diffusion 30 % slow": ("diffusion.log_ratio", "the exact rows' clock 1/0.7 times slower"),
}


def runs_to_fail(m: dict, runs: int, reference_dof: int, most: int = 1000) -> int | None:
    """How many runs of the same length would make this record FAIL, its effect and each
    run's scatter as measured and the reference as it is (Welch degrees of freedom and the
    record's family-wise factor, as decision.decide decides); None when no number of runs
    does (the reference's own error or the threshold forbids it)."""
    from scipy.stats import t as student_t

    thr, v = m["threshold"], abs(m["value"])
    # a ratio's errors are relative (its error_components), not the rows' own units
    row_e, ref = m.get("error_components") or (m.get("row_uncertainty"), m.get("reference_uncertainty"))
    per_run = row_e * np.sqrt(runs) if row_e is not None else 0.0
    ref = ref or 0.0
    ref = ref if np.isfinite(ref) else 0.0
    factor = m["z_fail"] / m["z"]
    for n in range(2, most + 1):
        row = per_run / np.sqrt(n)
        dof = welch_dof({"error_components": (row, ref)}, n - 1, reference_dof)
        z_fail = float(student_t.ppf(0.975, dof)) * factor
        if v - z_fail * np.hypot(row, ref) > thr:
            return n
    return None


def judge_cases(rows: dict, run, out: Path) -> dict:
    result = validate(reference_row(run, REFERENCE_CUT_PS), rows, out_dir=out / "validation",
                      equilibration_ps=REFERENCE_CUT_PS, row_equilibration_ps=EXAMPLE_ROW_CUT_PS,
                      target_temperature_k=run.settings.temperature_k)
    exact = "exact (SPC/Fw)"
    reference_dof = int(json.loads((out / "validation" / "metrics.json").read_text())["settings"][
        "reference_uncertainty_from"].split()[0]) - 1
    cases = {}
    for name, (metric, _) in CASES.items():
        if name not in rows:
            continue
        outcomes = result.outcomes(name)
        judged = outcomes["pass"] + outcomes["fail"] + outcomes["inconclusive"]
        case = {"verdict": result.verdicts[name], "runs": len(rows[name]), "outcomes": outcomes,
                "passed_fraction": outcomes["pass"] / judged if judged else None}
        if metric:
            m = result.metric(name, metric)
            e = result.metric(exact, metric)
            case.update(metric=metric, outcome=m["outcome"], value=m["value"], uncertainty=m["uncertainty"],
                        effect=m["value"] - e["value"], threshold=m["threshold"], interval=m["interval"],
                        runs_to_fail=runs_to_fail(m, len(rows[name]), reference_dof))
        cases[name] = case
    return {"cases": cases}


BEGIN, END = "<!-- power: begin -->", "<!-- power: end -->"
HEADER = ["| case | plant | planted metric: effect against the exact rows (outcome) | row verdict | runs | "
          "runs of this length that would fail it |", "|---|---|---|---|---|---|"]


def table(record: dict) -> str:
    """The power table as validation/README.md holds it between BEGIN and END."""
    s = record["settings"]
    return "\n".join([f"Recorded at commit {record['commit']} ({s['seeds']} runs of {s['ps']:g} ps per row, "
                      f"charges times {s['charge_scale']:g}):", ""] + HEADER + table_rows(record))


def table_rows(record: dict) -> list[str]:
    """validation/README.md's power table: case, plant, planted metric and its effect
    against the exact rows, that metric's outcome, the row's verdict, runs."""
    rows = []
    for name, c in record["cases"].items():
        plant = CASES[name][1]
        if "metric" in c:
            what = f"`{c['metric']}` {c['effect']:+.3g} (outcome **{c['outcome']}**)"
            need = "never: the reference or the threshold" if c["runs_to_fail"] is None else str(c["runs_to_fail"])
        else:
            what = f"{100 * c['passed_fraction']:.0f} % of judged metrics pass"
            need = ""
        rows.append(f"| {name} | {plant} | {what} | {c['verdict']} | {c['runs']} | {need} |")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("output/power"))
    ap.add_argument("--record", type=Path, default=Path(__file__).parent / "results" / "power.json")
    ap.add_argument("--seeds", type=int, default=EXAMPLE_SEEDS)
    ap.add_argument("--ps", type=float, default=EXAMPLE_PS)
    ap.add_argument("--charge-scale", type=float, default=CHARGE_SCALE)
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--runs-only", action="store_true", help="run the dynamics, judge later (runs resume)")
    ap.add_argument("--commit", default=None, help="the commit that ran, when not the working tree's HEAD")
    args = ap.parse_args(argv)
    run, water = load_water_run(example_run_dir(REFERENCE))
    systems = {"exact (SPC/Fw)": (spcfw_system, "reciprocal"),
               "g_OO first peak low": (lambda n, b: scaled_spcfw(n, b, charge_scale=args.charge_scale), "reciprocal"),
               "O-H bond spread 30 % narrow": (lambda n, b: scaled_spcfw(n, b, bond_k_scale=SPREAD_FACTOR**-2),
                                               "reciprocal"),
               "T_O/T_H split 15 K": (lambda n, b: constant_d_spcfw(n, b, SPLIT_D), "agent")}
    # a plant's folder names its parameter: runs resume, and a run made with another
    # charge scale must not be taken for this one's
    folders = {"exact (SPC/Fw)": "exact", "g_OO first peak low": f"g_OO-charges-{args.charge_scale:g}",
               "O-H bond spread 30 % narrow": f"bond-k-times-{SPREAD_FACTOR**-2:.4g}",
               "T_O/T_H split 15 K": f"constant-D-{SPLIT_D:g}"}
    rows = {}
    for name in ["exact (SPC/Fw)"] + [c for c in args.cases if c in systems and c != "exact (SPC/Fw)"]:
        make, mode = systems[name]
        rows[name] = run_rows(folders[name], make, mode, run, water, args.out, args.seeds, args.ps)
    if args.runs_only:
        return
    exact = rows["exact (SPC/Fw)"]
    if "internal vibration 20 K cold" in args.cases:
        rows["internal vibration 20 K cold"] = [colder_vibration(r, COLD_K) for r in exact]
    if "diffusion 30 % slow" in args.cases:
        rows["diffusion 30 % slow"] = [slower_clock(r, DIFFUSION_FACTOR) for r in exact]
    record = {"settings": {"seeds": args.seeds, "ps": args.ps, "row_cut_ps": EXAMPLE_ROW_CUT_PS,
                           "langevin_ps": EXAMPLE_LANGEVIN_PS, "charge_scale": args.charge_scale,
                           "reference": REFERENCE, "reference_cut_ps": REFERENCE_CUT_PS},
              **judge_cases(rows, run, args.out)}
    from readme_results import head_commit, replace_block  # beside this script

    record["commit"] = args.commit or head_commit()
    write_json_atomic(args.record, record)
    replace_block(Path(__file__).with_name("README.md"), BEGIN, END, table(record))
    print(table(record))
    print(json.dumps({"wrote": str(args.record)}))


if __name__ == "__main__":
    main()
