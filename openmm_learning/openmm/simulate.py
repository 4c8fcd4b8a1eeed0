"""Learning-dynamics runs in OpenMM from a CP2K frame: an app.Simulation with the package's
reporters (state log, extrapolation check, blow-up guard, checkpoints), resumable."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import openmm as mm
from openmm import app, unit
from tqdm.auto import tqdm

from ..dynamics import Dynamics, StartFrame
from ..io.atomic import write_json_atomic
from ..io.run_folder import RunFolder
from ..io.topology import SPECIES_INDEX, openmm_topology
from ..losses.model import LossModel
from ..units import ANGSTROM_NM
from .forces import create_system, set_masses
from .integrator import LearningIntegrator
from .reporters import (AtomicCheckpointReporter, BlowUpGuard, CommitteeReporter, ExtrapolationReporter,
                        SimulationError, StateLogReporter)


@dataclass
class SimulationResult:
    out_dir: Path
    trajectory: Path
    log: Path
    checkpoint: Path
    steps: int
    seconds_per_step: float
    mean_temperature: float
    heat_per_ps: float
    mean_net_force: float
    out_of_range_fraction: float


class ProgressReporter:
    """A tqdm bar over the run's steps (an OpenMM reporter)."""

    def __init__(self, interval, total, initial, label, enabled=True):
        self.interval = interval
        self.bar = tqdm(total=total, initial=initial, desc=f"{label} dynamics", unit="step", disable=not enabled)
        self.seconds = 0.0

    def describeNextReport(self, simulation):
        return {"steps": self.interval - simulation.currentStep % self.interval, "periodic": True, "include": []}

    def report(self, simulation, state):
        self.bar.update(simulation.currentStep - self.bar.n)


@dataclass
class Reporting:
    """How a run reports: every `interval` steps a state-log row and a trajectory frame, a
    checkpoint every checkpoint_interval steps; resume: continue an existing checkpoint up
    to the run's steps, appending; a temperature above max_temperature_factor x the target
    is a blow-up."""

    interval: int = 100
    checkpoint_interval: int = 1000
    resume: bool = True
    progress: bool = True
    max_temperature_factor: float = 4.0


@dataclass
class CommitteeWatch:
    """Models (fit --committee) whose force deviation goes to committee.csv every
    `interval` steps (default 10 reports: 5 extra force evaluations in numba per report);
    above max_deviation (kJ/mol/nm) a warning, or with stop a SimulationError."""

    models: list
    interval: int | None = None
    max_deviation: float | None = None
    stop: bool = False


