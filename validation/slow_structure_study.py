"""Why the power study's g_OO peak is hard to decide: how its estimate scatters in short
runs and in blocks of one long run, under the example's protocol.

The known truth (OpenMM's SPC/Fw) under the protocol of the bundled FIST reference
`water64-spcfw-langevin-300K` (Langevin 10/ps, hydrogen 4 amu, 1.5 fs, 64 waters):

- the CP2K reference after its 5 ps cut, in blocks of 4 to 32 (the validation uses 16);
- one long OpenMM run of the same length, from the reference's frame at 5 ps, blocked
  the same way;
- 8 short runs as the example runs a row (1 ps of Langevin, 10 ps, the first 2 ps cut),
  at 1.5 fs and at 0.5 fs (the integrator's configurational error at 1.5 fs).

For each: the first-peak height per block or run, their mean, spread and standard error,
and the time autocorrelation of the first-shell count (O-O pairs at 0.265-0.29 nm) per
frame. If the standard error from blocks keeps growing with the block length, blocks of
that length understate the error (a slow collective fluctuation of the small box).
Writes validation/results/slow_structure.json and its table in validation/README.md.

    python validation/slow_structure_study.py [--out output/slow-structure] [--record ...]
"""

from __future__ import annotations

import dataclasses

import mdtraj
import numpy as np

from openmm_learning.io.water_run import example_run_dir, load_water_run, trajectory_of
from openmm_learning.openmm.simulate import Reporting, simulate
from openmm_learning.openmm.spcfw import spcfw_system
from openmm_learning.validation import analysis
from openmm_learning.dynamics import Dynamics, StartFrame
from openmm_learning.pipeline.example import EXAMPLE_LANGEVIN_PS, EXAMPLE_PS, EXAMPLE_ROW_CUT_PS, EXAMPLE_SEEDS
from openmm_learning.pipeline.stages import start_frames
from openmm_learning.validation.rows import row_of

REFERENCE, CUT_PS = "water64-spcfw-langevin-300K", 5.0
SHELL_NM = (0.265, 0.29)


def peak_height(traj) -> float:
    r, g = analysis.rdf(traj, "OO", 0.6, 120)
    return analysis.rdf_features(r, g, analysis.partner_density(traj, "OO"), "OO")["first_peak_height"]


def shell_counts(traj) -> np.ndarray:
    """O-O pairs in the first shell per frame."""
    o = np.array([a.index for a in traj.topology.atoms if a.element.symbol == "O"])
    i, j = np.triu_indices(len(o), 1)
    d = mdtraj.compute_distances(traj, np.column_stack([o[i], o[j]]), periodic=True)
    return ((d > SHELL_NM[0]) & (d < SHELL_NM[1])).sum(axis=1)


def autocorrelation(x, lags=10) -> list:
    x = np.asarray(x, float) - np.mean(x)
    c = np.correlate(x, x, "full")[len(x) - 1:]
    return [round(float(v), 3) for v in (c / c[0])[:lags]]


def spread(values) -> dict:
    v = np.asarray(values, float)
    return {"values": [round(float(x), 4) for x in v], "mean": float(v.mean()), "sd": float(v.std(ddof=1)),
            "sem": float(v.std(ddof=1) / np.sqrt(len(v)))}


def blocked(traj) -> dict:
    """Peak height of the whole trajectory and of 4, 8, 16 and 32 contiguous blocks."""
    n = traj.n_frames
    out = {"whole": peak_height(traj), "frame_ps": float(traj.time[1] - traj.time[0]),
           "shell_autocorrelation": autocorrelation(shell_counts(traj))}
    for k in (4, 8, 16, 32):
        out[f"{k} blocks"] = spread([peak_height(traj[b * n // k:(b + 1) * n // k]) for b in range(k)])
    return out


def openmm_run(out, run_, water, frame, ps, dt, seed, report_ps):
    folder = out / f"{ps:g}ps-{dt * 1000:g}fs-seed{seed}"
    dynamics = Dynamics.from_run(run_, ps, seed=seed, equilibration_ps=EXAMPLE_LANGEVIN_PS)
    dynamics = dataclasses.replace(dynamics, timestep_ps=dt, steps=int(round(ps / dt)))
    simulate(None, StartFrame.of_run(run_, water, frame, velocities=False), dynamics, folder,
             reporting=Reporting(int(round(report_ps / dt)), progress=False),
             system=spcfw_system(len(water.molecules), run_.box_nm[frame]), name="SPC/Fw")
    traj = row_of(folder).traj
    return traj[traj.time >= traj.time[0] + EXAMPLE_ROW_CUT_PS]


BEGIN, END = "<!-- slow structure: begin -->", "<!-- slow structure: end -->"


def table(record: dict) -> str:
    """validation/README.md's table of the record: g_OO first-peak height, its spread per
    block or run and its standard error, for each source."""
    lines = [f"Recorded at commit {record['commit']} (64 waters, {record['reference']} after its "
             f"{record['cut_ps']:g} ps cut):", "",
             "| source | pieces | g_OO peak height (mean) | spread of one piece (sd) | standard error |",
             "|---|---|---|---|---|"]
    for name, label in (("cp2k", "CP2K reference"), ("openmm_long_run", "one OpenMM run as long")):
        for k in (4, 16, 32):
            b = record[name][f"{k} blocks"]
            lines.append(f"| {label} | {k} blocks | {b['mean']:.3f} | {b['sd']:.3f} | {b['sem']:.3f} |")
    for key in [k for k in record if k.startswith("openmm_short_runs_")]:
        b, step = record[key], key.rsplit("_", 1)[1].replace("fs", " fs")
        lines.append(f"| short runs at {step} | {b['runs']} runs of 8 ps | {b['mean']:.3f} | {b['sd']:.3f} | "
                     f"{b['sem']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    from readme_results import head_commit, publish, study_parser  # beside this script

    ap = study_parser(__doc__, "slow-structure", "slow_structure.json")
    args = ap.parse_args(argv)
    run_, water = load_water_run(example_run_dir(REFERENCE))
    reference = trajectory_of(run_)
    reference = reference[reference.time >= CUT_PS]
    span = float(reference.time[-1] - reference.time[0])
    dt = run_.settings.timestep_ps
    first = int(np.searchsorted(run_.times_ps, CUT_PS))
    record = {"reference": REFERENCE, "cut_ps": CUT_PS, "cp2k": blocked(reference)}
    # one long run, its frames as far apart as the reference's
    record["openmm_long_run"] = blocked(openmm_run(args.out, run_, water, first, span + EXAMPLE_ROW_CUT_PS, dt, 11,
                                            reference.time[1] - reference.time[0]))
    for step in (dt, dt / 3):
        runs = [openmm_run(args.out, run_, water, f, EXAMPLE_PS, step, 21 + k, 0.03)
                for k, f in enumerate(start_frames(run_, CUT_PS, EXAMPLE_SEEDS))]
        record[f"openmm_short_runs_{step * 1000:g}fs"] = {
            "runs": len(runs), **spread([peak_height(t) for t in runs]),
            "shell_autocorrelation": autocorrelation(shell_counts(runs[0]))}
    record["commit"] = head_commit()
    publish(record, args.record, BEGIN, END, table(record))


if __name__ == "__main__":
    main()
