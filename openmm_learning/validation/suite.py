"""The validation suite: a CP2K water run in, the report a chemist would publish out.

``run_validation(reference, out_dir, ...)`` answers: does the learned simulation
reproduce CP2K, better than a classical model, and at what cost? Every stage writes
into its own folder of out_dir and is skipped when its output is complete and was made
from the same inputs (a stamp file says which), so an interrupted validation resumes:

    fit/              both modes fitted on the training steps (when no model is given)
    learning-curve/   held-out force RMSE against the number of training frames
    agents/           per-channel sensitivity of every learned model, held-out force errors
    sim-NAME/         OpenMM dynamics at the reference's state, resumed from its checkpoint;
                      velocities.npy: a short recording after it for the spectrum
    sim-spcfw/        the SPC/Fw baseline (spcfw.py), run the same way
    report.md, report.html, metrics.json, *.png    validation.validate over all rows

The comparison itself (metrics, thresholds, report) is validation.py; this module
only decides what to run and feeds it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..io import Cp2kRun
from ..io.atomic import write_json_atomic
from ..io.topology import KINETIC_KINDS, SPECIES, WaterSystem
from ..io.water_run import default_equilibration_ps, equipartition_line, load_water_run, trajectory_of
from ..losses.fit import (FitSettings, file_hashes, fit_modes, force_errors, learning_curve, sha256_of,
                          training_provenance)
from ..losses.model import CSVR_TIME_PS, LossModel
from ..losses.channels import CHANNEL_KEYS
from ..openmm.reporters import SimulationError
from ..units import MASSES_AMU
from . import analysis
from .comparisons import light_water

BASELINE_NAME = "SPC/Fw"
SPCFW_CITATION = "SPC/Fw: Wu, Tepper & Voth, J. Chem. Phys. 124, 024503 (2006); OpenMM PME, 0.6 nm cutoff"
STAMP = "stage.json"
#: written into a run's folder when the run blew up (its error): the row is judged without it
BLOW_UP = "blew_up.json"
#: independent runs per row by default: above what the power study needs for each planted
#: subtle failure these settings can decide (validation/README.md, power table)
RUNS_PER_ROW = 16


# --------------------------------------------------------------------------- small helpers

def parse_steps(text) -> tuple[int | None, int | None] | None:
    """"A:B" -> (A, B): CP2K steps A <= step < B; either end may be left open ("1500:")."""
    if text is None or isinstance(text, tuple):
        return text
    m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", str(text))
    if not m:
        raise ValueError(f"--train-steps must look like A:B (CP2K step numbers), not {text!r}")
    a, b = (int(x) if x else None for x in m.groups())
    if a is not None and b is not None and b <= a:
        raise ValueError(f"--train-steps {text}: the end must come after the start")
    return a, b


def _step_mask(steps, span, stride: int = 1) -> np.ndarray:
    every = np.arange(len(steps)) % stride == 0
    if span is None:
        return every
    a, b = span
    return (
        every & (steps >= (a if a is not None else steps.min())) & (steps < (b if b is not None else steps.max() + 1))
    )


def _stage_done(folder: Path, stamp: dict, *files) -> bool:
    """The stage's files exist and were made from the same inputs."""
    f = folder / STAMP
    try:
        same = f.exists() and json.loads(f.read_text()) == json.loads(json.dumps(stamp))
    except ValueError:  # a damaged stamp vouches for nothing: the stage runs again
        return False
    return same and all((folder / x).exists() for x in files)


def _write_stamp(folder: Path, stamp: dict):
    write_json_atomic(folder / STAMP, stamp)


def _say(progress, text):
    if progress and text:
        tqdm.write(f"[validate] {text}")


# --------------------------------------------------------------------------- fit and learning curve

def fit_stage(run: Cp2kRun, system: WaterSystem, out: Path, train_steps=None,
              settings: FitSettings | None = None, progress=True) -> dict:
    """Fit both modes on the training steps; write fit/{agent,reciprocal}.json and plots."""
    from .plots import channel_plot, parity_plot

    settings = settings or FitSettings()
    mask = _step_mask(run.steps, train_steps, settings.frame_stride)
    stamp = {"project": run.project, "n_frames": run.n_frames, "train_steps": list(train_steps or (None, None)),
             "train_frames": int(mask.sum()), "settings": repr(settings)}
    paths = {m: out / f"{m}.json" for m in ("agent", "reciprocal")}
    if _stage_done(out, stamp, *[p.name for p in paths.values()]):
        _say(progress, f"fit: cached in {out}")
        return paths
    if run.forces is None:
        raise ValueError(f"CP2K run {run.project}: no forces file; fitting needs one (or give --model)")
    idx = np.flatnonzero(mask)
    _say(progress, f"fit: {len(idx)} frames, steps {run.steps[idx[0]]}-{run.steps[idx[-1]]}")
    provenance = training_provenance(run, idx)
    _say(progress, equipartition_line(run, provenance["training_kinetic_K"]))
    results = fit_modes(run.positions[idx], run.forces[idx], run.box_nm[idx], system, ("agent", "reciprocal"),
                        settings, provenance, progress)
    out.mkdir(parents=True, exist_ok=True)
    for mode, res in results.items():
        res.model.save(paths[mode])
    parity_plot(results, system.species, out / "parity.png")
    channel_plot({m: r.model for m, r in results.items()}, out / "channels.png")
    write_json_atomic(out / "fit.json", {m: r.model.fit_metrics["held_out"] for m, r in results.items()})
    _write_stamp(out, stamp)
    return paths


def learning_curve_stage(run: Cp2kRun, system: WaterSystem, out: Path, train_steps=None, sizes=5,
                         settings: FitSettings | None = None, progress=True) -> dict:
    """fit.learning_curve on the training steps; learning_curve.json and .png (cached)."""
    mask = _step_mask(run.steps, train_steps, (settings or FitSettings()).frame_stride)
    stamp = {"project": run.project, "train_steps": list(train_steps or (None, None)),
             "train_frames": int(mask.sum()), "sizes": sizes if np.isscalar(sizes) else list(sizes),
             "settings": repr(settings or FitSettings())}
    if _stage_done(out, stamp, "learning_curve.json", "learning_curve.png"):
        _say(progress, f"learning curve: cached in {out}")
        return json.loads((out / "learning_curve.json").read_text())
    idx = np.flatnonzero(mask)
    lc = learning_curve(run.positions[idx], run.forces[idx], run.box_nm[idx], system, sizes,
                        settings=settings, progress=progress)
    lc["test_steps"] = [int(run.steps[idx[lc["test_frames"][0]]]), int(run.steps[idx[lc["test_frames"][1]]])]
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "learning_curve.json", lc)
    fig, axes = _figure(1, 2, (10, 4))
    for ax, s in zip(axes, SPECIES):
        for mode, err in lc["errors"].items():
            ax.plot(lc["n_frames"], err[s]["rmse"], "o-", label=f"learned {mode}")
        ax.set_xscale("log")
        ax.set_xlabel("training frames")
        ax.set_ylabel(f"held-out force RMSE on {s} (kJ/mol/nm)")
        ax.set_title(f"{s} agents: held-out steps {lc['test_steps'][0]}-{lc['test_steps'][1]}", fontsize=10)
        ax.legend(fontsize=8)
    _save(fig, out / "learning_curve.png")
    _write_stamp(out, stamp)
    return lc


