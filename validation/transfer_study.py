"""Does learned water transfer across temperature? The example's models, fitted at 300 K,
judged at 350 K without refitting (a study).

Both modes are fitted exactly as `make example` fits them (the bundled 300 K equilibrium
xTB run after its cut, pipeline.example's settings), then validated against the
bundled 350 K run (`water64-xtb-langevin-350K`: the same method, box and protocol, made
for this) with the example's rows: runs from its frames after its equilibration, its
masses, step, Langevin friction and temperature. The verdicts and the first-peak and
kinetic metrics go to validation/results/transfer.json; validation/README.md's table is
`table` of it.

    python validation/transfer_study.py [--out output/transfer] [--seeds 16] [--workers N]
        [--model NAME=MODEL.json ...]

--model adds rows of other models fitted at 300 K (the deficit study's, for example).
"""

from __future__ import annotations

from dataclasses import replace
import json
import math
from pathlib import Path

from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.pipeline.example import (EXAMPLE_EQUILIBRATION_PS, EXAMPLE_FIT, EXAMPLE_PS, EXAMPLE_REFERENCE,
                                              EXAMPLE_SEEDS, example_plan)
from openmm_learning.pipeline.fit import fit_stage
from openmm_learning.pipeline.stages import first_frame_after
from openmm_learning.pipeline.validate import run_validation

TARGET = "water64-xtb-langevin-350K"
#: the 350 K run's temperature settles by its step 1100 (its README): cut what comes before
TARGET_EQUILIBRATION_PS = 1.65
METRICS = ("rdf_OO.first_peak_height", "rdf_OO.first_peak_position", "kinetic_vs_target.O",
           "kinetic_vs_target.H", "kinetic_vs_target.translation", "kinetic_vs_target.rotation",
           "kinetic_vs_target.vibration")
BEGIN, END = "<!-- transfer: begin -->", "<!-- transfer: end -->"
BLOCK_PS = 0.75  # of the references' own first-peak series


def peak_series(project: str) -> list:
    """A reference's g_OO first-peak height in consecutive BLOCK_PS blocks of its whole
    run: whether its structure has settled within its length."""
    from slow_structure_study import peak_height  # beside this script

    from openmm_learning.validation.rows import reference_row

    run, _ = load_water_run(example_run_dir(project))
    traj = reference_row(run, 0.0).traj
    n = int((traj.time[-1] - traj.time[0] + 1e-6) // BLOCK_PS)
    blocks = [(traj.time >= traj.time[0] + k * BLOCK_PS - 1e-9) & (traj.time < traj.time[0] + (k + 1) * BLOCK_PS - 1e-9)
              for k in range(n)]
    return [round(float(peak_height(traj[b.nonzero()[0]])), 3) for b in blocks if b.sum() > 10]


def example_models(out: Path) -> dict:
    """Both modes fitted as the example fits them (cached by fit_stage)."""
    run, system = load_water_run(example_run_dir(EXAMPLE_REFERENCE), r_cut=EXAMPLE_FIT.r_cut)
    step = int(run.steps[first_frame_after(run, EXAMPLE_EQUILIBRATION_PS)])
    paths = fit_stage(run, system, out / "fit", (step, None), EXAMPLE_FIT)
    return {f"learned {mode}": path for mode, path in paths.items()}


def table(record: dict) -> str:
    """validation/README.md's transfer table (between BEGIN and END)."""
    lines = [f"Recorded at commit {record['commit']}: the example's models (fitted at 300 K) against "
             f"`{record['reference']}` after its first {record['equilibration_ps']:g} ps ({record['reference_ps']:.2f} "
             f"ps left), {record['seeds']} runs of {record['ps']:g} ps per row as the example runs them.", "",
             "| row | verdict | " + " | ".join(f"`{m}`" for m in METRICS) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    for name, row in record["rows"].items():
        cells = []
        for m in METRICS:
            r = row["metrics"][m]
            cells.append("n/a" if r["row_value"] is None else
                         f"{r['row_value']:.3g} ({r['reference_value']:.3g}): {r['outcome']}")
        lines.append(f"| {name} | {row['verdict']} | " + " | ".join(cells) + " |")
    lines += ["", f"The references' own g_OO first-peak height in consecutive {BLOCK_PS:g} ps blocks of their whole "
              "runs (equilibration included):", ""]
    for project, series in record["reference_peak_series"].items():
        lines.append(f"- `{project}`: " + ", ".join(f"{v:.2f}" for v in series))
    cut, early, late = settling(record)
    lines += ["", f"After its {cut} ps cut the 300 K reference's blocks run from {early:.2f} (mean of its first three) "
              f"to {late:.2f} (mean of its last three)."]
    return "\n".join(lines)


def settling(record: dict) -> tuple[float, float, float]:
    """The example's cut, and the mean first peak of the 300 K reference's first and last
    three blocks after it."""
    series = record["reference_peak_series"][record["trained_on"]]
    after = series[math.ceil(EXAMPLE_EQUILIBRATION_PS / BLOCK_PS - 1e-9):]  # blocks wholly after the cut
    return EXAMPLE_EQUILIBRATION_PS, float(sum(after[:3]) / 3), float(sum(after[-3:]) / 3)


def main(argv=None):
    from readme_results import head_commit, publish, study_parser  # beside this script

    ap = study_parser(__doc__, "transfer", "transfer.json", seeds=EXAMPLE_SEEDS)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--model", nargs="+", default=[], metavar="NAME=MODEL.json", help="more rows")
    args = ap.parse_args(argv)
    models = example_models(args.out)
    for item in args.model:
        name, _, path = item.partition("=")
        models[name] = Path(path)
    target = example_run_dir(TARGET)
    plan = replace(example_plan(EXAMPLE_PS, args.seeds), baseline=False, equilibration_ps=TARGET_EQUILIBRATION_PS)
    result = run_validation(target, args.out / "rows", models=models, plan=plan, workers=args.workers)
    run, _ = load_water_run(target)
    keys = ("row_value", "row_uncertainty", "reference_value", "reference_uncertainty", "value", "uncertainty",
            "threshold", "outcome")
    rows = {name: {"verdict": result.verdicts[name], "outcomes": result.outcomes(name),
                   "metrics": {m: {k: result.metric(name, m).get(k) for k in keys} for m in METRICS}}
            for name in models}
    record = {"reference": TARGET, "trained_on": EXAMPLE_REFERENCE, "seeds": args.seeds, "ps": EXAMPLE_PS,
              "equilibration_ps": TARGET_EQUILIBRATION_PS,
              "reference_ps": float(run.times_ps[-1] - run.times_ps[0] - TARGET_EQUILIBRATION_PS),
              "rows": rows, "commit": head_commit(),
              "reference_peak_series": {p: peak_series(p) for p in (EXAMPLE_REFERENCE, TARGET)}}
    publish(record, args.record, BEGIN, END, table(record))
    print(json.dumps({"wrote": str(args.record)}))


if __name__ == "__main__":
    main()
