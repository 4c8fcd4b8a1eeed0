"""LAMMPS speed: pair_style python against tables on the same deck, and the table route of
both modes on 1 and 2 MPI ranks against SPC/Fw (lj/cut/coul/long + pppm) on large boxes.
Every number is measured in this run (LAMMPS's own Loop time); the decks of one box run
interleaved, --rounds times each, and each keeps its fastest run; the thermo of 1 and 2
ranks is compared line by line.

    python benchmarks/lammps_speed.py [--steps 100] [--waters 4096 32768] [--rounds 2]
"""

import argparse
import dataclasses
import re
import tempfile
from pathlib import Path

import numpy as np

from lammps_plugin.run import read_thermo, run_lammps
from lammps_plugin.writer import DeckOptions, write_deck
from openmm_learning.dynamics import Dynamics, StartFrame
from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.losses.fit import FitSettings, chebyshev_model, fit_modes
from openmm_learning.openmm import spcfw
from openmm_learning.units import KCAL_KJ

#: SPC/Fw in LAMMPS `units real` (harmonic styles are K (r - r0)^2: half of SPC/Fw's k)
SPCFW_STYLES = [
    "pair_style lj/cut/coul/long 6.0",
    f"pair_coeff 1 1 {spcfw.EPSILON_OO_KJMOL / KCAL_KJ:.7f} {10 * spcfw.SIGMA_OO_NM:.6f}",
    "pair_coeff 1 2 0.0 1.0",
    "pair_coeff 2 2 0.0 1.0",
    "bond_style harmonic",
    f"bond_coeff 1 {spcfw.K_OH_KJMOL_NM2 / KCAL_KJ / 100 / 2:.4f} {10 * spcfw.R0_OH_NM:.4f}",
    "bond_coeff 2 0.0 1.6",  # the learned decks' H-H bond type: no force in SPC/Fw
    "angle_style harmonic",
    f"angle_coeff 1 {spcfw.K_HOH_KJMOL_RAD2 / KCAL_KJ / 2:.4f} {np.degrees(spcfw.THETA0_RAD):.2f}",
]
LEARNED_STYLES = ("pair_style", "pair_coeff", "bond_style", "bond_coeff", "angle_style", "angle_coeff")


def loop_seconds(log: Path) -> tuple[float, int]:
    m = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps with (\d+) atoms", log.read_text())
    seconds, steps, atoms = m[-1]
    return float(seconds) / int(steps), int(atoms)


def spcfw_deck(deck: Path):
    """A learned deck with point charges 0.41 e turned into SPC/Fw: its force field lines
    replaced, the data, kspace and run kept."""
    lines = [line for line in deck.read_text().splitlines() if not line.startswith(LEARNED_STYLES)]
    at = next(k for k, line in enumerate(lines) if line.startswith("kspace_style"))
    deck.write_text("\n".join(lines[:at] + SPCFW_STYLES + lines[at:]) + "\n")


def max_thermo_difference(a: Path, b: Path) -> float:
    ta, tb = read_thermo(a), read_thermo(b)
    return max(float(np.max(np.abs(ta[k] - tb[k])) / np.max(np.abs(ta[k]))) for k in ("Temp", "PotEng", "TotEng",
                                                                                        "Press"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--waters", type=int, nargs="+", default=[4096, 32768])
    ap.add_argument("--rounds", type=int, default=2, help="runs of every deck, interleaved; the fastest is kept")
    args = ap.parse_args()
    run, water = load_water_run(example_run_dir())
    idx = np.arange(0, run.n_frames, 4)
    # the default fit as `fit` writes it (Chebyshev series) for the table decks, and its
    # splines for pair_style python, which evaluates splines only
    splines = {m: r.model for m, r in fit_modes(run.positions[idx], run.forces[idx], run.box_nm[idx], water,
                                                settings=FitSettings(basis="spline"), progress=False).items()}
    models = {m: chebyshev_model(s, run.positions[idx], run.box_nm[idx], water) for m, s in splines.items()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = {m: model.save(tmp / f"{m}.json") for m, model in models.items()}
        paths["spline"] = splines["reciprocal"].save(tmp / "spline.json")
        paths["spcfw"] = dataclasses.replace(models["reciprocal"], charge_h=spcfw.CHARGES["H"]).save(tmp / "q.json")

        def deck(name, model, pair, replicate=(1, 1, 1)):
            return write_deck(tmp / name, paths[model], StartFrame.of_run(run, water),
                              Dynamics(300.0, 0.0005, args.steps, "nose-hoover"),
                              DeckOptions(pair=pair, replicate=replicate, dump_every=10**6)).deck

        print(f"{'deck':44s} {'atoms':>7s} {'ms/step':>10s} {'us/atom-step':>13s} {'/ SPC/Fw':>9s}")
        small = {}
        for pair, package in (("python", "PYTHON"), ("table", None)):
            d = deck(f"small-{pair}", "spline", pair)
            run_lammps(d, package=package)
            small[pair], atoms = loop_seconds(d.parent / "log.lammps")
            print(f"{f'reciprocal, pair_style {pair}, 64 waters':44s} {atoms:7d} {1e3 * small[pair]:10.3f}")
        print(f"pair_style python / table (same deck): {small['python'] / small['table']:.1f}x slower\n")
        rows = (("spcfw", 1), ("reciprocal", 1), ("reciprocal", 2), ("agent", 1), ("agent", 2))
        for waters in args.waters:
            n = round((waters / 64) ** (1 / 3))
            decks = {}
            for model, ranks in rows:
                decks[model, ranks] = deck(f"{model}-{waters}-{ranks}", model, "table", (n, n, n))
                if model == "spcfw":
                    spcfw_deck(decks[model, ranks])
            # every deck once per round, its fastest round kept: what else runs on the
            # machine only slows a run down, and every deck meets the same quiet moments
            best, atoms = {}, {}
            for _ in range(args.rounds):
                for key, d in decks.items():
                    run_lammps(d, ranks=key[1])
                    s, atoms[key] = loop_seconds(d.parent / "log.lammps")
                    if s < best.get(key, np.inf):
                        best[key] = s
                        (d.parent / "log.lammps").replace(d.parent / "best.log")
            base = best["spcfw", 1]
            for (model, ranks), s in best.items():
                label = "SPC/Fw (lj/cut/coul/long, pppm)" if model == "spcfw" else f"learned {model} (tables)"
                line = f"{label + f', {ranks} rank(s)':44s} {atoms[model, ranks]:7d} {1e3 * s:10.2f} " \
                       f"{1e6 * s / atoms[model, ranks]:13.3f} {s / base:9.2f}"
                if ranks == 2:
                    one, two = (decks[model, r].parent / "best.log" for r in (1, 2))
                    line += f"   speed-up {best[model, 1] / s:.2f}x, thermo differs by " \
                            f"{max_thermo_difference(one, two):.1e}"
                print(line, flush=True)

if __name__ == "__main__":
    main()
