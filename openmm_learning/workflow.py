"""The main job, step by step: CP2K run -> fitted losses -> OpenMM dynamics -> validation.

Each step writes its files into its own folder and is skipped when its output already
exists (an interrupted job resumes where it stopped).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np

from .cp2k import Cp2kRun, read_cp2k_run
from .fit import FitSettings, file_hashes, fit_modes
from .model import LossModel, WaterSystem
from .topology import TopologyError, find_water_molecules, mdtraj_topology, species_codes


def example_run_dir(name: str = "water64-xtb-300K") -> Path:
    """Folder of a bundled CP2K example run ("water64-xtb-300K" or "water64-spcfw-300K")."""
    path = Path(str(resources.files("openmm_learning") / "data" / "cp2k" / name))
    if not path.is_dir():
        raise FileNotFoundError(f"no bundled example {name!r}")
    return path


def load_water_run(path, allow_truncated=False) -> tuple[Cp2kRun, WaterSystem]:
    """Read a CP2K water run and put its atoms in O H H order per molecule.

    The molecules are found on the first frame and checked on the last one (a proton
    that hopped between molecules is reported, not silently relabelled).
    """
    run = read_cp2k_run(path, allow_truncated=allow_truncated)
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
    n = len(order) // 3
    system = WaterSystem(species_codes(run.elements), np.arange(3 * n).reshape(n, 3))
    return run, system


def trajectory_of(run: Cp2kRun, start_step: int = 0):
    """The run's frames from start_step on as an mdtraj.Trajectory (O H H order)."""
    import mdtraj

    keep = run.steps >= start_step
    n = run.positions.shape[1] // 3
    return mdtraj.Trajectory(run.positions[keep], mdtraj_topology(n), time=run.times_ps[keep],
                             unitcell_lengths=run.box_nm[keep],
                             unitcell_angles=np.full((int(keep.sum()), 3), 90.0))


def fit_run(run_dir, out_dir, modes=("agent", "reciprocal"), settings: FitSettings | None = None,
            allow_truncated=False, progress=True) -> dict:
    """Fit the agent losses of a CP2K run; write MODE.json, parity.png, channels.png, fit.json."""
    from .plots import channel_plot, parity_plot

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run, system = load_water_run(run_dir, allow_truncated)
    if run.forces is None:
        raise FileNotFoundError(f"{run_dir}: the run has no forces file (*-frc-*.xyz); force matching needs one")
    provenance = {"cp2k_project": run.project, "cp2k_files": file_hashes(run.files),
                  "cp2k_method": run.settings.method if run.settings else None,
                  "steps": [int(run.steps[0]), int(run.steps[-1])], "n_frames": run.n_frames,
                  "temperature_K": run.settings.temperature_k if run.settings else None}
    results = fit_modes(run.positions, run.forces, run.box_nm, system, modes, settings,
                        provenance, progress)
    for mode, res in results.items():
        res.model.save(out / f"{mode}.json")
    parity_plot(results, system.species, out / "parity.png")
    channel_plot({m: r.model for m, r in results.items()}, out / "channels.png")
    summary = {m: r.model.fit_metrics["held_out"] for m, r in results.items()}
    (out / "fit.json").write_text(json.dumps(summary, indent=1))
    return results


def simulate_run(model_path, run_dir, out_dir, *, ps: float, frame: int = -1, platform="CPU",
                 collision_time_ps=None, progress=True, allow_truncated=False, langevin_ps=2.0, seed=1):
    """Learning dynamics of a model from one frame of a CP2K run, at the run's state, after
    langevin_ps of Langevin equilibration (CP2K frames of global-thermostat runs are out of
    equipartition, which the Nose-Hoover dynamics would keep)."""
    from .simulate import simulate

    model = LossModel.load(model_path)
    run, system = load_water_run(run_dir, allow_truncated)
    if run.settings is None:
        raise ValueError(f"{run_dir}: no CP2K input file, so the temperature and timestep are unknown")
    dt = run.settings.timestep_ps
    steps = int(round(ps / dt))
    return simulate(model, run.positions[frame],
                    None if run.velocities is None else run.velocities[frame],
                    run.box_nm[frame], system.species, system.molecules,
                    temperature_k=run.settings.temperature_k, timestep_ps=dt, steps=steps,
                    out_dir=out_dir, platform=platform, collision_time_ps=collision_time_ps,
                    progress=progress, equilibration_ps=langevin_ps, seed=seed)


def default_equilibration_ps(run: Cp2kRun) -> float:
    """Reference equilibration cut: half the run, at most 5 ps (xTB 1.55 ps -> 0.78 ps)."""
    return float(min(5.0, 0.5 * (run.times_ps[-1] - run.times_ps[0])))


def validate_simulations(reference_dir, simulations: dict, out_dir, *, equilibration_ps=None,
                         row_equilibration_ps=2.0, extra_info=None, allow_truncated=False, thresholds=None):
    """Compare simulation folders {name: folder} with a CP2K run; write the report.

    The validation suite without simulating anything (no baseline row); see
    validation_suite.run_validation for the whole suite.
    """
    from .validation_suite import run_validation

    return run_validation(reference_dir, out_dir, simulations=simulations, baseline=False,
                          equilibration_ps=equilibration_ps, row_equilibration_ps=row_equilibration_ps,
                          extra_info=extra_info, allow_truncated=allow_truncated, thresholds=thresholds)


def run_example(out_dir="output", *, ps=10.0, seeds=3, first_seed=1, platform="CPU", run_dir=None, progress=True):
    """The main job on a CP2K run (default: the bundled xTB water): the validation suite.

    Fit both modes on every frame, learning curve, agent sensitivity, `seeds` runs of ps of
    OpenMM dynamics per learned mode and for the SPC/Fw baseline (each after 2 ps of
    Langevin equilibration), velocity recordings, comparison with CP2K.
    Layout: OUT/fit/, OUT/learning-curve/, OUT/agents/, OUT/sim-{agent,reciprocal,spcfw}/,
    OUT/validation/ (report.html, report.md, metrics.json, plots). Finished stages are not redone.
    """
    from .validation_suite import run_validation

    run_dir = Path(run_dir) if run_dir else example_run_dir()
    return run_validation(run_dir, out_dir, ps=ps, seeds=seeds, first_seed=first_seed, platform=platform,
                          progress=progress,
                          report_dir=Path(out_dir) / "validation")