def simulate(model: LossModel | None, start: StartFrame, dynamics: Dynamics, out_dir, *,
             reporting: Reporting | None = None, system: mm.System | None = None, name: str | None = None,
             committee: CommitteeWatch | None = None) -> SimulationResult:
    """Run the dynamics of a model from a start frame and write to out_dir.

    An app.Simulation with the package's reporters (openmm.reporters): blow-up guard,
    extrapolation check, state log, DCD trajectory, atomic checkpoints, progress bar.
    Files (io.run_folder.RunFolder): trajectory.dcd (every report), state.csv,
    checkpoint.chk, topology.pdb, summary.json; on a blow-up also last_good.pdb. An
    existing checkpoint in out_dir is continued up to dynamics.steps in total (Reporting.resume).
    The start's velocities None: drawn at the temperature with the seed. The dynamics'
    Langevin equilibration runs first (same forces, nothing recorded), so that every kind of
    motion starts at the target: a global thermostat cannot repair a start out of
    equipartition (e.g. a CP2K frame of a CSVR run). Atoms in O H H order per molecule.
    system: a ready conservative openmm.System to run instead of the model's (e.g. the
    SPC/Fw baseline; model may then be None), with the integrator of dynamics.mode ("agent":
    force group forces.ANTISYMMETRIC_GROUP added on O and subtracted on H atoms); name
    labels it in the progress bar and summary.json (default: the mode).
    """
    out = RunFolder(out_dir)
    out.folder.mkdir(parents=True, exist_ok=True)
    if not np.array_equal(np.asarray(start.molecules).reshape(-1), np.arange(len(start.species))):
        raise ValueError("atoms must be in O H H order per molecule; reorder the frame first")
    if model is not None:
        dynamics = replace(dynamics, mode=model.mode)
    reporting = reporting or Reporting()
    sim = learning_simulation(model, start.species, start.molecules, start.box_nm, dynamics, system)
    resuming = _resume_or_start(sim, out, start, dynamics, reporting.resume)
    done, steps = sim.currentStep, dynamics.steps
    if done >= steps:
        seconds = json.loads(out.summary.read_text())["seconds_per_step"] if out.summary.exists() else float("nan")
        return _summary(out, steps, seconds)
    if resuming:
        _truncate_log(out.log, done)
        _truncate_log(out.committee, done)
        _truncate_dcd(out.trajectory, done // reporting.interval)
    label = name or dynamics.mode
    ours, bar, checkpoint = _reporters(sim, model, start, dynamics, out, reporting, committee, resuming, label)
    t0 = time.perf_counter()
    try:
        sim.step(steps - done)
        checkpoint.save(sim)
    finally:
        bar.bar.close()
        for r in ours:
            if hasattr(r, "close"):
                r.close()
    # the cost of the dynamics alone: the package's reporters keep their own time
    seconds = time.perf_counter() - t0 - sum(r.seconds for r in ours)
    result = _summary(out, steps, seconds / (steps - done))
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
    summary.update(dynamics.summary(), name=label, replica=start.replica,
                   hydrogen_mass_amu=_hydrogen_mass(sim.system, start.species), threads=_threads(sim.context))
    write_json_atomic(out.summary, summary)
    return result


def learning_simulation(model, species, molecules, box_nm, dynamics: Dynamics, system=None) -> app.Simulation:
    """An app.Simulation of the model's System (or the given one) at the dynamics' masses,
    with its learning integrator on its platform; positions and velocities not yet set."""
    box_nm = np.asarray(box_nm, float)
    if system is None:
        system = create_system(model, species, molecules, box_nm)
    set_masses(system, species, dynamics.masses_amu)
    platform = mm.Platform.getPlatformByName(dynamics.platform)
    return app.Simulation(openmm_topology(len(molecules), box_nm), system, LearningIntegrator.of(dynamics, species),
                          platform)


def _resume_or_start(sim, out: RunFolder, start: StartFrame, dynamics: Dynamics, resume: bool) -> bool:
    """Load the folder's checkpoint (True), or set the start after the equilibration and
    write topology.pdb (False)."""
    if resume and out.checkpoint.exists() and out.trajectory.exists():
        sim.loadCheckpoint(str(out.checkpoint))
        sim.integrator.invalidate()
        t = sim.context.getState().getTime().value_in_unit(unit.picosecond)
        sim.currentStep = int(round(t / dynamics.timestep_ps))
        return True
    positions, velocities = _start(sim.system, start, dynamics)
    sim.context.setPositions(positions)
    sim.context.setVelocities(velocities)
    with open(out.topology, "w") as fh:
        app.PDBFile.writeFile(sim.topology, np.asarray(positions, float) / ANGSTROM_NM, fh)  # PDB: A
    return False


def _reporters(sim, model, start, dynamics, out: RunFolder, reporting: Reporting, committee, resuming, label):
    """Attach the run's reporters; returns (the package's own, the progress bar, the checkpoint)."""
    every = reporting.interval
    extrapolation = None if model is None else ExtrapolationReporter(every, model, start.species, start.molecules)
    log = StateLogReporter(out.log, every, extrapolation, append=resuming,
                           conservative=dynamics.mode == "reciprocal")
    checkpoint = AtomicCheckpointReporter(out.checkpoint, reporting.checkpoint_interval)
    bar = ProgressReporter(every, dynamics.steps, sim.currentStep, label, reporting.progress)
    ours = [BlowUpGuard(every, dynamics.temperature_k, out.last_good, reporting.max_temperature_factor, label)]
    ours += [extrapolation] if extrapolation else []
    if committee and committee.models:
        ours.append(CommitteeReporter(out.committee, committee.interval or 10 * every, committee.models,
                                      start.species, start.molecules, committee.max_deviation, committee.stop,
                                      append=resuming))
    ours += [log, checkpoint]
    sim.reporters += ours + [app.DCDReporter(str(out.trajectory), every, append=resuming), bar]
    return ours, bar, checkpoint


def _threads(context) -> int | None:
    """The CPU platform's threads (seconds_per_step is per run at that many); None elsewhere."""
    platform = context.getPlatform()
    if "Threads" not in platform.getPropertyNames():
        return None
    return int(platform.getPropertyValue(context, "Threads"))


def _hydrogen_mass(system, species) -> float:
    h = int(np.flatnonzero(species == SPECIES_INDEX["H"])[0])
    return float(system.getParticleMass(h).value_in_unit(unit.dalton))


def _start(system, start: StartFrame, dynamics: Dynamics):
    """Start positions and velocities (nm, nm/ps), after the Langevin equilibration if asked."""
    positions = np.asarray(start.positions, float)
    steps = dynamics.equilibration_steps
    if start.velocities is not None and not steps:
        return positions, np.asarray(start.velocities, float)
    equilibration = replace(dynamics, thermostat="langevin", friction_per_ps=dynamics.equilibration_friction_per_ps)
    integ = LearningIntegrator.of(equilibration, start.species)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName(dynamics.platform))
    ctx.setPositions(positions)
    if start.velocities is None:
        ctx.setVelocitiesToTemperature(dynamics.temperature_k * unit.kelvin, dynamics.seed)
    else:
        ctx.setVelocities(np.asarray(start.velocities, float))
    if steps:
        integ.step(steps)
    state = ctx.getState(getPositions=True, getVelocities=True)
    x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    v = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(v))):
        raise SimulationError(f"the {dynamics.equilibration_ps:g} ps Langevin equilibration blew up; "
                              "try a shorter timestep")
    return x, v


