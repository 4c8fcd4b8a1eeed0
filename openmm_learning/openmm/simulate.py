"""Learning-dynamics runs in OpenMM: trajectory, state log, checkpoints, progress, blow-up guard."""

from __future__ import annotations

import csv
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import openmm as mm
from openmm import app, unit
from tqdm.auto import tqdm

from ..io.topology import KINETIC_KINDS, kinetic_temperatures, openmm_topology
from ..losses import kernels
from ..losses.model import LossModel, angle_channel_table, pair_channel_table
from ..units import KB_KJMOL_K
from .forces import create_system
from .integrator import LearningIntegrator


class SimulationError(RuntimeError):
    """The dynamics blew up (NaN or runaway temperature); the last good frame is saved."""


class ExtrapolationWarning(UserWarning):
    """The simulation visits invariants outside the range the model was trained on."""


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


class _StateLog:
    """CSV log: step, time, temperature (3N-3 dof), kinetic/potential energy, heat, net force."""

    header = ["step", "time_ps", "temperature_K", "kinetic_kJmol", "potential_kJmol",
              "thermostat_heat_kJmol", "net_force_kJmol_nm", "out_of_range_terms"] + [
              f"T_{kind}_K" for kind in KINETIC_KINDS]

    def __init__(self, path: Path, append: bool):
        self.path = path
        new = not (append and path.exists())
        self.file = open(path, "w" if new else "a", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(self.header)

    def write(self, row):
        self.writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
        self.file.flush()

    def close(self):
        self.file.close()


def _out_of_range(model: LossModel, pos, box, species, molecules, mol_id) -> tuple[int, int]:
    """How many invariant terms of this frame lie outside the model's grids."""
    lo, hi = kernels.invariant_ranges(pos[None], box[None], species, molecules, mol_id,
                                      model.r_cut, pair_channel_table(), angle_channel_table(),
                                      len(model.channels))
    bad = 0
    for c, ch in enumerate(model.channels):
        if lo[c] < ch.x0 or (ch.kind != "inter" and hi[c] > ch.x1):
            bad += 1
    return bad, len(model.channels)


def simulate(model: LossModel | None, positions, velocities, box_nm, species, molecules, *,
             temperature_k: float, timestep_ps: float, steps: int, out_dir,
             report_interval: int = 100, checkpoint_interval: int = 1000,
             collision_time_ps: float | None = None, platform: str = "CPU", seed: int = 1,
             resume: bool = True, progress: bool = True, max_temperature_factor: float = 4.0,
             system: mm.System | None = None, name: str | None = None,
             equilibration_ps: float = 0.0, equilibration_friction_per_ps: float = 5.0) -> SimulationResult:
    """Run `steps` of learning dynamics from one frame (nm, nm/ps) and write to out_dir.

    Files: trajectory.dcd (every report_interval steps), state.csv, checkpoint.chk,
    topology.pdb, summary.json; on a blow-up also last_good.pdb. With resume=True an
    existing checkpoint in out_dir is continued up to `steps` in total, appending to the files.
    velocities None: drawn at temperature_k with `seed`. equilibration_ps: first run that
    long with Langevin friction on every degree of freedom (same forces, nothing recorded),
    so that every kind of motion starts at the target temperature: a global thermostat
    cannot repair a start out of equipartition (e.g. a CP2K frame of a CSVR run).
    state.csv logs the kinetic temperature of O, H and molecular translation, rotation
    and vibration (analysis.kinetic_temperatures) at every report.
    Atoms must be in O H H order per molecule (molecules[i] = 3i, 3i+1, 3i+2).
    system: a ready conservative openmm.System to run instead of the model's (e.g. the
    SPC/Fw baseline; model may then be None), with the reciprocal-mode integrator;
    name labels it in the progress bar and summary.json.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    species = np.asarray(species, np.int64)
    molecules = np.asarray(molecules, np.int64)
    if not np.array_equal(molecules.reshape(-1), np.arange(len(species))):
        raise ValueError("atoms must be in O H H order per molecule; reorder the frame first")
    box_nm = np.asarray(box_nm, float)
    mode = model.mode if system is None else "reciprocal"
    label = name or mode
    if system is None:
        system = create_system(model, species, molecules, box_nm)
    integrator = LearningIntegrator(temperature_k, timestep_ps, collision_time_ps,
                                    agent_species=species if mode == "agent" else None,
                                    n_atoms=len(species))
    topology = openmm_topology(len(molecules), box_nm)
    sim = app.Simulation(topology, system, integrator, mm.Platform.getPlatformByName(platform))
    paths = {k: out / v for k, v in dict(trajectory="trajectory.dcd", log="state.csv",
                                         checkpoint="checkpoint.chk", pdb="topology.pdb").items()}
    resuming = resume and paths["checkpoint"].exists() and paths["trajectory"].exists()
    if resuming:
        sim.loadCheckpoint(str(paths["checkpoint"]))
        integrator.invalidate()
        done = int(round(sim.context.getState().getTime().value_in_unit(unit.picosecond) / timestep_ps))
        sim.currentStep = done
    else:
        positions, velocities = _start(system, mode, species, positions, velocities, temperature_k,
                                       timestep_ps, seed, equilibration_ps, equilibration_friction_per_ps,
                                       platform)
        sim.context.setPositions(positions)
        sim.context.setVelocities(velocities)
        with open(paths["pdb"], "w") as fh:
            app.PDBFile.writeFile(topology, np.asarray(positions, float) * 10.0, fh)
        done = 0
    if done >= steps:
        previous = out / "summary.json"
        seconds = json.loads(previous.read_text())["seconds_per_step"] if previous.exists() else float("nan")
        return _summary(paths, steps, seconds, timestep_ps)
    sim.reporters.append(app.DCDReporter(str(paths["trajectory"]), report_interval, append=resuming))
    if resuming:
        _truncate_log(paths["log"], done)
        _truncate_dcd(paths["trajectory"], paths["pdb"], done // report_interval)
    log = _StateLog(paths["log"], append=resuming)
    mol_id = np.repeat(np.arange(len(molecules)), 3)
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(len(species))])
    dof = integrator.n_dof
    last_good = sim.context.getState(getPositions=True, enforcePeriodicBox=True)
    warned = False
    step_seconds, stepped = 0.0, 0
    bar = tqdm(total=steps, initial=done, desc=f"{label} dynamics", unit="step", disable=not progress)
    try:
        while done < steps:
            n = min(report_interval, steps - done)
            t0 = time.perf_counter()
            sim.step(n)
            step_seconds += time.perf_counter() - t0
            stepped += n
            done += n
            bar.update(n)
            state = sim.context.getState(getPositions=True, getVelocities=True, getEnergy=True,
                                         enforcePeriodicBox=True)
            pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            vel = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
            ke = 0.5 * float(np.sum(masses[:, None] * vel**2))
            temp = 2 * ke / (dof * KB_KJMOL_K)
            if not (np.all(np.isfinite(pos)) and np.isfinite(temp)) or temp > max_temperature_factor * temperature_k:
                _save_pdb(topology, last_good, out / "last_good.pdb")
                raise SimulationError(
                    f"{label} dynamics blew up before step {done} (temperature {temp:.4g} K, "
                    f"target {temperature_k} K); last good frame saved to {out / 'last_good.pdb'}, "
                    f"checkpoint in {paths['checkpoint']}. Try a shorter timestep or a tighter "
                    "thermostat (collision time), or refit with more data.")
            last_good = state
            bad = 0 if model is None else _out_of_range(model, np.ascontiguousarray(pos), box_nm, species,
                                                        molecules, mol_id)[0]
            if bad and not warned:
                warnings.warn(f"step {done}: {bad} invariant channel(s) outside the model's training "
                              "range; the walls are holding them, results there are extrapolation",
                              ExtrapolationWarning, stacklevel=2)
                warned = True
            fnet = np.linalg.norm([integrator.getGlobalVariableByName(f"fnet_{c}") for c in "xyz"])
            pot = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            kinds = kinetic_temperatures(pos, vel, masses, box_nm)
            log.write([done, done * timestep_ps, temp, ke, pot if mode == "reciprocal" else float("nan"),
                       integrator.getGlobalVariableByName("heat"), float(fnet), bad]
                      + [float(kinds[k][0]) for k in KINETIC_KINDS])
            if done % checkpoint_interval < report_interval or done == steps:
                _checkpoint(sim, paths["checkpoint"])
    finally:
        bar.close()
        log.close()
    result = _summary(paths, steps, step_seconds / max(stepped, 1), timestep_ps)
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
    summary.update(mode=mode, name=label, temperature_target_K=temperature_k, timestep_ps=timestep_ps,
                   platform=platform, collision_time_ps=integrator.collision_time_ps,
                   chain_length=integrator.chain_length, seed=seed, equilibration_ps=equilibration_ps,
                   equilibration_friction_per_ps=equilibration_friction_per_ps)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return result


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


def _checkpoint(sim, path: Path):
    tmp = path.with_suffix(".tmp")
    sim.saveCheckpoint(str(tmp))
    tmp.replace(path)  # an interrupt never leaves a half-written checkpoint


def _truncate_log(path: Path, last_step: int):
    """Drop log rows written after the checkpoint we resume from."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = lines[:1] + [l for l in lines[1:] if int(float(l.split(",")[0])) <= last_step]
    path.write_text("".join(keep))


def _truncate_dcd(path: Path, pdb: Path, n_frames: int):
    """Drop trajectory frames written after the checkpoint we resume from."""
    import mdtraj

    traj = mdtraj.load_dcd(str(path), top=str(pdb))
    if len(traj) > n_frames:
        traj[:n_frames].save_dcd(str(path))


def _save_pdb(topology, state, path):
    with open(path, "w") as fh:
        app.PDBFile.writeFile(topology, state.getPositions(asNumpy=True).value_in_unit(unit.angstrom), fh)


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
