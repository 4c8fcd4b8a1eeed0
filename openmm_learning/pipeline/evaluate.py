"""How good is a model on a CP2K run it was not fitted on? (`openmm-learning evaluate`)

``evaluate(model, run)`` predicts the agent forces of every chosen frame of any CP2K run
that has forces (any box: a box under twice the cutoff becomes its periodic replica)
and returns per-frame and per-atom errors against CP2K's, per species absolute and
relative, the largest errors with their frame and CP2K atom, and the fraction of frames
with an invariant outside the fitted range. With a committee (`fit --committee`: the
model refitted without each cross-validation block) it also gives every frame's model
deviation as DP-GEN defines it: the largest over atoms of the spread of the members'
force vectors, sqrt(mean_k |F_k - mean F|^2). ``write_evaluation`` saves
evaluation.json, per_frame.csv, parity.png and frames.png.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import numpy as np

from ..io.atomic import write_json_atomic, write_text_atomic
from ..io.topology import SPECIES
from ..io.water_run import load_water_run
from ..losses.fit import force_errors
from ..losses.model import LossModel, model_deviation

#: how many of the largest per-atom errors the summary lists
N_LARGEST = 10


def parse_frames(text: str | None) -> slice:
    """'A:B:S' (Python slice of the run's frames, any part may be empty) -> slice."""
    if text is None or text == "":
        return slice(None)
    parts = text.split(":")
    if len(parts) > 3:
        raise ValueError(f"--frames {text!r}: use A:B:S (start, stop, stride; any may be left out)")
    try:
        values = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ValueError(f"--frames {text!r}: A, B and S must be whole numbers, e.g. 0:600:10") from None
    if len(values) == 3 and values[2] is not None and values[2] <= 0:
        raise ValueError(f"--frames {text!r}: the stride must be positive")
    return slice(*values) if len(values) > 1 else slice(values[0], values[0] + 1 if values[0] != -1 else None)


def committee_paths(model_path) -> list[Path]:
    """The committee that `fit --committee` wrote beside a model: committee/MODE-k.json."""
    model_path = Path(model_path)
    return sorted((model_path.parent / "committee").glob(f"{model_path.stem}-*.json"))


@dataclass
class Evaluation:
    summary: dict
    per_frame: dict  # column -> array (n_frames,)
    reference: np.ndarray = field(repr=False)  # (n_frames, n_atoms, 3) of the original box
    predicted: np.ndarray = field(repr=False)
    species: np.ndarray = field(repr=False)


def evaluate(model: LossModel, run_dir, frames: slice = slice(None), committee=(), *, allow_truncated=False,
             progress=True, model_path=None) -> Evaluation:
    """Errors of `model` on the frames of a CP2K run (see the module). committee: LossModels."""
    from tqdm import tqdm

    run, system = load_water_run(run_dir, allow_truncated, r_cut=model.r_cut)
    if run.forces is None:
        raise FileNotFoundError(f"{run_dir}: the run has no forces file (*-frc-*.xyz); evaluate compares "
                                "with CP2K's forces")
    index = np.arange(run.n_frames)[frames]
    if len(index) == 0:
        raise ValueError(f"{run_dir}: no frames in {frames.start}:{frames.stop}:{frames.step} of the run's "
                         f"{run.n_frames}")
    n_atoms = len(run.elements) // run.replica**3  # errors on the original box (the copies repeat it)
    species = system.species[:n_atoms]
    reference = np.asarray(run.forces[index][:, :n_atoms], float)
    predicted = np.empty_like(reference)
    out_of_range = np.zeros(len(index), int)
    deviation = np.full(len(index), np.nan)
    for i, f in enumerate(tqdm(index, desc="evaluate", unit="frame", disable=not progress)):
        pos, box = np.ascontiguousarray(run.positions[f], float), np.asarray(run.box_nm[f], float)
        predicted[i] = model.forces(pos, box, system.species, system.molecules)[0][:n_atoms]
        out_of_range[i] = model.channels_outside(pos, box, system.species, system.molecules)
        if committee:
            deviation[i] = model_deviation([m.forces(pos, box, system.species, system.molecules)[0][:n_atoms]
                                            for m in committee])
    err = predicted - reference
    per_atom = np.linalg.norm(err, axis=2)  # (frames, atoms)
    per_frame = {"frame": index, "step": run.steps[index], "time_ps": run.times_ps[index]}
    for s, name in enumerate(SPECIES):
        per_frame[f"rmse_{name}"] = np.sqrt(np.mean(err[:, species == s] ** 2, axis=(1, 2)))
    per_frame.update(max_atom_error=per_atom.max(axis=1), out_of_range_channels=out_of_range,
                     committee_deviation=deviation)
    order = np.argsort(per_atom, axis=None)[::-1][:N_LARGEST]
    largest = []
    for flat in order:
        i, a = divmod(int(flat), n_atoms)
        largest.append({"frame": int(index[i]), "step": int(run.steps[index[i]]),
                        "time_ps": float(run.times_ps[index[i]]), "cp2k_atom": int(system.cp2k_index[a]),
                        "species": SPECIES[species[a]], "error": float(per_atom[i, a]),
                        "cp2k_force": float(np.linalg.norm(reference[i, a]))})
    errors = force_errors(reference, predicted, species)
    for s, name in enumerate(SPECIES):
        errors[name]["mae"] = float(np.mean(np.abs(err[:, species == s])))
    summary = {
        "model": str(model_path) if model_path else None, "mode": model.mode,
        "basis": sorted({c.basis for c in model.channels}), "run": str(run_dir), "cp2k_project": run.project,
        "replica": run.replica, "n_frames": int(len(index)), "frames": [int(index[0]), int(index[-1])],
        "stride": int(index[1] - index[0]) if len(index) > 1 else 1,
        "errors_kJmol_nm": errors, "largest_errors": largest,
        "out_of_range_fraction": float(np.mean(out_of_range > 0)),
        "committee": None if not committee else {
            "members": len(committee), "deviation_mean_kJmol_nm": float(np.mean(deviation)),
            "deviation_max_kJmol_nm": float(np.max(deviation)),
            "deviation_max_frame": int(index[int(np.argmax(deviation))])},
    }
    return Evaluation(summary, per_frame, reference, predicted, species)


def write_evaluation(ev: Evaluation, out_dir) -> dict:
    """evaluation.json, per_frame.csv, parity.png and frames.png in out_dir; returns their paths."""
    from ..validation.plots import evaluation_frames_plot, parity_plot

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "evaluation.json", "csv": out / "per_frame.csv", "parity": out / "parity.png",
             "frames": out / "frames.png"}
    write_json_atomic(paths["json"], ev.summary)
    table = StringIO()
    w = csv.writer(table, lineterminator="\n")
    w.writerow(list(ev.per_frame))
    for row in zip(*ev.per_frame.values()):
        w.writerow([f"{v:.6g}" if isinstance(v, float | np.floating) else int(v) for v in row])
    write_text_atomic(paths["csv"], table.getvalue())
    parity_plot({ev.summary["mode"]: (ev.reference, ev.predicted)}, ev.species, paths["parity"])
    evaluation_frames_plot(ev.per_frame, paths["frames"])
    return paths


