"""Learning-dynamics runs in OpenMM from a CP2K frame: an app.Simulation with the package's
reporters (state log, extrapolation check, blow-up guard, checkpoints), resumable."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import openmm as mm
from openmm import app, unit
from tqdm.auto import tqdm

from ..io.atomic import write_json_atomic
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


def simulate(model: LossModel | None, positions, velocities, box_nm, species, molecules, *,
             temperature_k: float, timestep_ps: float, steps: int, out_dir,
             report_interval: int = 100, checkpoint_interval: int = 1000,
             collision_time_ps: float | None = None, platform: str = "CPU", seed: int = 1,
             resume: bool = True, progress: bool = True, max_temperature_factor: float = 4.0,
             system: mm.System | None = None, name: str | None = None,
             equilibration_ps: float = 0.0, equilibration_friction_per_ps: float = 5.0,
             replica: int = 1, thermostat: str = "csvr", committee=(), committee_interval: int | None = None,
             max_deviation: float | None = None, stop_above_deviation: bool = False,
             masses_amu: dict | None = None, system_mode: str = "reciprocal",
             friction_per_ps: float | None = None) -> SimulationResult:
    """Run `steps` of learning dynamics from one frame (nm, nm/ps) and write to out_dir.

    An app.Simulation with the package's reporters (openmm.reporters): blow-up guard,
    extrapolation check, state log, DCD trajectory, atomic checkpoints, progress bar.
    Files: trajectory.dcd (every report_interval steps), state.csv, checkpoint.chk,
    topology.pdb, summary.json; on a blow-up also last_good.pdb. With resume=True an
    existing checkpoint in out_dir is continued up to `steps` in total, appending to the files.
    velocities None: drawn at temperature_k with `seed`. equilibration_ps: first run that
    long with Langevin friction on every degree of freedom (same forces, nothing recorded),
    so that every kind of motion starts at the target temperature: a global thermostat
    cannot repair a start out of equipartition (e.g. a CP2K frame of a CSVR run).
    Atoms must be in O H H order per molecule (molecules[i] = 3i, 3i+1, 3i+2).
    system: a ready conservative openmm.System to run instead of the model's (e.g. the
    SPC/Fw baseline; model may then be None), with the integrator of system_mode ("agent":
    force group forces.ANTISYMMETRIC_GROUP added on O and subtracted on H atoms);
    name labels it in the progress bar and summary.json. replica: the box is the n x n x n
    periodic replica of a CP2K cell (recorded in summary.json). thermostat: "csvr" (CP2K's
    stochastic velocity rescaling, the default) or "nose-hoover" (the chain of
    losses.model.NOSE_HOOVER); collision_time_ps: its time constant (LearningIntegrator).
    committee: models (fit --committee) whose force deviation is written to committee.csv
    every committee_interval steps (default 10 reports: 5 extra force evaluations in numba
    per report); above max_deviation (kJ/mol/nm) a warning, or with stop_above_deviation a
    SimulationError that stops the run. masses_amu: element -> mass (amu) for every atom,
    e.g. a CP2K run's (`Cp2kSettings.masses_amu`: heavy hydrogen for a 1.5 fs step); None
    keeps the standard masses. summary.json records the hydrogen mass.
    friction_per_ps: run Langevin dynamics with this friction on every atom instead of
    `thermostat` (a CP2K Langevin run's protocol, to compare with it like with like).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    species = np.asarray(species, np.int64)
    molecules = np.asarray(molecules, np.int64)
    if not np.array_equal(molecules.reshape(-1), np.arange(len(species))):
        raise ValueError("atoms must be in O H H order per molecule; reorder the frame first")
    box_nm = np.asarray(box_nm, float)
    mode = model.mode if system is None else system_mode
    label = name or mode
    if system is None:
        system = create_system(model, species, molecules, box_nm)
    set_masses(system, species, masses_amu)
    integrator = LearningIntegrator(temperature_k, timestep_ps, collision_time_ps,
                                    agent_species=species if mode == "agent" else None,
                                    n_atoms=len(species), seed=seed, thermostat=thermostat,
                                    friction_per_ps=friction_per_ps)
    topology = openmm_topology(len(molecules), box_nm)
    sim = app.Simulation(topology, system, integrator, mm.Platform.getPlatformByName(platform))
    paths = {k: out / v for k, v in dict(trajectory="trajectory.dcd", log="state.csv",
                                         checkpoint="checkpoint.chk", pdb="topology.pdb").items()}
    resuming = resume and paths["checkpoint"].exists() and paths["trajectory"].exists()
    if resuming:
        sim.loadCheckpoint(str(paths["checkpoint"]))
        integrator.invalidate()
        sim.currentStep = int(round(sim.context.getState().getTime().value_in_unit(unit.picosecond) / timestep_ps))
    else:
        positions, velocities = _start(system, mode, species, positions, velocities, temperature_k,
                                       timestep_ps, seed, equilibration_ps, equilibration_friction_per_ps,
                                       platform)
        sim.context.setPositions(positions)
        sim.context.setVelocities(velocities)
        with open(paths["pdb"], "w") as fh:
            app.PDBFile.writeFile(topology, np.asarray(positions, float) / ANGSTROM_NM, fh)  # PDB: A
    done = sim.currentStep
    if done >= steps:
        previous = out / "summary.json"
        seconds = json.loads(previous.read_text())["seconds_per_step"] if previous.exists() else float("nan")
        return _summary(paths, steps, seconds, timestep_ps)
    if resuming:
        _truncate_log(paths["log"], done)
        _truncate_log(out / "committee.csv", done)
        _truncate_dcd(paths["trajectory"], done // report_interval)
    extrapolation = None if model is None else ExtrapolationReporter(report_interval, model, species, molecules)
    log = StateLogReporter(paths["log"], report_interval, extrapolation, append=resuming,
                           conservative=mode == "reciprocal")
    checkpoint = AtomicCheckpointReporter(paths["checkpoint"], checkpoint_interval)
    bar = ProgressReporter(report_interval, steps, done, label, progress)
    ours = [BlowUpGuard(report_interval, temperature_k, out / "last_good.pdb", max_temperature_factor, label)]
    ours += [extrapolation] if extrapolation else []
    if committee:
        ours.append(CommitteeReporter(out / "committee.csv", committee_interval or 10 * report_interval, committee,
                                      species, molecules, max_deviation, stop_above_deviation, append=resuming))
    ours += [log, checkpoint]
    sim.reporters += ours + [app.DCDReporter(str(paths["trajectory"]), report_interval, append=resuming), bar]
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
    result = _summary(paths, steps, seconds / (steps - done), timestep_ps)
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
    summary.update(mode=mode, name=label, temperature_target_K=temperature_k, timestep_ps=timestep_ps,
                   platform=platform, collision_time_ps=integrator.collision_time_ps,
                   chain_length=integrator.chain_length, thermostat=integrator.thermostat,
                   friction_per_ps=friction_per_ps, seed=seed, equilibration_ps=equilibration_ps,
                   equilibration_friction_per_ps=equilibration_friction_per_ps, replica=replica,
                   hydrogen_mass_amu=_hydrogen_mass(system, species), threads=_threads(sim.context))
    write_json_atomic(out / "summary.json", summary)
    return result


def _threads(context) -> int | None:
    """The CPU platform's threads (seconds_per_step is per run at that many); None elsewhere."""
    platform = context.getPlatform()
    if "Threads" not in platform.getPropertyNames():
        return None
    return int(platform.getPropertyValue(context, "Threads"))


def _hydrogen_mass(system, species) -> float:
    h = int(np.flatnonzero(species == SPECIES_INDEX["H"])[0])
    return float(system.getParticleMass(h).value_in_unit(unit.dalton))


def _start(system, mode, species, positions, velocities, temperature_k, timestep_ps, seed,
           equilibration_ps, friction_per_ps, platform):
    """Start positions and velocities (nm, nm/ps), after the Langevin equilibration if asked."""
    positions = np.asarray(positions, float)
    steps = int(round(equilibration_ps / timestep_ps))
    if velocities is not None and not steps:
        return positions, np.asarray(velocities, float)
    integ = LearningIntegrator(temperature_k, timestep_ps, agent_species=species if mode == "agent" else None,
                               n_atoms=len(species), friction_per_ps=friction_per_ps, seed=seed)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName(platform))
    ctx.setPositions(positions)
    if velocities is None:
        ctx.setVelocitiesToTemperature(temperature_k * unit.kelvin, seed)
    else:
        ctx.setVelocities(np.asarray(velocities, float))
    if steps:
        integ.step(steps)
    state = ctx.getState(getPositions=True, getVelocities=True)
    x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    v = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(v))):
        raise SimulationError(f"the {equilibration_ps:g} ps Langevin equilibration blew up; try a shorter timestep")
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


def _summary(paths, steps, seconds_per_step, timestep_ps) -> SimulationResult:
    log = read_state_log(paths["log"])
    half = len(log["step"]) // 2
    heat = log["thermostat_heat_kJmol"]
    t = log["time_ps"]
    heat_rate = float((heat[-1] - heat[half]) / (t[-1] - t[half])) if len(t) > 2 else float("nan")
    return SimulationResult(
        out_dir=paths["log"].parent, trajectory=paths["trajectory"], log=paths["log"],
        checkpoint=paths["checkpoint"], steps=steps, seconds_per_step=seconds_per_step,
        mean_temperature=float(np.mean(log["temperature_K"][half:])), heat_per_ps=heat_rate,
        mean_net_force=float(np.mean(log["net_force_kJmol_nm"][half:])),
        out_of_range_fraction=float(np.mean(log["out_of_range_terms"] > 0)))
