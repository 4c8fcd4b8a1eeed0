"""LAMMPS speed: pair_style python against tables on the same deck, and 1 against 2 MPI
ranks on a large box. Every number is measured in this run (LAMMPS's own Loop time).

    python benchmarks/lammps_speed.py [--steps 100] [--replicate 4]
"""

import argparse
import re
import tempfile
from pathlib import Path

import numpy as np

from lammps_plugin.run import run_lammps
from lammps_plugin.writer import write_deck
from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.losses.fit import fit_modes


def loop_seconds(log: Path) -> tuple[float, int]:
    m = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps with (\d+) atoms", log.read_text())
    seconds, steps, atoms = m[-1]
    return float(seconds) / int(steps), int(atoms)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--replicate", type=int, default=4, help="large box = N x N x N copies of 64 waters")
    args = ap.parse_args()
    run, water = load_water_run(example_run_dir())
    idx = np.arange(0, run.n_frames, 4)
    model = fit_modes(run.positions[idx], run.forces[idx], run.box_nm[idx], water, modes=("reciprocal",),
                      progress=False)["reciprocal"].model
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_path = model.save(tmp / "reciprocal.json")

        def deck(name, pair, steps, replicate=(1, 1, 1)):
            return write_deck(tmp / name, model_path, run.positions[-1], run.velocities[-1], run.box_nm[-1],
                              water.species, water.molecules, temperature_k=300.0, timestep_ps=0.0005,
                              steps=steps, pair=pair, replicate=replicate, dump_every=10**6).deck

        rows = {}
        for pair, package in (("python", "PYTHON"), ("table", None)):
            d = deck(f"small-{pair}", pair, args.steps)
            run_lammps(d, package=package)
            rows[f"pair_style {pair}, 64 waters, 1 rank"] = loop_seconds(d.parent / "log.lammps")
        n = args.replicate
        for ranks in (1, 2):
            d = deck(f"large-{ranks}", "table", args.steps, (n, n, n))
            run_lammps(d, ranks=ranks)
            rows[f"pair_style table, {64 * n**3} waters, {ranks} rank(s)"] = loop_seconds(d.parent / "log.lammps")
    print(f"{'deck':45s} {'atoms':>7s} {'ms/step':>10s}")
    for name, (s, atoms) in rows.items():
        print(f"{name:45s} {atoms:7d} {1e3 * s:10.3f}")
    keys = list(rows)
    print(f"pair_style python / table (same deck): {rows[keys[0]][0] / rows[keys[1]][0]:.1f}x slower")
    print(f"1 rank / 2 ranks on {rows[keys[2]][1]} atoms: speed-up {rows[keys[2]][0] / rows[keys[3]][0]:.2f}x")


if __name__ == "__main__":
    main()