def summary_lines(summary: dict) -> list[str]:
    """What `openmm-learning evaluate` prints."""
    e = summary["errors_kJmol_nm"]
    lines = [f"{summary['mode']} model on {summary['cp2k_project']} ({summary['n_frames']} frames "
             f"{summary['frames'][0]}-{summary['frames'][1]}"
             + (f", {summary['replica']}x{summary['replica']}x{summary['replica']} replica" if summary["replica"] > 1
                else "") + "):"]
    for name in SPECIES:
        lines.append(f"  {name}: force RMSE {e[name]['rmse']:.1f} kJ/mol/nm ({100 * e[name]['relative_rmse']:.1f} %), "
                     f"MAE {e[name]['mae']:.1f}, largest component error {e[name]['max_abs_error']:.0f}")
    lines.append(f"  frames with an invariant outside the fitted range: {100 * summary['out_of_range_fraction']:.1f} %")
    c = summary["committee"]
    if c:
        lines.append(f"  committee of {c['members']}: model deviation mean {c['deviation_mean_kJmol_nm']:.1f}, "
                     f"max {c['deviation_max_kJmol_nm']:.1f} kJ/mol/nm (frame {c['deviation_max_frame']})")
    top = summary["largest_errors"][0]
    lines.append(f"  largest error: {top['error']:.0f} kJ/mol/nm on CP2K atom {top['cp2k_atom']} ({top['species']}), "
                 f"frame {top['frame']} (step {top['step']})")
    return lines