def _truncate_log(path: Path, last_step: int):
    """Drop log rows written after the checkpoint we resume from."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = lines[:1] + [line for line in lines[1:] if int(float(line.split(",")[0])) <= last_step]
    path.write_text("".join(keep))


def _truncate_dcd(path: Path, n_frames: int):
    """Drop trajectory frames written after the checkpoint we resume from: the file is cut
    after frame n_frames and its header's frame count set, bytes untouched (rewriting the
    frames would round them through another float conversion)."""
    import struct

    with open(path, "r+b") as fh:
        head = fh.read(100)
        count, first, interval = struct.unpack("<3i", head[8:20])
        if count <= n_frames:
            return
        box = struct.unpack("<i", head[48:52])[0]
        comments = struct.unpack("<i", head[92:96])[0]
        fh.seek(104 + comments)
        n_atoms = struct.unpack("<i", fh.read(4))[0]
        header = 104 + comments + 8
        frame = (56 if box else 0) + 3 * (8 + 4 * n_atoms)
        fh.truncate(header + n_frames * frame)
        fh.seek(8)
        fh.write(struct.pack("<i", n_frames))
        fh.seek(20)
        fh.write(struct.pack("<i", first + (n_frames - 1) * interval))


def read_state_log(path) -> dict[str, np.ndarray]:
    with open(path) as fh:
        rows = list(csv.reader(fh))
    head, data = rows[0], np.array(rows[1:], dtype=float).reshape(-1, len(rows[0]))
    return {h: data[:, k] for k, h in enumerate(head)}


def _summary(out: RunFolder, steps, seconds_per_step) -> SimulationResult:
    log = read_state_log(out.log)
    half = len(log["step"]) // 2
    heat = log["thermostat_heat_kJmol"]
    t = log["time_ps"]
    heat_rate = float((heat[-1] - heat[half]) / (t[-1] - t[half])) if len(t) > 2 else float("nan")
    return SimulationResult(
        out_dir=out.folder, trajectory=out.trajectory, log=out.log, checkpoint=out.checkpoint, steps=steps,
        seconds_per_step=seconds_per_step, mean_temperature=float(np.mean(log["temperature_K"][half:])),
        heat_per_ps=heat_rate, mean_net_force=float(np.mean(log["net_force_kJmol_nm"][half:])),
        out_of_range_fraction=float(np.mean(log["out_of_range_terms"] > 0)))
