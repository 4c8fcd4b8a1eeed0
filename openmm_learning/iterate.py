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
from pathlib import Path

import numpy as np

from .io.atomic import write_json_atomic
from .io.cp2k_exec import run_cp2k
from .io.cp2k_reader import read_cp2k_run
from .io.cp2k_writer import write_single_points
from .io.water_run import load_water_run
from .losses.fit import FitSettings, fit_modes, force_errors, sha256_of
from .losses.model import LossModel, model_deviation


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


def _dynamics(model_path, run, system, folder: Path, temperature_k, ps, report_interval, seed, progress):
    """Learning dynamics of a model at a temperature; returns the reported positions (nm)."""
    import mdtraj

    from .openmm.simulate import simulate

    model = LossModel.load(model_path)
    dt = run.settings.timestep_ps
    simulate(model, run.positions[-1], None, run.box_nm[-1], system.species, system.molecules,
             temperature_k=temperature_k, timestep_ps=dt, steps=int(round(ps / dt)), out_dir=folder,
             report_interval=report_interval, progress=progress, seed=seed, equilibration_ps=0.5,
             replica=run.replica, collision_time_ps=run.settings.csvr_time_ps)
    traj = mdtraj.load(str(folder / "trajectory.dcd"), top=str(folder / "topology.pdb"))
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


def iterate(run_dir, out_dir, *, rounds=1, temperatures=None, ps=2.0, points=16, test_points=8,
            spacing=5, report_interval=20, mode="reciprocal", settings: FitSettings | None = None,
            threads=1, seed=1, progress=True) -> list[dict]:
    """The loop of this module's docstring; returns every round's record (round.json).
    temperatures: of the learning dynamics (K; default the run's own)."""
    from .workflow import say_replica

    settings = settings or FitSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run, system = load_water_run(run_dir, r_cut=settings.r_cut)
    if run.replica > 1:
        raise ValueError(f"{run_dir}: iterate needs a box of at least twice the cutoff "
                         f"({2 * settings.r_cut:g} nm); single points of a replica are not supported yet")
    say_replica(run, progress)
    if run.forces is None or run.files.get("inp") is None:
        raise FileNotFoundError(f"{run_dir}: iterate needs the run's forces and its CP2K input file")
    run_input = run.files["inp"]
    temperatures = tuple(temperatures or (run.settings.temperature_k,))
    box = np.asarray(run.box_nm[-1], float)
    extra_pos, extra_frc = np.zeros((0, *run.positions.shape[1:])), np.zeros((0, *run.forces.shape[1:]))
    test = None
    records = []
    for r in range(rounds + 1):  # the last round refits and measures only
        folder = out / f"round-{r}"
        model_path = folder / "fit" / f"{mode}.json"
        if not model_path.exists():
            _say(progress, f"round {r}: fitting {mode} with its committee on {run.n_frames} CP2K frames "
                           f"+ {len(extra_pos)} single points")
            pos = np.concatenate([extra_pos, run.positions])
            frc = np.concatenate([extra_frc, run.forces])
            boxes = np.concatenate([np.repeat(box[None], len(extra_pos), 0), run.box_nm])
            res = fit_modes(pos, frc, boxes, system, (mode,), settings,
                            {"cp2k_project": run.project, "iterate_round": r}, progress, committee=True)[mode]
            for k, member in enumerate(res.committee):
                member.save(folder / "fit" / "committee" / f"{mode}-{k}.json")
            res.model.save(model_path)  # last: its presence marks the stage done
        model = LossModel.load(model_path)
        committee = [LossModel.load(p) for p in sorted((folder / "fit" / "committee").glob(f"{mode}-*.json"))]
        picked_pos, dyn_stats = [], {}
        for t in temperatures if r < rounds else ():
            _say(progress, f"round {r}: {ps:g} ps of learning dynamics at {t:g} K")
            traj = _dynamics(model_path, run, system, folder / f"dynamics-{t:g}K", t, ps, report_interval,
                             seed + r, progress)
            dev, outside = frame_uncertainty(model, committee, traj, box, system)
            score = dev + np.where(outside > 0, dev.max() + 1.0, 0.0)  # out of range first
            chosen = pick_frames(score, points, spacing)
            dyn_stats[f"{t:g}"] = {"frames": len(traj), "deviation_mean": float(dev.mean()),
                                   "deviation_max": float(dev.max()),
                                   "out_of_range_fraction": float(np.mean(outside > 0)), "picked": chosen}
            picked_pos.append(traj[chosen])
            if r == 0 and t == temperatures[0]:
                others = np.setdiff1d(np.arange(len(traj)), chosen)
                spread = others[np.linspace(0, len(others) - 1, test_points).round().astype(int)]
                _say(progress, f"test points: {len(spread)} frames of this run, computed by CP2K")
                test = _cp2k_points(run_input, traj[spread], run.elements, box, out / "test",
                                    f"{run.project}-test", threads)
        test = test or read_cp2k_run(out / "test")
        pred = np.stack([model.forces(p, box, system.species, system.molecules)[0] for p in test.positions])
        record = {"round": r, "model_sha256": sha256_of(model_path), "training_single_points": len(extra_pos),
                  "held_out_of_run": model.fit_metrics["held_out"],
                  "test_points": force_errors(test.forces, pred, system.species), "dynamics": dyn_stats}
        _say(progress, f"round {r}: force RMSE on the {len(pred)} test points: O "
                       f"{record['test_points']['O']['rmse']:.1f}, H {record['test_points']['H']['rmse']:.1f} "
                       "kJ/mol/nm")
        write_json_atomic(folder / "round.json", record)
        records.append(record)
        if r == rounds or (len(records) >= 2 and _total(records[-1]) > 0.99 * _total(records[-2])):
            break  # the last round, or one that no longer improves the test points
        _say(progress, f"round {r}: CP2K single points of {sum(len(p) for p in picked_pos)} picked frames")
        new = _cp2k_points(run_input, np.concatenate(picked_pos), run.elements, box, folder / "points",
                           f"{run.project}-round{r}", threads)
        extra_pos = np.concatenate([extra_pos, new.positions])
        extra_frc = np.concatenate([extra_frc, new.forces])
    write_json_atomic(out / "iterate.json", records)
    return records


def _total(record) -> float:
    """One number for a round: the force RMSE of both species on the test points."""
    e = record["test_points"]
    return float(np.hypot(e["O"]["rmse"], e["H"]["rmse"]))
