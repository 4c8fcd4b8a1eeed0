"""The main job, step by step: CP2K run -> fitted losses -> OpenMM dynamics -> validation.

Each step writes its files into its own folder and is skipped when its output already
exists (an interrupted job resumes where it stopped).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .io.atomic import write_json_atomic
from .io.water_run import equipartition_line, example_run_dir, load_water_run
from .losses.fit import FitSettings, fit_modes, training_provenance
from .losses.model import LossModel
from .validation.suite import RUNS_PER_ROW


def say_replica(run, progress=True):
    """One line when a small box runs as its periodic replica."""
    if run.replica > 1 and progress:
        n = run.replica
        print(f"{run.project}: box {run.box_nm[0][0] / n:.4f} nm is under twice the cutoff: using its "
              f"{n}x{n}x{n} periodic replica ({len(run.elements) // 3} molecules)", file=sys.stderr)


def fit_run(run_dir, out_dir, modes=("agent", "reciprocal"), settings: FitSettings | None = None,
            allow_truncated=False, progress=True, committee=False) -> dict:
    """Fit the agent losses of a CP2K run; write MODE.json, parity.png, channels.png, fit.json,
    and with committee the models refitted without each CV block, committee/MODE-k.json."""
    from .validation.plots import channel_plot, parity_plot

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = settings or FitSettings()
    run, system = load_water_run(run_dir, allow_truncated, r_cut=settings.r_cut)
    say_replica(run, progress)
    if run.forces is None:
        raise FileNotFoundError(f"{run_dir}: the run has no forces file (*-frc-*.xyz); force matching needs one")
    provenance = training_provenance(run, np.arange(run.n_frames))
    line = equipartition_line(run, provenance["training_kinetic_K"])
    if line and progress:
        print(line, file=sys.stderr)
    results = fit_modes(run.positions, run.forces, run.box_nm, system, modes, settings,
                        provenance, progress, committee)
    for mode, res in results.items():
        res.model.save(out / f"{mode}.json")
        for k, member in enumerate(res.committee):
            member.save(out / "committee" / f"{mode}-{k}.json")
    parity_plot(results, system.species, out / "parity.png")
    channel_plot({m: r.model for m, r in results.items()}, out / "channels.png")
    summary = {m: r.model.fit_metrics["held_out"] for m, r in results.items()}
    write_json_atomic(out / "fit.json", summary)
    return results


def simulate_run(model_path, run_dir, out_dir, *, ps: float, frame: int = -1, platform="CPU",
                 collision_time_ps=None, progress=True, allow_truncated=False, langevin_ps=2.0, seed=1,
                 thermostat="csvr", committee=(), max_deviation=None, stop_above_deviation=False):
    """Learning dynamics of a model from one frame of a CP2K run, at the run's state and
    masses (a heavy-hydrogen run's H mass goes with its long step), after
    langevin_ps of Langevin equilibration (CP2K frames of global-thermostat runs are out of
    equipartition, which a global thermostat would keep). CSVR takes the run's own time
    constant when the run used CSVR. committee: model files whose spread is recorded
    (committee.csv; simulate's max_deviation and stop_above_deviation)."""
    from .openmm.simulate import simulate

    model = LossModel.load(model_path)
    run, system = load_water_run(run_dir, allow_truncated, r_cut=model.r_cut)
    say_replica(run, progress)
    if run.settings is None:
        raise ValueError(f"{run_dir}: no CP2K input file, so the temperature and timestep are unknown")
    frame = run.frame(frame)
    dt = run.settings.timestep_ps
    steps = int(round(ps / dt))
    if thermostat == "csvr" and collision_time_ps is None:
        collision_time_ps = run.settings.csvr_time_ps
    return simulate(model, run.positions[frame],
                    None if run.velocities is None else run.velocities[frame],
                    run.box_nm[frame], system.species, system.molecules,
                    temperature_k=run.settings.temperature_k, timestep_ps=dt, steps=steps,
                    out_dir=out_dir, platform=platform, collision_time_ps=collision_time_ps, thermostat=thermostat,
                    progress=progress, equilibration_ps=langevin_ps, seed=seed, replica=run.replica,
                    committee=[LossModel.load(p) for p in committee], max_deviation=max_deviation,
                    stop_above_deviation=stop_above_deviation, masses_amu=run.settings.masses_amu)


def validate_simulations(reference_dir, simulations: dict, out_dir, *, equilibration_ps=None,
                         row_equilibration_ps=2.0, extra_info=None, allow_truncated=False, thresholds=None):
    """Compare simulation folders {name: folder} with a CP2K run; write the report.

    The validation suite without simulating anything (no baseline row); see
    validation.suite.run_validation for the whole suite.
    """
    from .validation.suite import run_validation

    return run_validation(reference_dir, out_dir, simulations=simulations, baseline=False,
                          equilibration_ps=equilibration_ps, row_equilibration_ps=row_equilibration_ps,
                          extra_info=extra_info, allow_truncated=allow_truncated, thresholds=thresholds)


#: the example's reference: the bundled equilibrium (Langevin) xTB run, in equipartition
#: after its first ps (its README); a CSVR run's frames are out of it (validation/README.md)
EXAMPLE_REFERENCE = "water64-xtb-langevin-300K"
EXAMPLE_EQUILIBRATION_PS = 1.0
#: runs per row and their length (ps), and what is cut from each: many independent runs
#: give the rows' errors degrees of freedom (Student's t of 2 runs is 12.7, of 8 runs
#: 2.4); a run relaxes from its reference frame to the model's own structure over the
#: first ps (validation/README.md)
EXAMPLE_SEEDS, EXAMPLE_PS, EXAMPLE_ROW_CUT_PS, EXAMPLE_LANGEVIN_PS = RUNS_PER_ROW, 10.0, 2.0, 1.0
#: the example's fit: the default (FitSettings) on every 2nd frame after the cut
EXAMPLE_FIT = FitSettings(frame_stride=2)


def run_example(out_dir="output", *, ps=EXAMPLE_PS, seeds=EXAMPLE_SEEDS, first_seed=1, platform="CPU", run_dir=None,
                progress=True, equilibration_ps=None, workers=None):
    """The main job on a CP2K run (default: the bundled equilibrium xTB water, its first
    ps cut): the validation suite.

    Fit both modes on every 2nd frame after the reference's cut (compiled to Chebyshev series: the same held-out error,
    2-4x faster dynamics than splines; benchmarks/README.md), learning curve, agent sensitivity, `seeds` runs of ps of
    OpenMM dynamics per learned mode and for the SPC/Fw baseline (each after 1 ps of
    Langevin equilibration, its first 2 ps cut) at the reference's timestep and masses,
    comparison with CP2K.
    Layout: OUT/fit/, OUT/learning-curve/, OUT/agents/, OUT/sim-{agent,reciprocal,spcfw}/,
    OUT/validation/ (report.html, report.md, metrics.json, plots). Finished stages are not redone.
    """
    from .validation.suite import run_validation

    if run_dir is None:
        run_dir = example_run_dir(EXAMPLE_REFERENCE)
        equilibration_ps = EXAMPLE_EQUILIBRATION_PS if equilibration_ps is None else equilibration_ps
    return run_validation(Path(run_dir), out_dir, ps=ps, seeds=seeds, first_seed=first_seed, platform=platform,
                          progress=progress, equilibration_ps=equilibration_ps, langevin_ps=EXAMPLE_LANGEVIN_PS,
                          row_equilibration_ps=EXAMPLE_ROW_CUT_PS, report_interval=20, learning_curve_sizes=3,
                          fit_settings=EXAMPLE_FIT,
                          report_dir=Path(out_dir) / "validation", workers=workers)
