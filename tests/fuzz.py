"""Fuzzing the readers: mutated CP2K files and model files must read correctly or raise the
package's own error naming the file; anything else is a crash.

Targets: the CP2K trajectory (xyz of positions, forces, velocities), energies (.ener),
input (.inp) of a 4-frame copy of the bundled 27-water run, and a model file. Mutations:
truncation, lost and repeated lines, swapped columns, tokens replaced by non-numbers,
NaN, inf, huge or empty values, wrong atom counts, wrong unit strings, binary junk and
flipped bytes. A read that succeeds must give finite arrays of consistent shapes.

    python tests/fuzz.py [--budget 2000] [--seed 1]     (prints the counts per target)

tests/test_fuzz.py runs the same campaign with a small fixed budget.
"""

from __future__ import annotations

import argparse
import lzma
import random
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from openmm_learning.io import Cp2kFormatError, Cp2kRunError, read_cp2k_run
from openmm_learning.io.topology import TopologyError
from openmm_learning.io.water_run import example_run_dir
from openmm_learning.losses.model import LossModel, ModelFileError

#: the package's error types: an input outcome that raises one of them is handled
HANDLED = (Cp2kFormatError, Cp2kRunError, ModelFileError, TopologyError)
TOKENS = ("abc", "nan", "NaN", "inf", "-inf", "1e999", "-1e999", "", "1,5", "0x10", "1e-400", "++1", "9" * 40)
UNITS = ("[parsec]", "[bohr]", "[nm]", "[]", "[angstrom^2]")
FRAMES = 4


