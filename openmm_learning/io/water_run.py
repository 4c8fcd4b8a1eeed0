"""A CP2K water run as the rest of the package uses it: atoms in O H H order per molecule,
the bundled examples, and the run as an mdtraj trajectory."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from .cp2k_reader import Cp2kRun, read_cp2k_run
from .topology import (KINETIC_KINDS, TopologyError, WaterSystem, find_water_molecules, kinetic_temperatures,
                       mdtraj_topology, species_codes)


def example_run_dir(name: str = "water64-xtb-300K") -> Path:
    """Folder of a bundled CP2K example run ("water64-xtb-300K" or "water64-spcfw-300K")."""
    path = Path(str(resources.files("openmm_learning") / "data" / "cp2k" / name))
    if not path.is_dir():
        raise FileNotFoundError(f"no bundled example {name!r}")
    return path


def example_pdb() -> str:
    """Path of a bundled PDB of 64 waters in a periodic box (the last frame of the xTB
    example run), as a string as openmm.app.PDBFile wants it."""
    return str(resources.files("openmm_learning") / "data" / "water64.pdb")


def replicas_needed(box_nm, r_cut: float) -> int:
    """Copies per side that make every box length at least twice the cutoff."""
    return max(1, int(np.ceil(2 * r_cut / np.min(box_nm) - 1e-9)))


def load_water_run(path, allow_truncated=False, r_cut: float | None = None) -> tuple[Cp2kRun, WaterSystem]:
    """Read a CP2K water run and put its atoms in O H H order per molecule (forces when
    printed: a structure reference needs none, the fits say so).

    The molecules are found on the first frame and checked on the last one (a proton
    that hopped between molecules is reported, not silently relabelled). With r_cut, a
    box smaller than twice the cutoff (CP2K's usual 27-32 waters) becomes its periodic
    replica (run.replica copies per side), so minimum-image pairs see every neighbour.
    """
    run = read_cp2k_run(path, allow_truncated=allow_truncated, require_forces=False)  # fits check for them
    molecules = find_water_molecules(run.positions[0], run.elements, run.box_nm[0])
    order = molecules.reshape(-1)
    last = find_water_molecules(run.positions[-1], run.elements, run.box_nm[-1])
    if not np.array_equal(last, molecules):
        raise TopologyError(f"{path}: the molecules of the first and last frames differ "
                         "(a proton moved between molecules); this is not supported")
    if not np.array_equal(order, np.arange(len(order))):
        run.positions = run.positions[:, order]
        if run.forces is not None:
            run.forces = run.forces[:, order]
        if run.velocities is not None:
            run.velocities = run.velocities[:, order]
        run.elements = [run.elements[i] for i in order]
    if r_cut is not None:
        run = run.replicated(replicas_needed(run.box_nm.min(axis=0), r_cut))
    n = len(run.elements) // 3
    system = WaterSystem(species_codes(run.elements), np.arange(3 * n).reshape(n, 3),
                         np.tile(order, run.replica**3))
    return run, system


def trajectory_of(run: Cp2kRun, start_step: int = 0):
    """The run's frames from start_step on as an mdtraj.Trajectory (O H H order)."""
    import mdtraj

    keep = run.steps >= start_step
    n = run.positions.shape[1] // 3
    return mdtraj.Trajectory(run.positions[keep], mdtraj_topology(n), time=run.times_ps[keep],
                             unitcell_lengths=run.box_nm[keep],
                             unitcell_angles=np.full((int(keep.sum()), 3), 90.0))


def default_equilibration_ps(run: Cp2kRun) -> float:
    """Reference equilibration cut: half the run, at most 5 ps (xTB 1.55 ps -> 0.78 ps)."""
    return float(min(5.0, 0.5 * (run.times_ps[-1] - run.times_ps[0])))


#: how far (K) a kind of motion's mean kinetic temperature may sit from the run's target
#: before the run is called out of equipartition (the validation's kinetic threshold)
EQUIPARTITION_TOLERANCE_K = 10.0


def kinetic_means(run: Cp2kRun, frames=None) -> dict | None:
    """Mean kinetic temperature (K) of O, H and molecular translation, rotation and
    vibration over `frames` (indices; default all); None when the run printed no velocities."""
    if run.velocities is None:
        return None
    idx = np.arange(run.n_frames) if frames is None else np.asarray(frames)
    kt = kinetic_temperatures(run.positions[idx], run.velocities[idx], run.masses_amu(), run.box_nm[idx])
    return {k: float(np.mean(kt[k])) for k in KINETIC_KINDS}


def equipartition_line(run: Cp2kRun, kinetic: dict | None) -> str | None:
    """One line when a run's frames are out of equipartition (kinetic_means further than
    EQUIPARTITION_TOLERANCE_K from its target): which motions, how far. None when in it,
    or when it cannot be told (no velocities, no target)."""
    target = run.settings.temperature_k if run.settings else None
    if not kinetic or target is None:
        return None
    off = {k: t for k, t in kinetic.items() if abs(t - target) > EQUIPARTITION_TOLERANCE_K}
    if not off:
        return None
    return (f"{run.project} is out of equipartition: " + ", ".join(f"{k} {t:.0f} K" for k, t in off.items())
            + f" against {target:g} K (its frames sample another ensemble than the target's; an equilibrium "
            "run, e.g. under Langevin friction, has every kind of motion at the target)")
