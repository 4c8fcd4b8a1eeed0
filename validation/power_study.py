"""The validation's power at the example's settings: planted subtle failures must FAIL,
the exact model must PASS.

Known truth: OpenMM's SPC/Fw against CP2K's (FIST) SPC/Fw run under the example's
protocol, the bundled `water64-spcfw-langevin-300K` (Langevin 10/ps on every atom, hydrogen
4 amu, 1.5 fs, 300 K, as the example's xTB reference; 453 ps, so that its own error is
small). Every row runs exactly as `make example` runs one (pipeline.example.EXAMPLE_*: runs, length,
cut, Langevin start, from the reference's frames) under the reference's protocol (its
masses, step and friction: pipeline.runs.simulate_stage). Cases:

- exact: SPC/Fw itself;
- g_OO first peak low: the point charges scaled by CHARGE_SCALES (weaker hydrogen bonds,
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

import copy
import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import openmm as mm

from openmm_learning.dynamics import Dynamics, StartFrame
from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.openmm.forces import ANTISYMMETRIC_GROUP, SHARED_GROUP
from openmm_learning.openmm.reporters import SimulationError
from openmm_learning.openmm.simulate import Reporting, simulate
from openmm_learning.openmm.spcfw import spcfw_system
from openmm_learning.validation.decision import welch_dof
from openmm_learning.validation.judge import validate
from openmm_learning.validation.rows import reference_row, row_of
from openmm_learning.pipeline.example import (EXAMPLE_EQUILIBRATION_PS, EXAMPLE_LANGEVIN_PS, EXAMPLE_PS,
                                              EXAMPLE_REFERENCE, EXAMPLE_ROW_CUT_PS, EXAMPLE_SEEDS)
from openmm_learning.pipeline.stages import start_frames

REFERENCE = "water64-spcfw-langevin-300K"
REFERENCE_CUT_PS = 5.0
#: report every 30 fs, as the example's rows (20 steps of 1.5 fs)
REPORT_PS = 0.03
SPREAD_FACTOR, DIFFUSION_FACTOR, COLD_K, SPLIT_D = 0.7, 0.7, 20.0, 0.025
#: charges that lower OpenMM's SPC/Fw g_OO first peak by a few per cent, either side of 5 %
#: (calibrated: validation/README.md; the table has what each did)
CHARGE_SCALES = {"g_OO first peak low (charges x 0.989)": 0.989, "g_OO first peak low (charges x 0.988)": 0.988}
PEAK = "rdf_OO.first_peak_height"


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


def example_start_window_ps() -> float:
    """How much reference the example's runs start from: its reference after the cut."""
    times = load_water_run(example_run_dir(EXAMPLE_REFERENCE))[0].times_ps
    return float(times[-1] - times[0] - EXAMPLE_EQUILIBRATION_PS)


def row_start_frames(run, seeds, window_ps) -> list:
    """The example's start frames, transplanted: spread over the last `window_ps` of `run`,
    as the example's are over its whole (short) reference, so that runs which start close
    together, and stay alike for a while, are measured as the example has them."""
    first = run.times_ps[-1] - window_ps
    return start_frames(run, max(first - run.times_ps[0], REFERENCE_CUT_PS), seeds)


def run_rows(name, make_system, mode, run, water, out: Path, frames, ps, first_seed=1) -> list:
    """Runs of one System (make_system(n_molecules, box)) as the example runs a row, one
    from each of `frames` of `run`, under its state and protocol (masses, step, friction);
    the runs that did not blow up."""
    dt = run.settings.timestep_ps
    folders = []
    for k, frame in enumerate(frames):
        folder = out / name / f"seed-{k}"
        try:
            dynamics = Dynamics.from_run(run, ps, mode=mode, seed=first_seed + k, equilibration_ps=EXAMPLE_LANGEVIN_PS)
            simulate(None, StartFrame.of_run(run, water, frame, velocities=False), dynamics, folder,
                     reporting=Reporting(int(round(REPORT_PS / dt)), progress=False),
                     system=make_system(len(water.molecules), run.box_nm[frame]), name=name)
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
    **{name: (PEAK, f"charges times {scale:g}") for name, scale in CHARGE_SCALES.items()},
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
    e = result.metric(exact, PEAK)
    exact_peak = {k: e[k] for k in ("row_value", "value", "row_uncertainty", "reference_uncertainty", "z", "z_fail",
                                    "threshold")}
    d = result.metric(exact, "diffusion.log_ratio")
    exact_diffusion = {"value": d["value"], "uncertainty": d["uncertainty"],
                       "per_run_relative_sd": d["error_components"][0] * np.sqrt(len(rows[exact]))}
    return {"cases": cases, "exact_peak": exact_peak, "exact_diffusion": exact_diffusion,
            "reference_dof": reference_dof, "reference_peak_blocks": reference_peak_blocks(run)}


