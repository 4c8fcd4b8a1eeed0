"""Closed loop with CP2K (`openmm-learning iterate`): fit, run learning dynamics where the
model will be used, let CP2K compute the frames the model is least sure of, refit.

Round r (folder round-r/):
1. fit/: the mode and its committee (fit --committee) on the run's frames plus every
   single point of the earlier rounds (put first: they train, the run's last part stays
   the held-out split);
2. dynamics-TK/: learning dynamics of that model at each temperature, from the run's
   last frame (Langevin to the temperature first);
3. points/: the frames of those runs with the largest committee deviation or an invariant
   outside the fitted range, at least `spacing` reports apart (diverse, not consecutive),
   computed by CP2K with the run's own input (io.write_single_points);
4. round.json: the held-out errors, and the errors on the test points.
The test points (test/) are frames of round 0's dynamics that no round trains on,
computed the same way: they measure what the loop buys where the model is used.
Every stage is skipped when its output exists, so an interrupted loop resumes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dynamics import Dynamics, StartFrame
from ..io.atomic import write_json_atomic
from ..io.run_folder import RunFolder
from ..io.cp2k_exec import run_cp2k
from ..io.cp2k_reader import read_cp2k_run
from ..io.cp2k_writer import write_single_points
from ..io.water_run import load_water_run
from ..losses.fit import FitSettings, fit_modes, force_errors, sha256_of
from ..losses.model import LossModel, model_deviation


def _say(progress, text):
    if progress:
        print(f"[iterate] {text}", file=sys.stderr)


def _cp2k_points(run_input, positions, elements, box, folder: Path, project: str, threads: int):
    """CP2K energies and forces of the frames (read back when this folder already has them)."""
    done = folder / "done.json"
    if done.exists():
        return read_cp2k_run(folder)
    inp = write_single_points(run_input, positions, elements, box, folder, project)
    result = run_cp2k(inp, threads=threads)
    if result.forces is None or len(result.forces) != len(positions):
        raise RuntimeError(f"{inp}: CP2K returned {0 if result.forces is None else len(result.forces)} "
                           f"frames of forces for {len(positions)}")
    write_json_atomic(done, {"frames": len(positions), "seconds_per_frame": float(
        np.mean(result.energies["used_time"])) if result.energies is not None else None})
    return result


def _dynamics(model: LossModel, run, water, folder: Path, temperature_k, loop: "LoopSettings", seed, progress):
    """Learning dynamics of a model at a temperature (CSVR, after the default Langevin
    equilibration, from the run's last frame); returns the reported positions (nm)."""
    import mdtraj

    from ..openmm.simulate import Reporting, simulate

    dynamics = Dynamics.from_run(run, loop.ps, thermostat="csvr", seed=seed, temperature_k=temperature_k)
    simulate(model, StartFrame.of_run(run, water, -1, velocities=False), dynamics, folder,
             reporting=Reporting(loop.report_interval, progress=progress))
    f = RunFolder(folder)
    traj = mdtraj.load(str(f.trajectory), top=str(f.topology))
    return np.asarray(traj.xyz, float)


def frame_uncertainty(model: LossModel, committee, positions, box, system) -> tuple[np.ndarray, np.ndarray]:
    """Committee deviation (kJ/mol/nm) and channels outside the fitted range, per frame."""
    dev, out = np.zeros(len(positions)), np.zeros(len(positions), int)
    for i, pos in enumerate(positions):
        pos = np.ascontiguousarray(pos)
        dev[i] = model_deviation([m.forces(pos, box, system.species, system.molecules)[0] for m in committee])
        out[i] = model.channels_outside(pos, box, system.species, system.molecules)
    return dev, out


def pick_frames(score, n: int, spacing: int, exclude=()) -> list[int]:
    """The n highest-scoring frames, each at least `spacing` frames from every other pick
    and from `exclude`: the most uncertain frames of distinct moments, not one moment n times."""
    taken = list(exclude)
    picks = []
    for i in np.argsort(score)[::-1]:
        if len(picks) == n:
            break
        if all(abs(int(i) - j) >= spacing for j in taken):
            picks.append(int(i))
            taken.append(int(i))
    return sorted(picks)


@dataclass(frozen=True)
class LoopSettings:
    """The loop's choices: rounds of new single points; temperatures (K) of the learning
    dynamics that pick frames (default the run's own), ps of dynamics per temperature and
    round, reported every report_interval steps; points picked per temperature and round,
    at least `spacing` reports apart; test_points of round 0's first dynamics kept for
    testing only; the mode fitted; CP2K's OpenMP threads; the first seed."""

    rounds: int = 1
    temperatures: tuple | None = None
    ps: float = 2.0
    points: int = 16
    test_points: int = 8
    spacing: int = 5
    report_interval: int = 20
    mode: str = "reciprocal"
    threads: int = 1
    seed: int = 1


def iterate(run_dir, out_dir, loop: LoopSettings | None = None, settings: FitSettings | None = None,
            progress=True) -> list[dict]:
    """The loop of this module's docstring; returns every round's record (round.json)."""
    from .fit import say_replica

    loop, settings = loop or LoopSettings(), settings or FitSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run, water = load_water_run(run_dir, r_cut=settings.r_cut)
    if run.replica > 1:
        raise ValueError(f"{run_dir}: iterate needs a box of at least twice the cutoff "
                         f"({2 * settings.r_cut:g} nm); single points of a replica are not supported yet")
    say_replica(run, progress)
    if run.forces is None or run.files.get("inp") is None:
        raise FileNotFoundError(f"{run_dir}: iterate needs the run's forces and its CP2K input file")
    temperatures = tuple(loop.temperatures or (run.settings.temperature_k,))
    extra = (np.zeros((0, *run.positions.shape[1:])), np.zeros((0, *run.forces.shape[1:])))
    records = []
    for r in range(loop.rounds + 1):  # the last round refits and measures only
        record, picked = _round(r, run, water, out, extra, loop, settings, temperatures, progress)
        records.append(record)
        if r == loop.rounds or (len(records) >= 2 and _total(records[-1]) > 0.99 * _total(records[-2])):
            break  # the last round, or one that no longer improves the test points
        _say(progress, f"round {r}: CP2K single points of {sum(len(p) for p in picked)} picked frames")
        new = _cp2k_points(run.files["inp"], np.concatenate(picked), run.elements, run.box_nm[-1],
                           out / f"round-{r}" / "points", f"{run.project}-round{r}", loop.threads)
        extra = (np.concatenate([extra[0], new.positions]), np.concatenate([extra[1], new.forces]))
    write_json_atomic(out / "iterate.json", records)
    return records


def _fit_round(r, run, water, folder: Path, extra, loop: LoopSettings, settings, progress) -> Path:
    """Round r's model and committee on the run's frames plus the single points so far."""
    model_path = folder / "fit" / f"{loop.mode}.json"
    if model_path.exists():
        return model_path
    _say(progress, f"round {r}: fitting {loop.mode} with its committee on {run.n_frames} CP2K frames "
                   f"+ {len(extra[0])} single points")
    box = np.asarray(run.box_nm[-1], float)
    boxes = np.concatenate([np.repeat(box[None], len(extra[0]), 0), run.box_nm])
    res = fit_modes(np.concatenate([extra[0], run.positions]), np.concatenate([extra[1], run.forces]), boxes, water,
                    (loop.mode,), settings, {"cp2k_project": run.project, "iterate_round": r}, progress,
                    committee=True)[loop.mode]
    for k, member in enumerate(res.committee):
        member.save(folder / "fit" / "committee" / f"{loop.mode}-{k}.json")
    res.model.save(model_path)  # last: its presence marks the stage done
    return model_path


def _round(r, run, water, out: Path, extra, loop: LoopSettings, settings, temperatures, progress):
    """Fit, run the dynamics that pick frames, score the test points; (record, picked frames)."""
    folder = out / f"round-{r}"
    model_path = _fit_round(r, run, water, folder, extra, loop, settings, progress)
    model = LossModel.load(model_path)
    committee = [LossModel.load(p) for p in sorted((folder / "fit" / "committee").glob(f"{loop.mode}-*.json"))]
    box = np.asarray(run.box_nm[-1], float)
    picked, dyn_stats, test = [], {}, None
    for t in temperatures if r < loop.rounds else ():
        _say(progress, f"round {r}: {loop.ps:g} ps of learning dynamics at {t:g} K")
        traj = _dynamics(model, run, water, folder / f"dynamics-{t:g}K", t, loop, loop.seed + r, progress)
        dev, outside = frame_uncertainty(model, committee, traj, box, water)
        score = dev + np.where(outside > 0, dev.max() + 1.0, 0.0)  # out of range first
        chosen = pick_frames(score, loop.points, loop.spacing)
        dyn_stats[f"{t:g}"] = {"frames": len(traj), "deviation_mean": float(dev.mean()),
                               "deviation_max": float(dev.max()),
                               "out_of_range_fraction": float(np.mean(outside > 0)), "picked": chosen}
        picked.append(traj[chosen])
        if r == 0 and t == temperatures[0]:
            others = np.setdiff1d(np.arange(len(traj)), chosen)
            spread = others[np.linspace(0, len(others) - 1, loop.test_points).round().astype(int)]
            _say(progress, f"test points: {len(spread)} frames of this run, computed by CP2K")
            test = _cp2k_points(run.files["inp"], traj[spread], run.elements, box, out / "test",
                                f"{run.project}-test", loop.threads)
    test = test or read_cp2k_run(out / "test")  # computed in round 0
    pred = np.stack([model.forces(p, box, water.species, water.molecules)[0] for p in test.positions])
    record = {"round": r, "model_sha256": sha256_of(model_path), "training_single_points": len(extra[0]),
              "held_out_of_run": model.fit_metrics["held_out"],
              "test_points": force_errors(test.forces, pred, water.species), "dynamics": dyn_stats}
    e = record["test_points"]
    _say(progress, f"round {r}: force RMSE on the {len(pred)} test points: O {e['O']['rmse']:.1f}, "
                   f"H {e['H']['rmse']:.1f} kJ/mol/nm")
    write_json_atomic(folder / "round.json", record)
    return record, picked


def _total(record) -> float:
    """One number for a round: the force RMSE of both species on the test points."""
    e = record["test_points"]
    return float(np.hypot(e["O"]["rmse"], e["H"]["rmse"]))
