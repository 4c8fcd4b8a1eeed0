"""The closed loop with CP2K on the bundled runs: `evaluate` figures and one round of `iterate`.

    python validation/closed_loop.py [--out closed-loop] [--rounds 1]

1. Fits both modes with their committees on the bundled xTB run (reciprocal also on the
   SPC/Fw known truth at 300 K) and evaluates them on every bundled run: the xTB run's own
   held-out frames, the Langevin xTB run (other dynamics, same method), the 27-water xTB
   box (as its replica), SPC/Fw at 300 K (held-out frames) and at 450 K.
2. Runs `iterate` from the xTB run: learning dynamics at 330 K, 16 CP2K single points of
   the frames the committee is least sure of, refit; 8 more single points of that
   dynamics, which no round trains on, measure the force error before and after
   (CP2K with one thread: about 20 minutes in all on 2 cores).
Writes OUT/closed_loop.json and prints the README's tables (validation/results/ keeps
the committed copy that tests/test_readme.py compares with the README).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from openmm_learning.pipeline.evaluate import evaluate
from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.pipeline.iterate import LoopSettings, iterate
from openmm_learning.losses.fit import FitSettings, fit_modes

#: (model, run, frames): the fits' held-out frames are their last 20 % (fit_modes)
EVALUATIONS = [
    ("xTB reciprocal", "water64-xtb-300K", "held-out"),
    ("xTB agent", "water64-xtb-300K", "held-out"),
    ("xTB reciprocal", "water64-xtb-langevin-300K", "every 10th"),
    ("xTB reciprocal", "water27-xtb-300K", "all"),
    ("SPC/Fw reciprocal", "water64-spcfw-300K", "held-out"),
    ("SPC/Fw reciprocal", "water64-spcfw-450K", "after 0.25 ps"),
]


def _fit(name, modes):
    run, system = load_water_run(example_run_dir(name))
    res = fit_modes(run.positions, run.forces, run.box_nm, system, modes, FitSettings(), progress=False,
                    committee=True)
    return res


def evaluations() -> list[dict]:
    fits = {"xTB": _fit("water64-xtb-300K", ("reciprocal", "agent")),
            "SPC/Fw": _fit("water64-spcfw-300K", ("reciprocal",))}
    out = []
    for label, run_name, which in EVALUATIONS:
        source, mode = label.split(" ")
        res = fits[source][mode]
        if which == "held-out":
            a, b = res.model.fit_metrics["test_frames"]
            frames = slice(a, b + 1)
        else:
            frames = {"after 0.25 ps": slice(50, None), "every 10th": slice(None, None, 10)}.get(which, slice(None))
        ev = evaluate(res.model, example_run_dir(run_name), frames, res.committee, progress=False)
        s = ev.summary
        out.append({"model": label, "run": run_name, "frames": which, "n_frames": s["n_frames"],
                    "errors": s["errors_kJmol_nm"], "out_of_range_fraction": s["out_of_range_fraction"],
                    "committee": s["committee"], "replica": s["replica"]})
    return out


def evaluation_table(rows) -> list[str]:
    lines = ["| model | CP2K run | frames | force RMSE O (kJ/mol/nm) | force RMSE H | frames outside the "
             "fitted range | committee deviation, mean / max (kJ/mol/nm) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        e, c = r["errors"], r["committee"]
        run = r["run"] + (f" ({r['replica']}x{r['replica']}x{r['replica']} replica)" if r["replica"] > 1 else "")
        lines.append(f"| {r['model']} | {run} | {r['frames']} ({r['n_frames']}) | "
                     f"{e['O']['rmse']:.1f} ({100 * e['O']['relative_rmse']:.1f} %) | "
                     f"{e['H']['rmse']:.1f} ({100 * e['H']['relative_rmse']:.1f} %) | "
                     f"{100 * r['out_of_range_fraction']:.0f} % | "
                     f"{c['deviation_mean_kJmol_nm']:.1f} / {c['deviation_max_kJmol_nm']:.1f} |")
    return lines


def iterate_table(records) -> list[str]:
    lines = ["| round | single points trained | held-out of the xTB run, O / H (kJ/mol/nm) | test points at "
             "330 K, O / H | 330 K dynamics: committee deviation mean / max, frames outside the range |",
             "|---|---|---|---|---|"]
    for r in records:
        h, t = r["held_out_of_run"], r["test_points"]
        d = next(iter(r["dynamics"].values()), None)
        dyn = "–" if d is None else (f"{d['deviation_mean']:.1f} / {d['deviation_max']:.1f}, "
                                     f"{100 * d['out_of_range_fraction']:.0f} %")
        lines.append(f"| {r['round']} | {r['training_single_points']} | {h['O']['rmse']:.1f} / {h['H']['rmse']:.1f} | "
                     f"{t['O']['rmse']:.1f} / {t['H']['rmse']:.1f} | {dyn} |")
    return lines


BEGIN, END = "<!-- closed-loop: begin -->", "<!-- closed-loop: end -->"


def readme_block(result: dict) -> str:
    """What the README holds between its closed-loop markers."""
    return "\n".join(evaluation_table(result["evaluations"]) + [""] + iterate_table(result["iterate"]))


def prose_claims(result: dict) -> list[str]:
    """The README's sentences about these tables, with their numbers from the result."""
    ev = {(e["model"], e["run"]): e for e in result["evaluations"]}
    langevin = ev[("xTB reciprocal", "water64-xtb-langevin-300K")]["out_of_range_fraction"]
    own = ev[("xTB reciprocal", "water64-xtb-300K")]["out_of_range_fraction"]
    cool, hot = ev[("SPC/Fw reciprocal", "water64-spcfw-300K")], ev[("SPC/Fw reciprocal", "water64-spcfw-450K")]
    worst = max(hot["errors"][s]["max_abs_error"] for s in ("O", "H"))
    first, second = result["iterate"][0]["test_points"], result["iterate"][1]["test_points"]
    change = np.mean([abs(second[s]["rmse"] / first[s]["rmse"] - 1) for s in ("O", "H")])
    return [f"out of range in {100 * langevin:.0f} % of them, against {100 * own:.0f} % of its own held-out frames",
            f"its mean grows from {cool['committee']['deviation_mean_kJmol_nm']:.1f} to "
            f"{hot['committee']['deviation_mean_kJmol_nm']:.1f} kJ/mol/nm while single atoms' errors reach "
            f"{round(worst, -2):.0f}",
            f"changed the test error by about {100 * change:.1f} %"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="closed-loop")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--readme", type=Path, default=None, help="write the tables into this README's markers")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loop = LoopSettings(rounds=args.rounds, temperatures=(330.0,), ps=2.0, points=16, test_points=8)
    records = iterate(example_run_dir("water64-xtb-300K"), out / "iterate", loop)
    result = {"evaluations": evaluations(), "iterate": records}
    (out / "closed_loop.json").write_text(json.dumps(result, indent=1, default=float))
    block = readme_block(result)
    print(block)
    if args.readme:
        from readme_results import replace_block  # beside this script

        replace_block(args.readme, BEGIN, END, block)


if __name__ == "__main__":
    main()