def reference_peak_blocks(run, n_blocks=64) -> list:
    """The reference's g_OO first-peak height in `n_blocks` contiguous blocks after its cut:
    how slowly the structure of a 64-water box wanders."""
    from slow_structure_study import peak_height  # beside this script

    traj = reference_row(run, REFERENCE_CUT_PS).traj
    traj = traj[traj.time >= traj.time[0] + REFERENCE_CUT_PS - 1e-9]
    return [peak_height(traj[block]) for block in np.array_split(np.arange(traj.n_frames), n_blocks)]


def runs_for_peak_deficit(record: dict, fraction: float, reference_error_scale: float = 1.0) -> int | None:
    """runs_to_fail for a g_OO first peak `fraction` below the exact rows' (their offset
    from the reference kept), with the exact rows' scatter and the reference's error times
    `reference_error_scale` (1/2: a reference four times as long, its blocks independent)."""
    e = record["exact_peak"]
    m = dict(e, value=e["value"] - fraction * e["row_value"],
             reference_uncertainty=e["reference_uncertainty"] * reference_error_scale)
    return runs_to_fail(m, record["settings"]["seeds"], record["reference_dof"])


BEGIN, END = "<!-- power: begin -->", "<!-- power: end -->"
HEADER = ["| case | plant | planted metric: effect against the exact rows (outcome) | row verdict | runs | "
          "runs of this length that would fail it |", "|---|---|---|---|---|---|"]


def table(record: dict) -> str:
    """The power table as validation/README.md holds it between BEGIN and END."""
    s = record["settings"]
    deficit = [runs_for_peak_deficit(record, 0.05, scale) for scale in (1.0, 0.5)]
    blocks, peak, dif = record["reference_peak_blocks"], record["exact_peak"], record["exact_diffusion"]
    span = s["reference_ps"] - s["reference_cut_ps"]
    words = ["never" if n is None else f"{n} runs" for n in deficit]
    return "\n".join([f"Recorded at commit {record['commit']} ({s['seeds']} runs of {s['ps']:g} ps per row "
                      f"from the last {s['start_window_ps']:g} ps of the reference):", ""] + HEADER + table_rows(record)
                     + ["", f"A g_OO first peak exactly 5 % low, with the exact rows' scatter, would fail with "
                            f"{words[0]} of this length against this reference, {words[1]} against one four "
                            "times as long (`power_study.runs_for_peak_deficit`). The reference's own first-peak "
                            f"height in {len(blocks)} blocks of {span / len(blocks):.0f} ps: {min(blocks):.2f} to "
                            f"{max(blocks):.2f} (sd {np.std(blocks, ddof=1):.3f}); its standard error from "
                            f"{record['reference_dof'] + 1} blocks: {peak['reference_uncertainty']:.3f}, the exact "
                            f"rows' {peak['row_uncertainty']:.3f}. The exact rows' diffusion against CP2K's: ln "
                            f"ratio {dif['value']:+.2f} +- {dif['uncertainty']:.2f}; one run's D scatters by "
                            f"{100 * dif['per_run_relative_sd']:.0f} %."])


