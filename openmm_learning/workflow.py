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
                 collision_time_ps=None, progress=True, allow_truncated=False):
    """Learning dynamics of a model from one frame of a CP2K run, at the run's state."""
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
                    progress=progress)


def default_equilibration_ps(run: Cp2kRun) -> float:
    """Reference equilibration cut: half the run, at most 5 ps (xTB 1.55 ps -> 0.78 ps)."""
    return float(min(5.0, 0.5 * (run.times_ps[-1] - run.times_ps[0])))


def simulation_row(sim_dir):
    """A validation Row from a simulation folder (trajectory, state log, summary)."""
    import mdtraj

    from .simulate import read_state_log
    from .validation import Row

    sim_dir = Path(sim_dir)
    traj = mdtraj.load(str(sim_dir / "trajectory.dcd"), top=str(sim_dir / "topology.pdb"))
    log = read_state_log(sim_dir / "state.csv")
    traj.time = log["time_ps"][: len(traj)]
    summary = json.loads((sim_dir / "summary.json").read_text()) if (sim_dir / "summary.json").exists() else {}
    return Row(traj, temperature=log["temperature_K"], temperature_times_ps=log["time_ps"],
               seconds_per_step=summary.get("seconds_per_step"))


def validate_simulations(reference_dir, simulations: dict, out_dir, *, equilibration_ps=None,
                         row_equilibration_ps=2.0, extra_info=None, allow_truncated=False):
    """Compare simulation folders {name: folder} with a CP2K run; write the report."""
    from .validation import Row, validate

    run, _ = load_water_run(reference_dir, allow_truncated)
    eq = default_equilibration_ps(run) if equilibration_ps is None else equilibration_ps
    ref_traj = trajectory_of(run)
    temps = None
    if run.energies is not None:
        temps = (run.energies["temperature"], run.energies["time_ps"])
    reference = Row(ref_traj, temperature=None if temps is None else temps[0],
                    temperature_times_ps=None if temps is None else temps[1])
    rows = {name: simulation_row(d) for name, d in simulations.items()}
    cost = {"cp2k_seconds_per_step": run.seconds_per_step()} if run.energies is not None else {}
    info = [f"reference: CP2K project {run.project} ({run.settings.method if run.settings else '?'}), "
            f"{run.n_frames} frames, steps {run.steps[0]}-{run.steps[-1]}",
            f"reference equilibration cut: {eq:.3g} ps; simulations cut: {row_equilibration_ps:.3g} ps",
            f"box {np.round(run.box_nm[0], 5).tolist()} nm, {len(run.elements) // 3} molecules"]
    if run.settings is not None:
        info.append(f"state: {run.settings.ensemble} {run.settings.temperature_k:g} K, "
                    f"timestep {run.settings.timestep_ps * 1000:g} fs, thermostat {run.settings.thermostat}")
    for name, d in simulations.items():
        info.append(f"{name}: {Path(d).name}/ (OpenMM learning dynamics)")
    info += list(extra_info or [])
    return validate(reference, rows, out_dir=out_dir, cost=cost, equilibration_ps=eq,
                    row_equilibration_ps=row_equilibration_ps, settings_info=info)


def run_example(out_dir="output", *, ps=20.0, platform="CPU", run_dir=None, progress=True):
    """The main job on a CP2K run (default: the bundled xTB water): fit, simulate, validate.

    Layout: OUT/fit/{agent,reciprocal}.json + plots, OUT/sim-{agent,reciprocal}/,
    OUT/validation/report.md. Finished steps are not redone.
    """
    out = Path(out_dir)
    run_dir = Path(run_dir) if run_dir else example_run_dir()
    fit_dir = out / "fit"
    if not all((fit_dir / f"{m}.json").exists() for m in ("agent", "reciprocal")):
        fit_run(run_dir, fit_dir, progress=progress)
    sims = {}
    for mode in ("agent", "reciprocal"):
        sim_dir = out / f"sim-{mode}"
        simulate_run(fit_dir / f"{mode}.json", run_dir, sim_dir, ps=ps, platform=platform,
                     progress=progress)
        sims[f"learned {mode}"] = sim_dir
    fit_info = []
    for mode in ("agent", "reciprocal"):
        m = LossModel.load(fit_dir / f"{mode}.json").fit_metrics["held_out"]
        fit_info.append(f"fit {mode}: held-out force RMSE O {m['O']['rmse']:.1f} kJ/mol/nm "
                        f"({100 * m['O']['relative_rmse']:.1f} %), H {m['H']['rmse']:.1f} kJ/mol/nm "
                        f"({100 * m['H']['relative_rmse']:.1f} %)")
    for mode in ("agent", "reciprocal"):
        s = json.loads((out / f"sim-{mode}" / "summary.json").read_text())
        fit_info.append(f"{mode} dynamics: {s['steps']} steps, mean T {s['mean_temperature']:.1f} K, "
                        f"thermostat heat {s['heat_per_ps']:.0f} kJ/mol/ps, mean |net force| "
                        f"{s['mean_net_force']:.0f} kJ/mol/nm, {1e3 * s['seconds_per_step']:.2f} ms/step")
    return validate_simulations(run_dir, sims, out / "validation", extra_info=fit_info,
                                row_equilibration_ps=min(2.0, 0.2 * ps))
