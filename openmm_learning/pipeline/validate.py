"""The validate step: a CP2K water run in, the report a chemist would publish out.

``run_validation(reference, out_dir, ...)`` answers: does the learned simulation
reproduce CP2K, better than a classical model, and at what cost? Every stage writes
into its own folder of out_dir and is skipped when its output is complete and was made
from the same inputs (a stamp file says which), so an interrupted validation resumes:

    fit/              both modes fitted on the training steps (when no model is given)
    learning-curve/   held-out force RMSE against the number of training frames
    agents/           per-channel sensitivity of every learned model, held-out force errors
    sim-NAME/seed-K/  dynamics under the reference's protocol (pipeline.runs), resumed from
                      its checkpoint; velocities.npy: a short recording after it for the spectrum
    sim-spcfw/        the SPC/Fw baseline (openmm.spcfw), run the same way
    report.md, report.html, metrics.json, *.png    validation.judge.validate over all rows

The comparison itself (metrics, thresholds, report) is the validation package; this
module only decides what to run and feeds it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tqdm.auto import tqdm

from ..dynamics import Dynamics
from ..io.atomic import write_json_atomic
from ..io.run_folder import RunFolder
from ..io.topology import SPECIES
from ..io.water_run import default_equilibration_ps, load_water_run
from ..losses.fit import FitSettings, file_hashes
from ..units import FS_PS
from ..validation.comparisons import light_water
from ..validation.judge import ReportContext, validate
from ..validation.rows import reference_row, row_of, run_folders
from .fit import agents_stage, fit_stage, learning_curve_stage
from .plan import ValidationPlan
from .runs import RunJob, run_dynamics
from .stages import first_frame_after, loaded_model, parse_steps, say, start_frames

BASELINE_NAME = "SPC/Fw"
SPCFW_CITATION = "SPC/Fw: Wu, Tepper & Voth, J. Chem. Phys. 124, 024503 (2006); OpenMM PME, 0.6 nm cutoff"


def _check_run_length(ps, cut_ps, report_ps, seeds, thresholds):
    """Each run needs 2 frames after its cut; a single run needs 2 per uncertainty block."""
    from ..validation.decision import load_thresholds
    from ..validation.metrics import ValidationError

    n_blocks = load_thresholds(thresholds)["n_blocks"]
    frames = int(round((ps - cut_ps) / report_ps))
    need = 2 if seeds >= 2 else 2 * n_blocks
    if frames < need:
        raise ValidationError(f"--ps {ps:g} with a frame every {report_ps:g} ps gives {frames} frames per run "
                              f"after the {cut_ps:g} ps cut; {seeds} seed(s) need {need}: run longer or more seeds")


def run_validation(reference, out_dir, *, models=None, simulations=None, plan: ValidationPlan | None = None,
                   fit_settings: FitSettings | None = None, thresholds=None, report_dir=None, workers=None,
                   progress=True):
    """Validate learned water against a CP2K run folder; returns validation.judge.ValidationResult.

    Rows: models (MODEL.json paths, or {name: path}) are simulated; without models and
    simulations, both modes are fitted (fit_settings) on the plan's train_steps, and the
    frames outside them are scored as a second segment, and simulated; simulations
    ({name: folder}) are already-run folders (a folder of seed-* folders is one row of
    several runs). How rows run: the plan (pipeline.plan.ValidationPlan). thresholds: a
    file or dict (validation.decision.load_thresholds). The report, metrics.json and plots
    go to report_dir (default out_dir). workers: runs at once (pipeline.runs.run_dynamics;
    default one per core on the CPU platform).
    """
    plan = plan or ValidationPlan()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = [models] if isinstance(models, (str, Path)) else models
    paths = list(models.values()) if isinstance(models, dict) else list(models or [])
    r_cut = max([(fit_settings or FitSettings()).r_cut] + [loaded_model(p)[0].r_cut for p in paths])
    run, water = load_water_run(reference, plan.allow_truncated, r_cut=r_cut)
    if run.settings is None:
        raise FileNotFoundError(f"{reference}: no CP2K input file, so the temperature, timestep and cell "
                                "of the reference are unknown")
    simulations = dict(simulations or {})
    fitted = not models and not simulations
    if models or fitted:  # fail before the expensive stages when the runs could not be judged
        _check_run_length(plan.ps, plan.row_equilibration_ps, plan.report_interval * run.settings.timestep_ps,
                          plan.seeds, thresholds)
    eq = default_equilibration_ps(run) if plan.equilibration_ps is None else float(plan.equilibration_ps)
    train_steps = parse_steps(plan.train_steps)
    if fitted and train_steps is None and eq > 0:
        # fit on what is compared, the reference after its cut: its start is another ensemble
        train_steps = (int(run.steps[first_frame_after(run, eq)]), None)
    lc = None
    if fitted:
        paths = fit_stage(run, water, out / "fit", train_steps, fit_settings, progress)
        models = {f"learned {m}": p for m, p in paths.items()}
        if plan.learning_curve_sizes:
            lc = learning_curve_stage(run, water, out / "learning-curve", train_steps, plan.learning_curve_sizes,
                                      fit_settings, progress)
    models = _named_models(models)
    baseline = bool(models) if plan.baseline is None else plan.baseline
    sims = _simulated_rows(models, baseline, run, out, progress)
    frames = start_frames(run, eq, plan.seeds)
    workers = run_dynamics(_jobs(sims, frames, plan, progress),
                           dict(path=reference, allow_truncated=plan.allow_truncated, r_cut=r_cut), plan,
                           workers, progress, loaded=(run, water))
    agents = agents_stage(models, run, water, out / "agents", plan.sensitivity_frames, progress) if models else {}
    folders = {**{n: f for n, (f, _) in sims.items()}, **simulations}
    rows, blow_ups = _load_rows(folders, progress)
    setup = dict(eq=eq, train_steps=train_steps, fitted=fitted, baseline=baseline, frames=frames, workers=workers)
    context = ReportContext(settings_info=_provenance(run, models, folders, plan, setup) + list(plan.extra_info or []),
                            sections=_sections(out, agents, lc, folders, fitted))
    result = validate(reference_row(run, eq), rows, out_dir=out if report_dir is None else Path(report_dir),
                      thresholds=thresholds, baseline=BASELINE_NAME if baseline else None,
                      target_temperature_k=run.settings.temperature_k, equilibration_ps=eq,
                      row_equilibration_ps=plan.row_equilibration_ps, blow_ups=blow_ups, context=context)
    _write_record(out, result, run, folders, models, plan, setup)
    return result


def _simulated_rows(models: dict, baseline: bool, run, out: Path, progress) -> dict:
    """{row name: (folder, model path or None)} of the rows this validation runs."""
    sims = {name: (out / f"sim-{_folder_name(name)}", path) for name, path in models.items()}
    if baseline and run.replica > 1:  # a box under twice the cutoff: rows run in LAMMPS in the cell itself
        say(progress, f"{BASELINE_NAME}: no baseline for a box under twice the cutoff (OpenMM would run its "
                      "replica, a different system)")
    elif baseline:
        sims[BASELINE_NAME] = (out / "sim-spcfw", None)
    return sims


def _jobs(sims: dict, frames: list, plan: ValidationPlan, progress) -> list:
    jobs = []
    for name, (folder, path) in sims.items():
        say(progress, f"{name}: {plan.seeds} x ({plan.langevin_ps:g} ps Langevin + {plan.ps:g} ps) of dynamics "
                      f"in {folder}")
        # a run that blew up is decided: a rerun would only repeat it
        jobs += [RunJob(name, None if path is None else str(path), str(folder / f"seed-{k}"), k, frame)
                 for k, frame in enumerate(frames) if not RunFolder(folder / f"seed-{k}").blow_up.exists()]
    return jobs


def _load_rows(folders: dict, progress) -> tuple[dict, dict]:
    """The rows' surviving runs ({name: [Row]}) and what stopped the ones that blew up."""
    say(progress, f"comparing {len(folders)} rows with CP2K")
    rows, blow_ups = {}, {}
    for n, f in tqdm(folders.items(), desc="loading rows", unit="row", disable=not progress):
        runs = run_folders(f)
        blown = [x for x in runs if RunFolder(x).blow_up.exists()]
        if blown:
            blow_ups[n] = [f"{x.name}: {json.loads(RunFolder(x).blow_up.read_text())['error']}" for x in blown]
        if len(blown) < len(runs):
            rows[n] = [row_of(x) for x in runs if x not in blown]
    return rows, blow_ups