def _figure(nrows, ncols, size):
    # Figure on the Agg canvas: no pyplot state, nothing to close.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(nrows, ncols))


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------- agents

def channel_sensitivity(model: LossModel, positions, boxes, system: WaterSystem) -> dict:
    """How strongly each invariant channel drives the agent forces, per agent species.

    The forces are linear in the spline values, so a channel's contribution is the force
    of the model with every other channel's values set to zero, minus the walls-only
    force (all values zero; the walls are fixed, not fitted, and reported apart). For
    agent species a: RMS over frames, atoms of a and components of each channel's
    contribution (kJ/mol/nm) and that RMS over the RMS of a's total agent force.
    """
    def with_values(keep):
        chans = [replace(c, values=c.values if k in keep else np.zeros_like(c.values))
                 for k, c in enumerate(model.channels)]
        return LossModel(model.mode, chans, model.r_cut, model.r_switch, model.k_wall,
                         asymmetry_range=model.asymmetry_range)

    n_ch = len(model.channels)
    variants = {"all": with_values(range(n_ch)), "walls": with_values(())}
    variants.update({k: with_values((k,)) for k in range(n_ch)})
    # Groups: the own-molecule invariants are redundant (H-H follows from the two O-H and
    # the angle), so single channels can pull against each other; their sum cannot.
    groups = {"own": [k for k, c in enumerate(model.channels) if c.kind != "inter"],
              "other": [k for k, c in enumerate(model.channels) if c.kind == "inter"]}
    variants.update({g: with_values(ks) for g, ks in groups.items()})
    sq = {k: np.zeros(len(SPECIES)) for k in variants}
    counts = np.array([3 * np.sum(system.species == s) * len(positions) for s in range(len(SPECIES))], float)
    for x, box in zip(positions, boxes):
        f = {k: m.forces(x, box, system.species, system.molecules)[0] for k, m in variants.items()}
        for k in variants:
            contrib = f[k] if k in ("all", "walls") else f[k] - f["walls"]
            for s in range(len(SPECIES)):
                sq[k][s] += np.sum(contrib[system.species == s] ** 2)
    rms = {k: np.sqrt(v / counts) for k, v in sq.items()}
    with np.errstate(invalid="ignore", divide="ignore"):  # a species with no force at all: NaN
        rel = {k: v / rms["all"] for k, v in rms.items()}
    out = {"mode": model.mode, "n_frames": int(len(positions)), "agents": {}}
    for s, name in enumerate(SPECIES):
        total = float(rms["all"][s])
        rows = [{"channel": model.channels[k].name, "invariant": _invariant(model.channels[k]),
                 "rms": float(rms[k][s]), "relative": float(rel[k][s])}
                for k, (agent, _, _) in enumerate(CHANNEL_KEYS) if agent == name]
        out["agents"][name] = {"total_rms": total, "walls_rms": float(rms["walls"][s]), "channels": rows,
                               "own_molecule_relative": float(rel["own"][s]),
                               "other_molecules_relative": float(rel["other"][s])}
    return out


def _invariant(ch) -> str:
    if ch.kind == "angle":
        return "H-O-H angle, own molecule"
    return f"{ch.agent}-{ch.neighbour} distance, {'other molecules' if ch.kind == 'inter' else 'own molecule'}"


def held_out_errors(model: LossModel, run: Cp2kRun, system: WaterSystem, max_frames=100) -> dict | None:
    """Force RMSE of a model on the reference frames it was not fitted on (a second segment).

    Frames of the same CP2K project inside the model's training steps are excluded;
    a model fitted on another run is scored on every frame. None when nothing is left.
    """
    if run.forces is None:
        return None
    prov = model.provenance or {}
    mask = np.ones(run.n_frames, bool)
    if prov.get("cp2k_project") == run.project and prov.get("steps"):
        a, b = prov["steps"]
        # A gap of 25 steps (CP2K's frames are correlated over ~10 fs) on both sides.
        mask = (run.steps < a - 25) | (run.steps > b + 25)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return None
    idx = idx[np.unique(np.round(np.linspace(0, len(idx) - 1, min(max_frames, len(idx)))).astype(int))]
    pred = np.stack([model.forces(run.positions[f], run.box_nm[f], system.species, system.molecules)[0]
                     for f in idx])
    errs = force_errors(run.forces[idx], pred, system.species)
    return {"n_frames": int(len(idx)), "steps": [int(run.steps[idx[0]]), int(run.steps[idx[-1]])], **errs}


def agents_stage(models: dict, run: Cp2kRun, system: WaterSystem, out: Path, n_frames=20,
                 progress=True) -> dict:
    """Sensitivity table and plot of every learned model, and held-out errors (cached)."""
    stamp = {"models": {n: sha256_of(p) for n, p in models.items()}, "project": run.project,
             "n_frames": n_frames, "reference_frames": run.n_frames}
    if _stage_done(out, stamp, "agents.json", "sensitivity.png"):
        _say(progress, f"agents: cached in {out}")
        return json.loads((out / "agents.json").read_text())
    if not models:
        return {}
    idx = np.unique(np.round(np.linspace(0, run.n_frames - 1, min(n_frames, run.n_frames))).astype(int))
    result = {}
    for name, path in tqdm(models.items(), desc="agent sensitivity", unit="model", disable=not progress):
        model = loaded_model(path)[0]
        result[name] = {"mode": model.mode, "file": Path(path).name,
                        "fit_held_out": (model.fit_metrics or {}).get("held_out"),
                        "n_train_frames": (model.fit_metrics or {}).get("n_train_frames"),
                        "train_steps": (model.provenance or {}).get("steps"),
                        "sensitivity": channel_sensitivity(model, run.positions[idx], run.box_nm[idx], system),
                        "held_out_segment": held_out_errors(model, run, system)}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "agents.json", result)
    _sensitivity_plot(result, out / "sensitivity.png")
    _write_stamp(out, stamp)
    return result


