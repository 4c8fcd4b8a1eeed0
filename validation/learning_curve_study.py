"""The learning curve of the default fit on the example's reference (a study, not a test).

    python validation/learning_curve_study.py [--record validation/results/learning-curve.json]

Fits both modes as `make example` does (pipeline.example.EXAMPLE_FIT: the default
FitSettings on every 2nd frame of the bundled equilibrium xTB run after its cut) on
SIZES frames spread evenly over the same training span, and scores each on the same
held-out frames (the fit's own last 20 %, after a gap): what more frames of one run buy.
The errors are of the fitted splines (the default file compiles them to Chebyshev
series, which adds at most losses.fit.COMPILE_ADDED_PERCENT of the RMS force). Writes
the record and validation/README.md's table between its markers.
"""

from __future__ import annotations

import numpy as np

from openmm_learning.io.topology import SPECIES
from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.losses.fit import learning_curve, time_split
from openmm_learning.pipeline.example import EXAMPLE_EQUILIBRATION_PS, EXAMPLE_FIT, EXAMPLE_REFERENCE
from openmm_learning.pipeline.stages import first_frame_after

#: training frames of each fit; "all" is every training frame the time split leaves
SIZES = (10, 30, 100, 300)
BEGIN, END = "<!-- learning curve: begin -->", "<!-- learning curve: end -->"


def measure() -> dict:
    run, water = load_water_run(example_run_dir(EXAMPLE_REFERENCE), r_cut=EXAMPLE_FIT.r_cut)
    idx = np.arange(first_frame_after(run, EXAMPLE_EQUILIBRATION_PS), run.n_frames, EXAMPLE_FIT.frame_stride)
    every = int(np.sum(time_split(len(idx), EXAMPLE_FIT)[0] >= 0))  # the training frames the split leaves
    lc = learning_curve(run.positions[idx], run.forces[idx], run.box_nm[idx], water,
                        sizes=[n for n in SIZES if n < every] + [every], settings=EXAMPLE_FIT)
    t = lc["test_frames"]
    return {"reference": EXAMPLE_REFERENCE, "steps": [int(run.steps[idx[0]]), int(run.steps[idx[-1]])],
            "test_steps": [int(run.steps[idx[t[0]]]), int(run.steps[idx[t[1]]])], **lc}


def table(record: dict) -> str:
    """validation/README.md's learning-curve table (between its markers)."""
    a, b = record["steps"]
    ta, tb = record["test_steps"]
    lines = [f"Recorded at commit {record['commit']}: the default fit on every 2nd frame of `{record['reference']}` "
             f"steps {a}-{b}, held out: steps {ta}-{tb}. Held-out force RMSE O / H in kJ/mol/nm (% of the RMS "
             "force):", "", "| training frames | agent | reciprocal |", "|---|---|---|"]
    for k, n in enumerate(record["n_frames"]):
        cells = []
        for mode in ("agent", "reciprocal"):
            e = record["errors"][mode]
            cells.append(" / ".join(f"{e[s]['rmse'][k]:.1f} ({100 * e[s]['relative_rmse'][k]:.1f} %)"
                                    for s in SPECIES))
        lines.append(f"| {n} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv=None):
    from readme_results import head_commit, publish, study_parser

    args = study_parser(__doc__, "learning-curve", "learning-curve.json").parse_args(argv)
    record = {"commit": head_commit(), **measure()}
    publish(record, args.record, BEGIN, END, table(record))


if __name__ == "__main__":
    main()