def _write_record(out: Path, result, run, folders: dict, models: dict, plan: ValidationPlan, setup: dict):
    write_json_atomic(out / "suite.json", {
        "reference": run.project, "passed": result.passed, "verdicts": result.verdicts,
        "rows": {n: str(Path(f).name) for n, f in folders.items()}, "seeds": plan.seeds,
        "start_frames": setup["frames"], "langevin_ps": plan.langevin_ps, "first_seed": plan.first_seed,
        "models": {n: str(p) for n, p in models.items()}, "train_steps": list(setup["train_steps"] or (None, None)),
        "equilibration_ps": setup["eq"], "row_equilibration_ps": plan.row_equilibration_ps, "ps": plan.ps,
        "report": os.path.relpath(result.html_path, out)})


def _or_dash(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


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


def _provenance(run, models: dict, folders: dict, plan: ValidationPlan, setup: dict) -> list:
    """The report's provenance lines: reference, fit, models, how the rows ran."""
    s = run.settings
    eq, train_steps = setup["eq"], setup["train_steps"]
    lines = [f"reference: CP2K project {run.project} ({s.method}), {run.n_frames} frames, "
             f"steps {run.steps[0]}-{run.steps[-1]} ({run.times_ps[-1] - run.times_ps[0]:.3g} ps)",
             f"state (from the CP2K input): {s.ensemble} {s.temperature_k:g} K, timestep {s.timestep_ps / FS_PS:g} fs, "
             f"thermostat {s.thermostat}; box {' x '.join(f'{b:.4f}' for b in run.box_nm[-1])} nm, "
             f"{len(run.elements) // 3} molecules"
             + (f" (the {run.replica}x{run.replica}x{run.replica} periodic replica of the CP2K cell, whose "
                "box is under twice the cutoff; the forces on the replica are those of the periodic original)"
                if run.replica > 1 else ""),
             f"reference equilibration cut: {eq:.3g} ps; simulations cut: {plan.row_equilibration_ps:.3g} ps"]
    lines += [f"reference file {role}: {h['file']} sha256 {h['sha256'][:16]}"
              for role, h in file_hashes(run.files).items()]
    if setup["fitted"]:
        a, b = train_steps or (None, None)
        lines.append(f"fit: both modes on CP2K steps {a if a is not None else run.steps[0]}-"
                     f"{b if b is not None else 'end'} (the fit holds out its last 20 % after a gap)")
    for n, p in models.items():
        model, sha = loaded_model(p)
        lines.append(f"{n}: model {Path(p).name} sha256 {sha[:16]}, r_cut {model.r_cut:g} nm, functions: "
                     f"{model.basis_text()}")
    if folders:
        lines += _how_rows_ran(run, plan, setup)
    if plan.velocity_ps and run.velocities is not None and light_water(s.masses_amu["H"]) and run.replica == 1:
        lines.append(f"spectra: CP2K velocities from the vel file; OpenMM velocities recorded for "
                     f"{plan.velocity_ps:g} ps after each run, every {plan.velocity_interval} steps")
    if setup["baseline"] and run.replica == 1:
        lines.append(SPCFW_CITATION + "; same box, start frame, temperature, timestep and thermostat as the "
                     "learned reciprocal row")
    lines.append("cost: CP2K seconds per step = median UsedTime of the .ener file (the machine that ran "
                 "CP2K); OpenMM seconds per step measured during each run on this machine")
    return lines


def _how_rows_ran(run, plan: ValidationPlan, setup: dict) -> list:
    """Provenance of the rows' runs: engine, seeds, start frames, protocol, box."""
    import openmm

    s, frames, own_cell = run.settings, setup["frames"], run.replica > 1
    dynamics = Dynamics.from_run(run, plan.ps)
    thermostat = (f"Langevin, the reference's friction {dynamics.friction_per_ps:g}/ps"
                  if dynamics.thermostat == "langevin"
                  else f"CSVR, time constant {dynamics.constants()[0] / FS_PS:g} fs")
    engine = ("LAMMPS (table route; agent mode through lammps_plugin.agent)" if own_cell else
              f"OpenMM {openmm.__version__} on the {plan.platform} platform")
    first = plan.first_seed
    lines = [f"{engine}, {os.cpu_count()} CPU cores, {setup['workers']} run(s) at once; "
             f"each row {len(frames)} runs (seeds {first}-{first + len(frames) - 1}) from CP2K steps "
             f"{', '.join(str(int(run.steps[f])) for f in frames)}: velocities drawn at "
             f"{s.temperature_k:g} K, {plan.langevin_ps:g} ps of Langevin (5/ps) equilibration, "
             f"then {plan.ps:g} ps of dynamics ({thermostat})"]
    cell_nm = " x ".join(f"{b:.4f}" for b in run.box_nm[-1] / run.replica)
    box = (f"the CP2K cell itself, {cell_nm} nm, {len(run.elements) // 3 // run.replica**3} molecules, in "
           f"LAMMPS; analysed as its {run.replica}x{run.replica}x{run.replica} replica, as the reference is"
           if own_cell else f"the CP2K cell itself, {cell_nm} nm")
    return lines + [f"every row runs under the reference's protocol: its box ({box}), timestep "
                    f"{s.timestep_ps / FS_PS:g} fs and masses (H {s.masses_amu['H']:g}, O {s.masses_amu['O']:g} amu)"]


def _fmt_err(e):
    if not e:
        return "n/a"
    return (f"O {e['O']['rmse']:.1f} ({100 * e['O']['relative_rmse']:.1f} %), "
            f"H {e['H']['rmse']:.1f} ({100 * e['H']['relative_rmse']:.1f} %)")


def _sections(out, agents, lc, folders, fitted) -> list:
    """The report's sections beyond the metrics: models, agents, learning curve, fit, runs."""
    sections = _agent_sections(out, agents) if agents else []
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
    return sections + _simulation_section(folders)


def _agent_sections(out, agents) -> list:
    """The learned models' held-out errors, and what drives each agent."""
    sections = []
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
    return sections


def _simulation_section(folders) -> list:
    """One row per run of every row: its length, seed, thermostat, temperature, heat, cost."""
    sim_rows = []
    for name, folder in folders.items():
        for run_dir in run_folders(folder):
            f = RunFolder(run_dir).summary
            if not f.exists():
                continue
            s = json.loads(f.read_text())
            sim_rows.append([name, os.path.relpath(run_dir, Path(folder).parent), s["steps"],
                             f"{s['steps'] * s['timestep_ps']:g}", s.get("seed", "?"),
                             f"{s.get('equilibration_ps', 0):g}", f"{s['mean_temperature']:.1f}",
                             Dynamics.from_summary(s).describe()
                             + (" (LAMMPS)" if s.get("engine") == "LAMMPS" else ""),
                             _or_dash(s["heat_per_ps"], "{:.0f}"), _or_dash(s["mean_net_force"], "{:.3g}"),
                             f"{1000 * s['seconds_per_step']:.2f}",
                             _or_dash(s["out_of_range_fraction"] and 100 * s["out_of_range_fraction"], "{:.0f} %")])
    if sim_rows:
        return [{"title": "Simulations", "text": [
            "Each run: Langevin equilibration (not recorded), then velocity Verlet with the thermostat named in "
            "the table (OpenMM's LearningIntegrator, or LAMMPS in a box under twice the cutoff, which does not "
            "measure the columns shown as -) at the reference's temperature and timestep; the mean temperature is over "
            "the second half; 'out of range': reports with an invariant outside the model's training range."],
            "table": {"header": ["row", "folder", "steps", "ps", "seed", "Langevin ps", "mean T (K)", "thermostat",
                                 "heat (kJ/mol/ps)",
                                 "|F_net| (kJ/mol/nm)", "ms/step", "out of range"], "rows": sim_rows}}]
    return []
