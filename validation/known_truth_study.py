"""The known truth over long runs: learned SPC/Fw against CP2K's FIST run, several seeds.

First validate the bundled SPC/Fw run with the package's defaults (both modes fitted with
point charges, the agent asymmetry penalty, CSVR), 20 ps per run, 3 seeds:

    openmm-learning validate --reference openmm_learning/data/cp2k/water64-spcfw-300K \\
        --ps 20 --seeds 3 --out DIR

then summarise that folder (the README table of validation/README.md is this file's):

    python validation/known_truth_study.py DIR [--out validation/results/known-truth-20ps.json]

The summary keeps, per row, the integrated |dg| of O-O, O-H and H-H with their
uncertainty and noise floor, the hydrogen bonds per molecule against the reference, the
kinetic temperatures of O, H and molecular translation, rotation and vibration, and the
verdict counts; and per fitted mode the charge and the
held-out relative force error.
"""

import argparse
import json
from pathlib import Path

PAIRS = ("OO", "OH", "HH")
KINDS = ("O", "H", "translation", "rotation", "vibration")


def summarise(folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    suite = json.loads((folder / "suite.json").read_text())
    rows = {}
    for row in metrics["rows_passed"]:
        recs = {m["metric"]: m for m in metrics["metrics"] if m["row"] == row}
        rows[row] = {"dg": {p: [round(recs[f"rdf_{p}.integrated_abs_diff"]["value"], 3),
                                round(recs[f"rdf_{p}.integrated_abs_diff"]["uncertainty"], 3)] for p in PAIRS},
                     "T": {k: round(metrics["equipartition"][row][k]["value"]) for k in KINDS},
                     "hbonds_difference": [round(recs["hbonds.per_molecule"]["value"], 3),
                                           round(recs["hbonds.per_molecule"]["uncertainty"], 3)],
                     "counts": next(r[-1] for r in metrics["summary"]["rows"] if r[0] == row)}
    floor = {p: round(metrics["noise_floor"][f"rdf_{p}.integrated_abs_diff"], 2) for p in PAIRS}
    fits = {}
    for mode in ("agent", "reciprocal"):
        model = json.loads((folder / "fit" / f"{mode}.json").read_text())
        held = model["fit_metrics"]["held_out"]
        fits[mode] = {"charge_h": round(model["charges"]["H"], 4),
                      "held_out_percent": {s: round(100 * held[s]["relative_rmse"], 2) for s in ("O", "H")}}
    return {"ps": suite["ps"], "seeds": suite["seeds"], "reference_cut_ps": suite["equilibration_ps"],
            "noise_floor": floor, "rows": rows, "fits": fits}


def table_rows(summary: dict) -> list[str]:
    """validation/README.md's table and the sentences below it, from the summary."""
    rows = [f"| {k} | " + " | ".join(f"{v['dg'][p][0]:.2f} ± {v['dg'][p][1]:.2f}" for p in PAIRS)
            + f" | {v['T']['O']} / {v['T']['H']} | {v['T']['translation']} / {v['T']['rotation']} / "
            f"{v['T']['vibration']} | {v['counts']} |" for k, v in summary["rows"].items()]
    floor, fit = summary["noise_floor"], summary["fits"]["agent"]
    return rows + [f"(its halves differ by {floor['OO']:.2f} / {floor['OH']:.2f} / {floor['HH']:.2f})",
                   f"The fitted charge is {fit['charge_h']:.4f} e in both modes",
                   f"{fit['held_out_percent']['O']:.2f} % (O) and {fit['held_out_percent']['H']:.2f} % (H)"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="output folder of openmm-learning validate on the SPC/Fw run")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "known-truth-20ps.json")
    args = ap.parse_args()
    out = summarise(args.folder)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
