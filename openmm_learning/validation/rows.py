"""A simulation folder or a CP2K run as the validation's Row: trajectory, temperatures,
velocities, cost, heat and net force."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io import Cp2kRun
from ..io.run_folder import RunFolder
from ..io.topology import KINETIC_KINDS
from ..io.water_run import trajectory_of
from ..units import MASSES_AMU
from . import analysis
from .profiles import Row


def run_folders(folder) -> list:
    """The simulation folders of one row: FOLDER itself, or its seed-* folders in order."""
    folder = Path(folder)
    if RunFolder(folder).is_run():
        return [folder]
    seeds = sorted(folder.glob("seed-*"), key=lambda p: int(p.name.split("-")[1]) if p.name[5:].isdigit() else 0)
    if not seeds:
        raise FileNotFoundError(f"{folder}: neither a simulation folder (summary.json, state.csv) "
                                "nor a folder of seed-* simulation folders")
    return seeds


def row_of(sim_dir):
    """The Row of a simulation folder: trajectory, state log, and from the summary
    the cost, heat and net force; velocities when recorded."""
    import mdtraj

    from ..openmm.simulate import read_state_log

    f = RunFolder(sim_dir)
    traj = mdtraj.load(str(f.trajectory), top=str(f.topology))
    log = read_state_log(f.log)
    traj.time = log["time_ps"][: len(traj)]
    s = json.loads(f.summary.read_text()) if f.summary.exists() else {}
    row = Row(traj, temperature=log["temperature_K"], temperature_times_ps=log["time_ps"],
              seconds_per_step=s.get("seconds_per_step"), hydrogen_mass_amu=s.get("hydrogen_mass_amu", MASSES_AMU["H"]),
              thermostat=s.get("thermostat"), friction_per_ps=s.get("friction_per_ps"),
              temperature_atoms=s.get("temperature_atoms"))  # a LAMMPS run in a small cell: its own atoms
    if all(f"T_{k}_K" in log for k in KINETIC_KINDS):
        row.kinetic, row.kinetic_times_ps = {k: log[f"T_{k}_K"] for k in KINETIC_KINDS}, log["time_ps"]
    row.heat_per_ps, row.net_force = s.get("heat_per_ps"), s.get("mean_net_force")
    if f.velocities.exists() and f.velocity_spacing.exists():
        row.velocities = np.load(f.velocities)
        row.velocity_dt_ps = json.loads(f.velocity_spacing.read_text())["dt_ps"]
    return row


def reference_row(run: Cp2kRun, equilibration_ps: float):
    """The Row of the CP2K run: trajectory, temperature, velocities (when evenly
    spaced), heat removed by its thermostat and net force after the cut, cost per step."""
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
