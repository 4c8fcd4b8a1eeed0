"""How much asymmetry agent dynamics can afford (a study, not a test).

Agent mode fits the O and H agents' losses apart, so the two views of each O-H pair
differ and the forces are not reciprocal: the thermostat removes the heat they pump in and
the species settle at different temperatures. The coupled fit draws the views together
with a penalty mu * ||f_ab - f_ba||^2 (losses.fit.solve_coupled). For a grid of mu this
script fits the CP2K run (the fit's own held-out last 20 %), then runs each model from
the same frame (Langevin equilibration, then the learning integrator's Nose-Hoover) and
reports, against mu: held-out force error per species, the net force on the held-out
frames, and in dynamics the heat, the net force and the kinetic temperature of O, H and
molecular translation, rotation and vibration. Also the mu the force cross-validation
picks (one-standard-error rule), and the reciprocal model run as an agent model.

    python validation/asymmetry_study.py [--run RUN] [--ps 5] [--seeds 3] [--charges] [--mus 0.01 0.1] --out DIR

--charges fits point charges with every variant (losses.ewald); --mus replaces the grid.

With several seeds the dynamics numbers are means over the seeds, each with the
standard error of that mean (one seed of a few ps scatters the kinetic temperatures by several K).

Writes DIR/asymmetry.json, DIR/asymmetry.png and the models (DIR/models/).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from openmm_learning.io.run_folder import RunFolder
from openmm_learning.dynamics import Dynamics, StartFrame
from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.losses.fit import (MUS, FitSettings, _model_of, _predictions, accumulate, build_channels,
                                        force_errors, solve_coupled, solve_mode, time_split)
from openmm_learning.openmm.simulate import Reporting, read_state_log, simulate

KINDS = ("O", "H", "translation", "rotation", "vibration")


def fit_variants(run, system, settings, mus=MUS[1:]):
    """{name: (model, fit numbers)} for free agents, each mu of the grid, the CV pick and
    the reciprocal model (run with the agent integrator, mu = infinity)."""
    pos, frc, box = run.positions, run.forces, run.box_nm
    block, test = time_split(len(pos), settings)
    channels = build_channels(pos[block >= 0], box[block >= 0], system, settings)
    blocks = accumulate(pos, frc, box, system, channels, settings, block, settings.cv_folds)
    y_free, lambdas, _, _ = solve_mode(blocks, channels, "agent", settings)
    _, mu_cv, curve = solve_coupled(blocks, channels, settings, lambdas)
    variants = {"free": (y_free, 0.0)}
    for mu in mus:
        variants[f"mu={mu:g}"] = (solve_coupled(blocks, channels, settings, lambdas, mus=(mu,))[0], float(mu))
    variants["reciprocal"] = (solve_mode(blocks, channels, "reciprocal", settings)[0], None)  # mu = infinity
    out = {}
    for name, (y, mu) in variants.items():
        model = _model_of(y, channels, "agent", settings)
        pred = _predictions(model, pos, box, system, test)
        err = force_errors(frc[test], pred, system.species)
        out[name] = (model, {"mu": mu, "rmse_O": err["O"]["rmse"], "rmse_H": err["H"]["rmse"],
                             "net_force_held_out": float(np.mean(np.linalg.norm(pred.sum(axis=1), axis=1)))})
    return out, {"mu_cv": mu_cv, "cv_curve": {f"{m:g}": e for m, e in curve.items()}}


def dynamics(model, run, system, out_dir, ps, seed, thermostat):
    """Mean heat, net force and kinetic temperatures of one run after its first picosecond
    (CSVR with CP2K's 50 fs, or the integrator's default Nose-Hoover chain)."""
    dynamics = Dynamics.from_run(run, ps, mode=model.mode, thermostat=thermostat, seed=seed,
                                 collision_time_ps=0.05 if thermostat == "csvr" else None)
    res = simulate(model, StartFrame.of_run(run, system, velocities=False), dynamics, out_dir,
                   reporting=Reporting(progress=False))
    log = read_state_log(RunFolder(out_dir).log)
    keep = log["time_ps"] >= log["time_ps"][0] + 1.0
    return {"heat_per_ps": res.heat_per_ps, "net_force": res.mean_net_force,
            **{f"T_{k}": float(np.mean(log[f"T_{k}_K"][keep])) for k in KINDS}}


def plot(rows, path):
    names = [n for n in rows if rows[n]["mu"]]  # the penalised fits (log axis: not 0, not infinity)
    mu = np.array([rows[n]["mu"] for n in names])
    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    for key, label in (("rmse_O", "O"), ("rmse_H", "H")):
        axes[0].semilogx(mu, [rows[n][key] for n in names], "o-", label=f"{label} (free: {rows['free'][key]:.1f})")
    axes[0].set_ylabel("held-out force RMSE (kJ/mol/nm)")
    axes[1].loglog(mu, [max(rows[n]["net_force_held_out"], 1e-3) for n in names], "o-", label="held-out frames")
    axes[1].loglog(
        mu, [max(abs(rows[n]["heat_per_ps"]), 1e-3) for n in names], "s-", label="|heat| in dynamics (kJ/mol/ps)"
    )
    axes[1].set_ylabel("net force (kJ/mol/nm) / heat")
    for k in KINDS:
        axes[2].semilogx(mu, [rows[n][f"T_{k}"] for n in names], "o-", label=k)
    axes[2].axhline(300.0, color="k", lw=0.5)
    axes[2].set_ylabel("kinetic temperature (K)")
    for ax in axes:
        ax.set_xlabel("asymmetry penalty mu")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=None, help="CP2K run folder (default: the bundled xTB water)")
    ap.add_argument("--ps", type=float, default=5.0, help="learning dynamics per run after 2 ps of Langevin")
    ap.add_argument("--seeds", type=int, default=3, help="independent runs per model (seeds 1..N)")
    ap.add_argument("--charges", action="store_true", help="fit point charges with every variant")
    ap.add_argument("--mus", type=float, nargs="+", default=list(MUS[1:]), help="penalty strengths to run")
    ap.add_argument("--thermostat", choices=["csvr", "nose-hoover"], default="csvr")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    run, system = load_water_run(args.run or example_run_dir())
    variants, cv = fit_variants(run, system, FitSettings(charges=args.charges, agent_asymmetry="free"), args.mus)
    rows = {}
    for name, (model, numbers) in variants.items():
        model.save(out / "models" / f"{name}.json")
        runs = [dynamics(model, run, system, out / "dynamics" / name / f"seed-{k}", args.ps, k, args.thermostat)
                for k in range(1, args.seeds + 1)]
        for key in runs[0]:
            values = np.array([r[key] for r in runs])
            numbers[key] = float(values.mean())
            numbers[f"{key}_sem"] = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
        rows[name] = numbers
        print(name, {k: (v if k == "mu" or v is None else round(v, 1)) for k, v in numbers.items()}, flush=True)
        # after every variant, so an interrupted study keeps what it measured
        (out / "asymmetry.json").write_text(json.dumps({"cv": cv, "rows": rows, "ps": args.ps, "seeds": args.seeds,
                                                        "charges": args.charges, "thermostat": args.thermostat},
                                                       indent=1))
    plot(rows, out / "asymmetry.png")
    print(f"mu picked by force cross-validation (one-standard-error rule): {cv['mu_cv']:g}")


if __name__ == "__main__":
    main()