def _sensitivity_plot(result, path):
    fig, axes = _figure(1, 2, (15, 5))
    names = list(result)
    width = 0.8 / max(len(names), 1)
    for ax, s in zip(axes, SPECIES):
        for k, name in enumerate(names):
            ag = result[name]["sensitivity"]["agents"][s]
            labels = [r["invariant"].replace(", ", "\n") for r in ag["channels"]] + [
                "all own-\nmolecule", "all other-\nmolecule"]
            values = [r["relative"] for r in ag["channels"]] + [ag["own_molecule_relative"],
                                                                ag["other_molecules_relative"]]
            x = np.arange(len(values))
            ax.bar(x + (k - (len(names) - 1) / 2) * width, values, width, label=name)
            ax.set_xticks(x)
            ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylabel("RMS channel force / RMS agent force")
        ax.set_title(f"agent {s}: what drives its force")
        ax.legend(fontsize=8)
    _save(fig, path)


# --------------------------------------------------------------------------- dynamics

def _integrator(summary: dict, species, temperature_k, timestep_ps):
    from ..openmm.integrator import LearningIntegrator

    agent = summary.get("mode") == "agent"
    return LearningIntegrator(temperature_k, timestep_ps, summary.get("collision_time_ps"),
                              summary.get("chain_length"), agent_species=species if agent else None,
                              n_atoms=len(species), seed=summary.get("seed", 0),
                              thermostat=summary.get("thermostat", "nose-hoover"),
                              friction_per_ps=summary.get("friction_per_ps"))


def first_frame_after(run: Cp2kRun, cut_ps: float) -> int:
    """Index of the run's first frame at least cut_ps after its first (its last at most)."""
    return min(int(np.searchsorted(run.times_ps, run.times_ps[0] + cut_ps - 1e-9)), run.n_frames - 1)


def start_frames(run: Cp2kRun, equilibration_ps: float, seeds: int) -> list:
    """Frame indices for independent runs: spread evenly over the reference after its
    equilibration cut, the last frame first."""
    first = first_frame_after(run, equilibration_ps)
    return [int(i) for i in np.round(np.linspace(run.n_frames - 1, first, seeds)).astype(int)]


@functools.lru_cache(maxsize=16)
def _load_model(path: str, mtime_ns: int) -> tuple[LossModel, str]:
    return LossModel.load(path), sha256_of(path)


def loaded_model(path) -> tuple[LossModel, str]:
    """A model file's LossModel and sha256, read once per version of the file (the suite
    needs them for every run of a row)."""
    return _load_model(str(path), Path(path).stat().st_mtime_ns)


def simulate_stage(name, model_path, run: Cp2kRun, system: WaterSystem, out: Path, *, ps, platform="CPU",
                   report_interval=100, progress=True, frame=-1, seed=1, equilibration_ps=2.0):
    """OpenMM dynamics of a model (or the SPC/Fw baseline when model_path is None) from a
    frame of the reference at its state, with velocities drawn at its temperature (seed)
    and `equilibration_ps` of Langevin equilibration first (a CP2K frame of a global
    thermostat's run is out of equipartition); resumes from the folder's checkpoint. Under
    the reference's protocol: its masses, timestep and, for a Langevin reference, its
    friction instead of the model's thermostat."""
    from ..openmm.simulate import simulate
    from ..openmm.spcfw import spcfw_system

    frame = frame % run.n_frames
    model, sha = loaded_model(model_path) if model_path else (None, "SPC/Fw")
    stamp = {"model_sha256": sha, "project": run.project,
             "start_step": int(run.steps[frame]), "temperature_K": run.settings.temperature_k,
             "timestep_ps": run.settings.timestep_ps, "report_interval": report_interval, "seed": seed,
             "equilibration_ps": equilibration_ps, "masses_amu": run.settings.masses_amu,
             "friction_per_ps": run.settings.langevin_friction_per_ps}
    if (out / STAMP).exists() and not _stage_done(out, stamp):
        _say(progress, f"{name}: {out} was made from other inputs; starting it again")
        shutil.rmtree(out)
    _write_stamp(out, stamp)
    dt = run.settings.timestep_ps
    extra = {} if model else {"system": spcfw_system(len(system.molecules), run.box_nm[frame]), "name": name}
    return simulate(model, run.positions[frame], None, run.box_nm[frame], system.species, system.molecules,
                    temperature_k=run.settings.temperature_k, timestep_ps=dt, steps=int(round(ps / dt)),
                    out_dir=out, platform=platform, report_interval=report_interval, progress=progress,
                    seed=seed, equilibration_ps=equilibration_ps, replica=run.replica,
                    collision_time_ps=run.settings.csvr_time_ps, masses_amu=run.settings.masses_amu,
                    friction_per_ps=run.settings.langevin_friction_per_ps, **extra)


#: LAMMPS errors that mean the dynamics blew up, not that the deck or the installation is wrong
LAMMPS_BLOW_UPS = ("Lost atoms", "Out of range atoms", "Bond atoms missing", "Angle atoms missing",
                   "Non-numeric atom coords", "Pair distance < table inner cutoff", "Bond length < table inner cutoff")