def base_run(folder: Path) -> dict:
    """Uncompressed 4-frame copy of the bundled 27-water run in folder: {role: path}."""
    src = example_run_dir("water27-xtb-300K")
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for role in ("pos", "frc", "vel"):
        text = lzma.open(src / f"water27-xtb-300K-{role}-1.xyz.xz", "rt").read().splitlines(keepends=True)
        per_frame = int(text[0]) + 2
        files[role] = folder / f"water27-xtb-300K-{role}-1.xyz"
        files[role].write_text("".join(text[: FRAMES * per_frame]))
    ener = lzma.open(src / "water27-xtb-300K-1.ener.xz", "rt").read().splitlines(keepends=True)
    files["ener"] = folder / "water27-xtb-300K-1.ener"
    files["ener"].write_text("".join(ener[: FRAMES + 1]))
    files["inp"] = folder / "water27-xtb-300K.inp"
    shutil.copyfile(src / "water27-xtb-300K.inp", files["inp"])
    return files


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation of a file's bytes: (its name, the new bytes)."""
    lines = data.split(b"\n")
    kind = rng.choice(("truncate", "drop line", "repeat line", "swap columns", "bad token", "atom count",
                       "units", "junk", "flip bytes"))
    k = rng.randrange(len(lines))
    if kind == "truncate":
        return kind, data[: rng.randrange(len(data))]
    if kind == "drop line":
        return kind, b"\n".join(lines[:k] + lines[k + 1:])
    if kind == "repeat line":
        return kind, b"\n".join(lines[:k + 1] + lines[k:])
    if kind == "swap columns":
        cols = lines[k].split()
        if len(cols) >= 2:
            i, j = rng.sample(range(len(cols)), 2)
            cols[i], cols[j] = cols[j], cols[i]
        lines[k] = b"  ".join(cols)
        return kind, b"\n".join(lines)
    if kind == "bad token":
        for _ in range(20):
            k = rng.randrange(len(lines))
            cols = lines[k].split()
            numeric = [i for i, c in enumerate(cols) if c[:1].isdigit() or c[:1] in b"-+."]
            if numeric:
                cols[rng.choice(numeric)] = rng.choice(TOKENS).encode()
                lines[k] = b"  ".join(cols)
                break
        return kind, b"\n".join(lines)
    if kind == "atom count":
        counts = [i for i, line in enumerate(lines) if line.strip().isdigit()]
        if counts:
            lines[rng.choice(counts)] = str(rng.choice((0, 1, 80, 82, 10**9, -3))).encode()
        return kind, b"\n".join(lines)
    if kind == "units":
        for old in (b"[angstrom]", b"[fs]", b"[K]", b'"nm"', b'"kJ/mol"'):
            if old in data:
                return kind, data.replace(old, rng.choice(UNITS).encode(), 1)
        return kind, data
    if kind == "junk":
        at = rng.randrange(len(data) + 1)
        return kind, data[:at] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) + data[at:]
    out = bytearray(data)
    for _ in range(rng.randrange(1, 8)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return kind, bytes(out)


def _check_run(run) -> None:
    """A successful read holds finite arrays of matching shapes (else it is a silent crash)."""
    for name in ("positions", "forces", "velocities"):
        a = getattr(run, name)
        if a is not None and (a.shape != run.positions.shape or not np.all(np.isfinite(a))):
            raise AssertionError(f"{name}: shape {a.shape} or non-finite values read without an error")
    if not np.all(np.isfinite(run.box_nm)) or np.any(run.box_nm <= 0):
        raise AssertionError("a box that is not finite and positive read without an error")
    for name, values in (run.energies or {}).items():  # their own steps: any length
        if not np.all(np.isfinite(values)):
            raise AssertionError(f"energy column {name}: non-finite values read without an error")


def _read_model(path: Path):
    model = LossModel.load(path)
    for c in model.channels:
        if not np.all(np.isfinite(c.values)):
            raise AssertionError("non-finite model values read without an error")
    return model


def campaign(budget: int, seed: int = 1, workdir: Path | None = None, model: LossModel | None = None) -> dict:
    """`budget` mutated inputs per target; returns {target: Counter of outcomes} where an
    outcome is "read", "error" (the package's, naming the file) or "crash: ..." (anything else)."""
    rng = random.Random(seed)
    work = Path(workdir or tempfile.mkdtemp())
    files = base_run(work / "base")
    read_cp2k_run(None, **files)  # the base must read
    targets = {role: files[role] for role in ("pos", "frc", "vel", "ener", "inp")}
    if model is not None:
        targets["model"] = model.save(work / "base" / "model.json")
    results = {}
    for role, original in targets.items():
        counts = Counter()
        data = original.read_bytes()
        for trial in range(budget):
            kind, new = mutate(data, rng)
            case = work / f"{role}-{trial}"
            case.mkdir()
            mutated = case / original.name
            mutated.write_bytes(new)
            try:
                if role == "model":
                    _read_model(mutated)
                else:
                    _check_run(read_cp2k_run(None, **dict(files, **{role: mutated})))
                counts["read"] += 1
            except HANDLED as e:
                counts["error" if original.name in str(e) else f"crash: error without the file name ({kind})"] += 1
            except Exception as e:  # noqa: BLE001 - every other outcome is what the campaign counts
                counts[f"crash: {type(e).__name__} ({kind}): {str(e)[:80]}"] += 1
            shutil.rmtree(case)
        results[role] = counts
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=int, default=2000, help="mutated inputs per target")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    from openmm_learning.io.water_run import load_water_run
    from openmm_learning.losses.fit import FitSettings, fit_modes

    run, system = load_water_run(example_run_dir())
    idx = np.arange(0, run.n_frames, 20)
    model = fit_modes(run.positions[idx], run.forces[idx], run.box_nm[idx], system, ("reciprocal",),
                      FitSettings(charges=False), progress=False)["reciprocal"].model
    results = campaign(args.budget, args.seed, model=model)
    total = crashes = 0
    for role, counts in results.items():
        n = sum(counts.values())
        bad = sum(v for k, v in counts.items() if k.startswith("crash"))
        total, crashes = total + n, crashes + bad
        print(f"{role:6s} {n:6d} inputs: {counts['read']:6d} read, {counts['error']:6d} errors naming the file, "
              f"{bad} crashes")
        for k, v in counts.items():
            if k.startswith("crash"):
                print(f"         {v:5d} x {k}")
    print(f"total {total} inputs, {crashes} crashes")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