def table_rows(record: dict) -> list[str]:
    """validation/README.md's power table: case, plant, planted metric and its effect
    against the exact rows, that metric's outcome, the row's verdict, runs."""
    rows = []
    for name, c in record["cases"].items():
        plant = CASES[name][1]
        if "metric" in c:
            share = (f", {100 * c['effect'] / record['exact_peak']['row_value']:+.1f} %" if c["metric"] == PEAK
                     else "")
            what = f"`{c['metric']}` {c['effect']:+.3g}{share} (outcome **{c['outcome']}**)"
            need = "never: the reference or the threshold" if c["runs_to_fail"] is None else str(c["runs_to_fail"])
        else:
            what = f"{100 * c['passed_fraction']:.0f} % of judged metrics pass"
            need = ""
        rows.append(f"| {name} | {plant} | {what} | {c['verdict']} | {c['runs']} | {need} |")
    return rows


def main(argv=None):
    from readme_results import head_commit, publish, study_parser  # beside this script

    ap = study_parser(__doc__, "power", "power.json", seeds=EXAMPLE_SEEDS)
    ap.add_argument("--ps", type=float, default=EXAMPLE_PS)
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--start-window-ps", type=float, default=None,
                    help="start the runs from the last this many ps of the reference (default: as long as the "
                         "example's reference after its cut; longer than the reference: all of it)")
    ap.add_argument("--runs-only", action="store_true", help="run the dynamics, judge later (runs resume)")
    ap.add_argument("--commit", default=None, help="the commit that ran, when not the working tree's HEAD")
    args = ap.parse_args(argv)
    run, water = load_water_run(example_run_dir(REFERENCE))
    window = example_start_window_ps() if args.start_window_ps is None else args.start_window_ps
    # the runs' folders name what they start from: runs resume, never from another frame
    base = args.out / f"{args.seeds}-runs-within-{window:.3g}-ps"
    systems = {"exact (SPC/Fw)": (spcfw_system, "reciprocal"),
               **{name: (functools.partial(scaled_spcfw, charge_scale=scale), "reciprocal")
                  for name, scale in CHARGE_SCALES.items()},
               "O-H bond spread 30 % narrow": (lambda n, b: scaled_spcfw(n, b, bond_k_scale=SPREAD_FACTOR**-2),
                                               "reciprocal"),
               "T_O/T_H split 15 K": (lambda n, b: constant_d_spcfw(n, b, SPLIT_D), "agent")}
    # a plant's folder names its parameter: runs resume, and a run made with another
    # charge scale must not be taken for this one's
    folders = {"exact (SPC/Fw)": "exact", **{name: f"g_OO-charges-{scale:g}" for name, scale in CHARGE_SCALES.items()},
               "O-H bond spread 30 % narrow": f"bond-k-times-{SPREAD_FACTOR**-2:.4g}",
               "T_O/T_H split 15 K": f"constant-D-{SPLIT_D:g}"}
    rows = {}
    for name in ["exact (SPC/Fw)"] + [c for c in args.cases if c in systems and c != "exact (SPC/Fw)"]:
        make, mode = systems[name]
        rows[name] = run_rows(folders[name], make, mode, run, water, base,
                              row_start_frames(run, args.seeds, window), args.ps)
    if args.runs_only:
        return
    exact = rows["exact (SPC/Fw)"]
    if "internal vibration 20 K cold" in args.cases:
        rows["internal vibration 20 K cold"] = [colder_vibration(r, COLD_K) for r in exact]
    if "diffusion 30 % slow" in args.cases:
        rows["diffusion 30 % slow"] = [slower_clock(r, DIFFUSION_FACTOR) for r in exact]
    record = {"settings": {"seeds": args.seeds, "ps": args.ps, "row_cut_ps": EXAMPLE_ROW_CUT_PS,
                           "langevin_ps": EXAMPLE_LANGEVIN_PS, "charge_scales": CHARGE_SCALES,
                           "reference": REFERENCE, "reference_cut_ps": REFERENCE_CUT_PS,
                           "start_window_ps": window, "reference_ps": float(run.times_ps[-1] - run.times_ps[0])},
              **judge_cases(rows, run, base)}
    record["commit"] = args.commit or head_commit()
    publish(record, args.record, BEGIN, END, table(record))
    print(json.dumps({"wrote": str(args.record)}))


if __name__ == "__main__":
    main()