def lammps_stage(name, model_path, run: Cp2kRun, system: WaterSystem, out: Path, *, ps, report_interval=100,
                 progress=True, frame=-1, seed=1, equilibration_ps=2.0):
    """Dynamics of a model in LAMMPS in the CP2K cell itself: a box under twice the cutoff
    (`run.replica` > 1), which OpenMM could only run as a larger replica, a different
    system; LAMMPS's ghost atoms hold every image within the cutoff. Under the reference's
    protocol (masses, step, its Langevin friction or CSVR), after `equilibration_ps` of
    Langevin dynamics. Written as simulate_stage writes a run, so that row_of reads it:
    trajectory.dcd and topology.pdb of the cell's periodic replica (analysed as the
    reference is), state.csv with the temperatures of the cell's own atoms, summary.json.
    Agent-mode models run in lammps_plugin.agent (the lammps Python module)."""
    from lammps_plugin.run import read_trajectory_dump, run_lammps
    from lammps_plugin.writer import lammps_units, write_deck

    from ..io.topology import kinetic_temperatures
    from ..openmm.reporters import StateLogReporter

    frame = frame % run.n_frames
    n = run.n_atoms // run.replica**3
    cell = run.box_nm[frame] / run.replica
    dt = run.settings.timestep_ps
    friction = run.settings.langevin_friction_per_ps
    stamp = {"model_sha256": loaded_model(model_path)[1], "project": run.project, "engine": "LAMMPS",
             "start_step": int(run.steps[frame]), "temperature_K": run.settings.temperature_k, "timestep_ps": dt,
             "report_interval": report_interval, "seed": seed, "equilibration_ps": equilibration_ps,
             "masses_amu": run.settings.masses_amu, "friction_per_ps": friction, "ps": ps}
    if _stage_done(out, stamp, "summary.json"):
        return
    if out.exists():
        shutil.rmtree(out)  # LAMMPS runs do not resume: an unfinished one starts again
    _write_stamp(out, stamp)
    files = write_deck(out / "lammps", model_path, run.positions[frame][:n], None, cell, system.species[:n],
                       system.molecules[: n // 3], temperature_k=run.settings.temperature_k, timestep_ps=dt,
                       steps=int(round(ps / dt)), thermo_every=report_interval, dump_every=report_interval, seed=seed,
                       thermostat="langevin" if friction else "csvr", friction_per_ps=friction,
                       collision_time_ps=run.settings.csvr_time_ps, masses_amu=run.settings.masses_amu,
                       equilibration_steps=int(round(equilibration_ps / dt)),
                       source=f"CP2K {run.project} step {int(run.steps[frame])}")
    _say(progress, f"{name}: LAMMPS in the {' x '.join(f'{b:.4f}' for b in cell)} nm CP2K cell, {out}")
    t0 = time.perf_counter()
    try:
        run_lammps(files.deck)
    except RuntimeError as e:  # atoms flying apart is a result about the model (stability.blow_ups)
        if any(w in str(e) for w in LAMMPS_BLOW_UPS):
            raise SimulationError(f"{name}: LAMMPS run in {files.folder} blew up: {str(e).splitlines()[-1]}") from e
        raise
    seconds = (time.perf_counter() - t0) / int(round((ps + equilibration_ps) / dt))
    u = lammps_units("real")
    dump = read_trajectory_dump(files.folder / "trajectory.lammpstrj")
    x, v = dump["positions"] / u.length, dump["velocities"] / u.velocity  # nm, nm/ps
    masses = np.array([run.settings.masses_amu[e] for e in np.array(run.elements[:n])])
    kinds = kinetic_temperatures(x, v, masses, cell)
    times = dump["step"] * dt
    log = {"step": dump["step"], "time_ps": times, "temperature_K": kinds["total"],
           "kinetic_kJmol": 0.5 * np.einsum("i,fik->f", masses, v**2), "potential_kJmol": np.nan,
           "thermostat_heat_kJmol": np.nan, "net_force_kJmol_nm": np.nan, "out_of_range_terms": 0,
           **{f"T_{k}_K": kinds[k] for k in KINETIC_KINDS}}
    # the OpenMM state log's columns, in its order (row_of reads either)
    columns = np.column_stack([np.broadcast_to(np.asarray(log[h], float), times.shape)
                               for h in StateLogReporter.header])
    np.savetxt(out / "state.csv", columns, delimiter=",", header=",".join(StateLogReporter.header), comments="",
               fmt="%.10g")
    # the cell's frames as a run of their own, analysed as its replica like the reference
    cell_run = replace(run, elements=list(run.elements[:n]), steps=dump["step"], times_ps=times,
                      positions=x, forces=None, velocities=None, energies=None,
                      box_nm=np.tile(cell, (len(times), 1)), replica=1)
    traj = trajectory_of(cell_run.replicated(run.replica))
    traj[0].save_pdb(str(out / "topology.pdb"))
    traj.save_dcd(str(out / "trajectory.dcd"))
    write_json_atomic(out / "summary.json", {
        "engine": "LAMMPS", "name": name, "mode": loaded_model(model_path)[0].mode, "steps": int(round(ps / dt)),
        "timestep_ps": dt, "temperature_target_K": run.settings.temperature_k, "seconds_per_step": seconds,
        "thermostat": "langevin" if friction else "csvr", "friction_per_ps": friction,
        "collision_time_ps": None if friction else run.settings.csvr_time_ps, "seed": seed,
        "equilibration_ps": equilibration_ps, "replica": run.replica, "cell_nm": [float(b) for b in cell],
        "temperature_atoms": n, "hydrogen_mass_amu": run.settings.masses_amu["H"],
        "mean_temperature": float(np.mean(kinds["total"][len(times) // 2:])), "heat_per_ps": None,
        "mean_net_force": None, "out_of_range_fraction": None})  # not measured in LAMMPS


def record_velocities(sim_dir: Path, model_path, run: Cp2kRun, system: WaterSystem, *, ps=2.0, interval=5,
                      platform="CPU", progress=True) -> Path:
    """Continue a finished run from its checkpoint for `ps`, saving velocities every
    `interval` steps to velocities.npy (float32, nm/ps) and velocities.json (spacing).

    Kept apart from the main run so its trajectory stays small; the spectrum needs
    velocities every few fs (CP2K's: 2.5 fs, Nyquist 6700 cm^-1).
    """
    import openmm as mm
    from openmm import app

    from ..io.topology import openmm_topology
    from ..openmm.forces import create_system, set_masses
    from ..openmm.reporters import VelocityReporter
    from ..openmm.spcfw import spcfw_system

    dt = run.settings.timestep_ps
    n = int(round(ps / (interval * dt)))
    meta = {"dt_ps": interval * dt, "frames": n, "interval_steps": interval}
    npy, js = sim_dir / "velocities.npy", sim_dir / "velocities.json"
    if npy.exists() and js.exists() and json.loads(js.read_text()) == meta:
        return npy
    summary = json.loads((sim_dir / "summary.json").read_text())
    if model_path:
        system_mm = create_system(loaded_model(model_path)[0], system.species, system.molecules, run.box_nm[0])
    else:
        system_mm = spcfw_system(len(system.molecules), run.box_nm[0])
    set_masses(system_mm, system.species, run.settings.masses_amu)
    integ = _integrator(summary, system.species, run.settings.temperature_k, dt)
    sim = app.Simulation(openmm_topology(len(system.molecules), run.box_nm[0]), system_mm, integ,
                         mm.Platform.getPlatformByName(platform))
    sim.loadCheckpoint(str(sim_dir / "checkpoint.chk"))
    integ.invalidate()
    sim.currentStep = 0
    recorder = VelocityReporter(interval, n, len(system.species))
    sim.reporters.append(recorder)
    for _ in tqdm(range(n), desc=f"velocities {sim_dir.name}", unit="frame", disable=not progress):
        sim.step(interval)
    recorder.save(npy)
    write_json_atomic(js, meta, indent=None)
    return npy


def row_of(sim_dir):
    """validation.Row of a simulation folder: trajectory, state log, and from the summary
    the cost, heat and net force; velocities when recorded."""
    import mdtraj

    from ..openmm.simulate import read_state_log
    from .profiles import Row

    sim_dir = Path(sim_dir)
    traj = mdtraj.load(str(sim_dir / "trajectory.dcd"), top=str(sim_dir / "topology.pdb"))
    log = read_state_log(sim_dir / "state.csv")
    traj.time = log["time_ps"][: len(traj)]
    s = json.loads((sim_dir / "summary.json").read_text()) if (sim_dir / "summary.json").exists() else {}
    row = Row(traj, temperature=log["temperature_K"], temperature_times_ps=log["time_ps"],
              seconds_per_step=s.get("seconds_per_step"), hydrogen_mass_amu=s.get("hydrogen_mass_amu", MASSES_AMU["H"]),
              thermostat=s.get("thermostat"), friction_per_ps=s.get("friction_per_ps"),
              temperature_atoms=s.get("temperature_atoms"))  # a LAMMPS run in a small cell: its own atoms
    if all(f"T_{k}_K" in log for k in KINETIC_KINDS):
        row.kinetic, row.kinetic_times_ps = {k: log[f"T_{k}_K"] for k in KINETIC_KINDS}, log["time_ps"]
    row.heat_per_ps, row.net_force = s.get("heat_per_ps"), s.get("mean_net_force")
    if (sim_dir / "velocities.npy").exists() and (sim_dir / "velocities.json").exists():
        row.velocities = np.load(sim_dir / "velocities.npy")
        row.velocity_dt_ps = json.loads((sim_dir / "velocities.json").read_text())["dt_ps"]
    return row


def reference_row(run: Cp2kRun, equilibration_ps: float):
    """validation.Row of the CP2K run: trajectory, temperature, velocities (when evenly
    spaced), heat removed by its thermostat and net force after the cut, cost per step."""
    from .profiles import Row

    masses = run.masses_amu()
    row = Row(trajectory_of(run), hydrogen_mass_amu=float(masses[np.array(run.elements) == "H"][0]),
              thermostat=run.settings.thermostat if run.settings else None,
              friction_per_ps=run.settings.langevin_friction_per_ps if run.settings else None,
              temperature_atoms=run.n_atoms // run.replica**3)  # CP2K's temperature is of its own cell
    t0 = run.times_ps[0] + equilibration_ps - 1e-9
    if run.energies is not None:
        e = run.energies
        row.temperature, row.temperature_times_ps = e["temperature"], e["time_ps"]
        row.seconds_per_step = run.seconds_per_step()
        keep = e["time_ps"] >= t0
        if keep.sum() > 2:
            # CP2K's conserved quantity = kinetic + potential + the energy its thermostat took out.
            bath = e["conserved"] - e["kinetic"] - e["potential"]
            # heat is extensive: per replica box, as the rows' are
            row.heat_per_ps = float(np.polyfit(e["time_ps"][keep], bath[keep], 1)[0]) * run.replica**3
    if run.velocities is not None and run.n_frames > 8:
        gaps = np.diff(run.times_ps)
        if np.allclose(gaps, gaps[0], rtol=1e-3):
            row.velocities, row.velocity_times_ps = run.velocities, run.times_ps
            row.velocity_dt_ps = float(gaps[0])
    if run.velocities is not None:
        row.kinetic = analysis.kinetic_temperatures(run.positions, run.velocities, masses, run.box_nm)
        row.kinetic.pop("total")
        row.kinetic_times_ps = run.times_ps
    if run.forces is not None:
        keep = run.times_ps >= t0
        row.net_force = float(np.mean(np.linalg.norm(run.forces[keep].sum(axis=1), axis=1)))
    return row


def one_run(name, path, run: Cp2kRun, system: WaterSystem, seed_dir: Path, k: int, frame: int, *, own_cell,
            ps, platform, report_interval, first_seed, langevin_ps, velocity_ps, velocity_interval, progress):
    """Run k of a row: OpenMM dynamics and its velocity recording, or LAMMPS in the cell
    itself (own_cell). A blow-up is a result about the model: written to BLOW_UP, judged as
    stability.blow_ups, and returned as a line to say (None when the run held)."""
    try:
        if own_cell:  # no velocity recording: the spectra are n/a for these rows
            lammps_stage(name, path, run, system, seed_dir, ps=ps, report_interval=report_interval,
                         progress=progress, frame=frame, seed=first_seed + k, equilibration_ps=langevin_ps)
            return None
        simulate_stage(name, path, run, system, seed_dir, ps=ps, platform=platform,
                       report_interval=report_interval, progress=progress, frame=frame,
                       seed=first_seed + k, equilibration_ps=langevin_ps)
        # spectra compare with the reference's only at its masses
        if run.velocities is not None and velocity_ps and light_water(run.settings.masses_amu["H"]):
            record_velocities(seed_dir, path, run, system, ps=velocity_ps, interval=velocity_interval,
                              platform=platform, progress=progress)
    except SimulationError as e:
        write_json_atomic(seed_dir / BLOW_UP, {"seed": first_seed + k, "frame": frame, "error": str(e)})
        return f"{name}: run {k} blew up: {e}"
    return None


def run_dynamics(jobs, reference: dict, dynamics: dict, workers=None, progress=True, loaded=None) -> int:
    """Every run of every row: jobs are (row name, model path or None, folder, k, start
    frame), `reference` load_water_run's arguments, `dynamics` one_run's settings. A
    64-water box keeps one core busy but not two (OpenMM's CPU platform: 1.95 ms per step
    of the learned reciprocal model with one thread, 1.59 with two), so runs go side by
    side in `workers` processes of one thread each (default: one per core on the CPU
    platform; 1 runs them here, one after the other, on `loaded` = (run, system) when
    given). The processes are fresh interpreters (`python -m openmm_learning.validation.suite`),
    so a user's script needs no main guard. Each run resumes from its own checkpoint: an
    interrupted pool loses at most a checkpoint interval per run. Returns how many runs
    went at once."""
    cores = os.cpu_count() or 1
    if workers is None:
        workers = cores if str(dynamics["platform"]).upper() == "CPU" else 1
    workers = max(1, min(int(workers), len(jobs)))
    if workers == 1:
        run, system = loaded or load_water_run(**reference)
        for job in jobs:
            _say(progress, one_run(*job[:2], run, system, *job[2:], **dynamics, progress=progress))
        return 1
    import queue
    import subprocess
    import sys
    import tempfile
    import threading

    threads = str(max(1, cores // workers))  # read by OpenMM's CPU platform and numba at import
    env = {**os.environ, "OPENMM_CPU_THREADS": threads, "NUMBA_NUM_THREADS": threads}
    done: queue.Queue = queue.Queue()

    def read(proc):
        for line in proc.stdout:
            done.put(("run", line.rstrip("\n")))
        done.put(("exit", proc))

    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        try:
            for i in range(workers):  # round robin: the rows' runs are alike in cost
                spec = Path(tmp) / f"jobs-{i}.json"
                spec.write_text(json.dumps({"reference": {k: str(v) if isinstance(v, Path) else v
                                                          for k, v in reference.items()},
                                            "dynamics": dynamics,
                                            "jobs": [[n, None if p is None else str(p), str(f), k, fr]
                                                     for n, p, f, k, fr in jobs[i::workers]]}))
                # stderr to a file: a pipe nobody reads would stall a worker with many warnings
                with open(Path(tmp) / f"worker-{i}.err", "w") as err:
                    proc = subprocess.Popen([sys.executable, "-m", "openmm_learning.validation.suite", str(spec)],
                                            stdout=subprocess.PIPE, stderr=err, text=True, env=env)
                proc.err_path = err.name
                threading.Thread(target=read, args=(proc,), daemon=True).start()
                procs.append(proc)
            bar = tqdm(total=len(jobs), desc=f"dynamics ({workers} runs at once)", unit="run", disable=not progress)
            running = workers
            while running:
                kind, item = done.get()
                if kind == "run":
                    bar.update(1)
                    _say(progress, item)
                    continue
                running -= 1
                if item.wait() != 0:
                    raise RuntimeError(f"a dynamics worker failed (exit {item.returncode}):\n"
                                       f"{Path(item.err_path).read_text()[-3000:]}")
            bar.close()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
    return workers


def _dynamics_worker(spec_path):
    """One worker process of run_dynamics: its jobs, one line on stdout per finished run."""
    spec = json.loads(Path(spec_path).read_text())
    run, system = load_water_run(**spec["reference"])
    for name, path, folder, k, frame in spec["jobs"]:
        said = one_run(name, path, run, system, Path(folder), k, frame, **spec["dynamics"], progress=False)
        print(said or "", flush=True)


# --------------------------------------------------------------------------- the suite

def _check_run_length(ps, cut_ps, report_ps, seeds, thresholds):
    """Each run needs 2 frames after its cut; a single run needs 2 per uncertainty block."""
    from .decision import load_thresholds
    from .metrics import ValidationError

    n_blocks = load_thresholds(thresholds)["n_blocks"]
    frames = int(round((ps - cut_ps) / report_ps))
    need = 2 if seeds >= 2 else 2 * n_blocks
    if frames < need:
        raise ValidationError(f"--ps {ps:g} with a frame every {report_ps:g} ps gives {frames} frames per run "
                              f"after the {cut_ps:g} ps cut; {seeds} seed(s) need {need}: run longer or more seeds")


def run_validation(reference, out_dir, *, models=None, simulations=None, train_steps=None, ps=10.0,
                   seeds=RUNS_PER_ROW, first_seed=1, langevin_ps=2.0, equilibration_ps=None,
                   row_equilibration_ps=0.0, baseline=None,
                   thresholds=None, velocity_ps=2.0, velocity_interval=5, report_interval=100, platform="CPU",
                   learning_curve_sizes=5, sensitivity_frames=20, fit_settings: FitSettings | None = None,
                   allow_truncated=False, progress=True, extra_info=None, report_dir=None, workers=None):
    """Validate learned water against a CP2K run folder; returns validation.ValidationResult.

    Rows: models (MODEL.json paths, or {name: path}) are simulated; without models and
    simulations, both modes are fitted on train_steps ((A, B) or "A:B" CP2K steps,
    default the reference after its equilibration cut, the part that is compared; the
    fit holds out its own last 20 % after a gap, and the frames outside the training
    steps are scored as a second segment) and simulated; simulations ({name: folder})
    are already-run folders (a folder of seed-* folders is one row of several runs).
    baseline: run SPC/Fw too (default: when this call simulates models). Each simulated row
    is `seeds` independent runs: run k starts from
    its own frame of the reference after the equilibration cut (start_frames) with
    velocities drawn at the reference's temperature (seed first_seed + k), equilibrates for langevin_ps
    under Langevin friction, then runs ps of learning dynamics at the reference's
    temperature, timestep and cell; row_equilibration_ps is cut from each (default 0).
    The reference drops equilibration_ps (default: half the run, at most 5 ps).
    thresholds: a file or dict (validation.load_thresholds).
    The report, metrics.json and plots go to report_dir (default out_dir).
    workers: runs at once (run_dynamics; default one per core on the CPU platform).
    """
    from .judge import validate

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_steps = parse_steps(train_steps)
    if isinstance(models, (str, Path)):
        models = [models]
    paths = list(models.values()) if isinstance(models, dict) else list(models or [])
    r_cut = max([(fit_settings or FitSettings()).r_cut] + [loaded_model(p)[0].r_cut for p in paths])
    run, system = load_water_run(reference, allow_truncated, r_cut=r_cut)
    if run.settings is None:
        raise FileNotFoundError(f"{reference}: no CP2K input file, so the temperature, timestep and cell "
                                "of the reference are unknown")
    simulations = dict(simulations or {})
    fitted = not models and not simulations
    if models or fitted:  # fail before the expensive stages when the runs could not be judged
        _check_run_length(ps, row_equilibration_ps, report_interval * run.settings.timestep_ps, seeds, thresholds)
    eq = default_equilibration_ps(run) if equilibration_ps is None else float(equilibration_ps)
    if fitted and train_steps is None and eq > 0:
        # fit on what is compared, the reference after its cut: its start is another ensemble
        train_steps = (int(run.steps[first_frame_after(run, eq)]), None)
    lc, fit_dir = None, out / "fit"
    if fitted:
        paths = fit_stage(run, system, fit_dir, train_steps, fit_settings, progress)
        models = {f"learned {m}": p for m, p in paths.items()}
        if learning_curve_sizes:
            lc = learning_curve_stage(run, system, out / "learning-curve", train_steps, learning_curve_sizes,
                                      fit_settings, progress)
    models = _named_models(models)
    if baseline is None:
        baseline = bool(models)

    sims = {}  # row name -> (folder, model path or None)
    for name, path in models.items():
        sims[name] = (out / f"sim-{_folder_name(name)}", path)
    own_cell = run.replica > 1  # a box under twice the cutoff: rows run in LAMMPS in the cell itself
    if baseline and own_cell:
        _say(progress, f"{BASELINE_NAME}: no baseline for a box under twice the cutoff (OpenMM would run its "
                       "replica, a different system)")
    elif baseline:
        sims[BASELINE_NAME] = (out / "sim-spcfw", None)
    frames = start_frames(run, eq, seeds)
    jobs = []
    for name, (folder, path) in sims.items():
        _say(progress, f"{name}: {seeds} x ({langevin_ps:g} ps Langevin + {ps:g} ps) of dynamics in {folder}")
        # a run that blew up is decided: a rerun would only repeat it
        jobs += [(name, path, folder / f"seed-{k}", k, frame) for k, frame in enumerate(frames)
                 if not (folder / f"seed-{k}" / BLOW_UP).exists()]
    dynamics = dict(own_cell=own_cell, ps=ps, platform=platform, report_interval=report_interval,
                    first_seed=first_seed, langevin_ps=langevin_ps, velocity_ps=velocity_ps,
                    velocity_interval=velocity_interval)
    workers = run_dynamics(jobs, dict(path=reference, allow_truncated=allow_truncated, r_cut=r_cut), dynamics,
                           workers, progress, loaded=(run, system))
    agents = agents_stage(models, run, system, out / "agents", sensitivity_frames, progress) if models else {}

    folders = {n: f for n, (f, _) in sims.items()}
    folders.update(simulations)
    _say(progress, f"comparing {len(folders)} rows with CP2K")
    rows, blow_ups = {}, {}
    for n, f in tqdm(folders.items(), desc="loading rows", unit="row", disable=not progress):
        runs = run_folders(f)
        blown = [x for x in runs if (x / BLOW_UP).exists()]
        if blown:
            blow_ups[n] = [f"{x.name}: {json.loads((x / BLOW_UP).read_text())['error']}" for x in blown]
        if len(blown) < len(runs):
            rows[n] = [row_of(x) for x in runs if x not in blown]
    info = _provenance(run, eq, row_equilibration_ps, train_steps, fitted, models, folders, baseline, ps,
                       velocity_ps, velocity_interval, platform, frames, langevin_ps, first_seed,
                       workers) + list(extra_info or [])
    sections = _sections(out, agents, lc, folders, fitted)
    report_dir = out if report_dir is None else Path(report_dir)
    result = validate(reference_row(run, eq), rows, out_dir=report_dir, thresholds=thresholds,
                      equilibration_ps=eq, row_equilibration_ps=row_equilibration_ps,
                      baseline=BASELINE_NAME if baseline else None, settings_info=info, sections=sections,
                      target_temperature_k=run.settings.temperature_k, blow_ups=blow_ups)
    write_json_atomic(out / "suite.json", {
        "reference": run.project, "passed": result.passed, "verdicts": result.verdicts,
        "rows": {n: str(Path(f).name) for n, f in folders.items()}, "seeds": seeds, "start_frames": frames,
        "langevin_ps": langevin_ps, "first_seed": first_seed,
        "models": {n: str(p) for n, p in models.items()}, "train_steps": list(train_steps or (None, None)),
        "equilibration_ps": eq, "row_equilibration_ps": row_equilibration_ps, "ps": ps,
        "report": os.path.relpath(result.html_path, out)})
    return result


def _or_dash(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _thermostat_text(summary: dict) -> str:
    """The thermostat of a run as its summary.json records it (older runs: Nose-Hoover)."""
    kind = summary.get("thermostat", "nose-hoover")
    if kind == "langevin":
        return f"Langevin {summary['friction_per_ps']:g}/ps"
    tau = f"{1000 * summary['collision_time_ps']:g} fs"
    return f"CSVR {tau}" if kind == "csvr" else f"Nose-Hoover {tau} x {summary['chain_length']}"


def run_folders(folder) -> list:
    """The simulation folders of one row: FOLDER itself, or its seed-* folders in order."""
    folder = Path(folder)
    if (folder / "summary.json").exists() or (folder / "state.csv").exists():
        return [folder]
    seeds = sorted(folder.glob("seed-*"), key=lambda p: int(p.name.split("-")[1]) if p.name[5:].isdigit() else 0)
    if not seeds:
        raise FileNotFoundError(f"{folder}: neither a simulation folder (summary.json, state.csv) "
                                "nor a folder of seed-* simulation folders")
    return seeds


def _folder_name(name: str) -> str:
    name = name.removeprefix("learned ")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "model"


def _named_models(models) -> dict:
    if not models:
        return {}
    if isinstance(models, dict):
        return {n: Path(p) for n, p in models.items()}
    named = {}
    for p in map(Path, models):
        name = f"learned {loaded_model(p)[0].mode}"
        if name in named:
            name = f"{name} ({p.stem})"
        named[name] = p
    return named


def _provenance(run, eq, row_eq, train_steps, fitted, models, folders, baseline, ps, velocity_ps,
                velocity_interval, platform, frames, langevin_ps, first_seed, workers=1) -> list:
    import openmm

    s = run.settings
    lines = [f"reference: CP2K project {run.project} ({s.method}), {run.n_frames} frames, "
             f"steps {run.steps[0]}-{run.steps[-1]} ({run.times_ps[-1] - run.times_ps[0]:.3g} ps)",
             f"state (from the CP2K input): {s.ensemble} {s.temperature_k:g} K, timestep {s.timestep_ps * 1000:g} fs, "
             f"thermostat {s.thermostat}; box {' x '.join(f'{b:.4f}' for b in run.box_nm[-1])} nm, "
             f"{len(run.elements) // 3} molecules"
             + (f" (the {run.replica}x{run.replica}x{run.replica} periodic replica of the CP2K cell, whose "
                "box is under twice the cutoff; the forces on the replica are those of the periodic original)"
                if run.replica > 1 else ""),
             f"reference equilibration cut: {eq:.3g} ps; simulations cut: {row_eq:.3g} ps"]
    lines += [f"reference file {role}: {h['file']} sha256 {h['sha256'][:16]}"
              for role, h in file_hashes(run.files).items()]
    if fitted:
        a, b = train_steps or (None, None)
        lines.append(f"fit: both modes on CP2K steps {a if a is not None else run.steps[0]}-"
                     f"{b if b is not None else 'end'} (the fit holds out its last 20 % after a gap)")
    for n, p in models.items():
        model, sha = loaded_model(p)
        lines.append(f"{n}: model {Path(p).name} sha256 {sha[:16]}, r_cut {model.r_cut:g} nm, functions: "
                     f"{model.basis_text()}")
    if folders:
        own_cell = run.replica > 1
        friction = run.settings.langevin_friction_per_ps
        thermostat = (f"Langevin, the reference's friction {friction:g}/ps" if friction else
                      f"CSVR, time constant {1000 * (s.csvr_time_ps or CSVR_TIME_PS):g} fs")
        engine = ("LAMMPS (table route; agent mode through lammps_plugin.agent)" if own_cell else
                  f"OpenMM {openmm.__version__} on the {platform} platform")
        lines.append(f"{engine}, {os.cpu_count()} CPU cores, {workers} run(s) at once; "
                     f"each row {len(frames)} runs (seeds {first_seed}-{first_seed + len(frames) - 1}) from CP2K steps "
                     f"{', '.join(str(int(run.steps[f])) for f in frames)}: velocities drawn at "
                     f"{run.settings.temperature_k:g} K, {langevin_ps:g} ps of Langevin (5/ps) equilibration, "
                     f"then {ps:g} ps of dynamics ({thermostat})")
        cell_nm = " x ".join(f"{b:.4f}" for b in run.box_nm[-1] / run.replica)
        box = (f"the CP2K cell itself, {cell_nm} nm, {len(run.elements) // 3 // run.replica**3} molecules, in "
               f"LAMMPS; analysed as its {run.replica}x{run.replica}x{run.replica} replica, as the reference is"
               if own_cell else f"the CP2K cell itself, {cell_nm} nm")
        lines.append(f"every row runs under the reference's protocol: its box ({box}), timestep "
                     f"{s.timestep_ps * 1000:g} fs and masses (H {s.masses_amu['H']:g}, O {s.masses_amu['O']:g} amu)")
    if velocity_ps and run.velocities is not None and light_water(run.settings.masses_amu["H"]) and run.replica == 1:
        lines.append(f"spectra: CP2K velocities from the vel file; OpenMM velocities recorded for {velocity_ps:g} ps "
                     f"after each run, every {velocity_interval} steps")
    if baseline and run.replica == 1:
        lines.append(SPCFW_CITATION + "; same box, start frame, temperature, timestep and thermostat as the "
                     "learned reciprocal row")
    lines.append("cost: CP2K seconds per step = median UsedTime of the .ener file (the machine that ran "
                 "CP2K); OpenMM seconds per step measured during each run on this machine")
    return lines


def _fmt_err(e):
    if not e:
        return "n/a"
    return (f"O {e['O']['rmse']:.1f} ({100 * e['O']['relative_rmse']:.1f} %), "
            f"H {e['H']['rmse']:.1f} ({100 * e['H']['relative_rmse']:.1f} %)")


def _sections(out, agents, lc, folders, fitted) -> list:
    sections = []
    if agents:
        rows = []
        for name, a in agents.items():
            seg = a.get("held_out_segment")
            rows.append([name, a["file"], a["n_train_frames"] or "?",
                         "-".join(map(str, a["train_steps"])) if a.get("train_steps") else "?",
                         _fmt_err(a.get("fit_held_out")),
                         (_fmt_err(seg) + f" on {seg['n_frames']} frames, steps {seg['steps'][0]}-{seg['steps'][1]}")
                         if seg else "none (fitted on every frame of this run)"])
        sections.append({"title": "Learned models: held-out force errors", "text": [
            "Force RMSE in kJ/mol/nm (relative to the RMS CP2K force). 'fit held-out': the last 20 % of the "
            "training steps, after a gap, never used to fit. 'other segment': reference frames outside the "
            "training steps (another segment or another run)."],
            "table": {"header": ["row", "model", "train frames", "train steps", "fit held-out",
                                 "other segment"], "rows": rows}})
        srows = []
        for name, a in agents.items():
            for s, ag in a["sensitivity"]["agents"].items():
                for ch in ag["channels"]:
                    srows.append([name, s, ch["invariant"], f"{ch['rms']:.1f}", f"{ch['relative']:.2f}"])
                srows.append([name, s, "all own-molecule invariants together", "",
                              f"{ag['own_molecule_relative']:.2f}"])
                srows.append([name, s, "all other-molecule distances together", "",
                              f"{ag['other_molecules_relative']:.2f}"])
                srows.append([name, s, "walls (fixed, not fitted)", f"{ag['walls_rms']:.2g}",
                              f"{ag['walls_rms'] / ag['total_rms']:.2g}"])
        n = next(iter(agents.values()))["sensitivity"]["n_frames"]
        sections.append({"title": "The agents: what drives the O and the H forces", "text": [
            f"For each agent species and invariant channel: the RMS of the force that channel alone puts on "
            f"the agents (kJ/mol/nm, over {n} CP2K frames), and that RMS over the RMS of the agents' total force. "
            "Channels are correlated, so the ratios need not sum to 1; compare O with H to see how the two "
            "species weigh their invariants."],
            "table": {"header": ["row", "agent", "invariant", "RMS force", "/ total"], "rows": srows},
            "plots": [out / "agents" / "sensitivity.png"]})
    if lc:
        header = ["training frames"] + [f"{m} {s} RMSE" for m in lc["errors"] for s in SPECIES]
        rows = [[n] + [f"{lc['errors'][m][s]['rmse'][k]:.1f}" for m in lc["errors"] for s in SPECIES]
                for k, n in enumerate(lc["n_frames"])]
        sections.append({"title": "Learning curve", "text": [
            f"Held-out force RMSE (kJ/mol/nm) on CP2K steps {lc['test_steps'][0]}-{lc['test_steps'][1]} against "
            f"the number of training frames, spread evenly over the {lc['n_train_available']} training frames."],
            "table": {"header": header, "rows": rows}, "plots": [out / "learning-curve" / "learning_curve.png"]})
    if fitted:
        sections.append({"title": "Fit", "text": ["Parity of held-out forces and every fitted loss channel."],
                         "plots": [out / "fit" / "parity.png", out / "fit" / "channels.png"]})
    sim_rows = []
    for name, folder in folders.items():
        for run_dir in run_folders(folder):
            f = run_dir / "summary.json"
            if not f.exists():
                continue
            s = json.loads(f.read_text())
            sim_rows.append([name, os.path.relpath(run_dir, Path(folder).parent), s["steps"],
                             f"{s['steps'] * s['timestep_ps']:g}", s.get("seed", "?"),
                             f"{s.get('equilibration_ps', 0):g}", f"{s['mean_temperature']:.1f}",
                             _thermostat_text(s) + (" (LAMMPS)" if s.get("engine") == "LAMMPS" else ""),
                             _or_dash(s["heat_per_ps"], "{:.0f}"), _or_dash(s["mean_net_force"], "{:.3g}"),
                             f"{1000 * s['seconds_per_step']:.2f}",
                             _or_dash(s["out_of_range_fraction"] and 100 * s["out_of_range_fraction"], "{:.0f} %")])
    if sim_rows:
        sections.append({"title": "Simulations", "text": [
            "Each run: Langevin equilibration (not recorded), then velocity Verlet with the thermostat named in "
            "the table (OpenMM's LearningIntegrator, or LAMMPS in a box under twice the cutoff, which does not "
            "measure the columns shown as -) at the reference's temperature and timestep; the mean temperature is over "
            "the second half; 'out of range': reports with an invariant outside the model's training range."],
            "table": {"header": ["row", "folder", "steps", "ps", "seed", "Langevin ps", "mean T (K)", "thermostat",
                                 "heat (kJ/mol/ps)",
                                 "|F_net| (kJ/mol/nm)", "ms/step", "out of range"], "rows": sim_rows}})
    return sections


if __name__ == "__main__":  # a worker of run_dynamics
    import sys

    _dynamics_worker(sys.argv[1])
