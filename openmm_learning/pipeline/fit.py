"""The fit step: a CP2K run's frames in, the agent losses of both modes out (MODE.json,
parity and channel plots), with the learning curve and what drives each agent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..io import Cp2kRun
from ..io.atomic import write_json_atomic
from ..io.topology import WaterSystem
from ..io.water_run import equipartition_line, load_water_run
from ..losses.fit import FitSettings, fit_modes, learning_curve, training_provenance
from ..validation.agents import channel_sensitivity, held_out_errors
from ..validation.plots import channel_plot, learning_curve_plot, parity_plot, sensitivity_plot
from .stages import loaded_model, say, stage_done, step_mask, write_stamp


def say_replica(run, progress=True):
    """One line when a small box runs as its periodic replica."""
    if run.replica > 1 and progress:
        n = run.replica
        print(f"{run.project}: box {run.box_nm[0][0] / n:.4f} nm is under twice the cutoff: using its "
              f"{n}x{n}x{n} periodic replica ({len(run.elements) // 3} molecules)", file=sys.stderr)


def fit_run(run_dir, out_dir, modes=("agent", "reciprocal"), settings: FitSettings | None = None,
            allow_truncated=False, progress=True, committee=False) -> dict:
    """Fit the agent losses of a CP2K run (`openmm-learning fit`) on all its frames; write
    MODE.json, parity.png, channels.png, fit.json, and with committee the models refitted
    without each CV block, committee/MODE-k.json."""
    settings = settings or FitSettings()
    run, water = load_water_run(run_dir, allow_truncated, r_cut=settings.r_cut)
    say_replica(run, progress)
    if run.forces is None:
        raise FileNotFoundError(f"{run_dir}: the run has no forces file (*-frc-*.xyz); force matching needs one")
    return fit_frames(run, water, np.arange(run.n_frames), Path(out_dir), modes, settings, progress, committee)


def fit_frames(run: Cp2kRun, water: WaterSystem, idx, out: Path, modes, settings: FitSettings, progress=True,
               committee=False) -> dict:
    """Fit the modes on frames idx of the run (saying in one line when they are out of
    equipartition) and write their files into out; returns fit_modes' results."""
    provenance = training_provenance(run, idx)
    line = equipartition_line(run, provenance["training_kinetic_K"])
    if line and progress:
        print(line, file=sys.stderr)
    results = fit_modes(run.positions[idx], run.forces[idx], run.box_nm[idx], water, modes, settings, provenance,
                        progress, committee)
    out.mkdir(parents=True, exist_ok=True)
    for mode, res in results.items():
        res.model.save(out / f"{mode}.json")
        for k, member in enumerate(res.committee):
            member.save(out / "committee" / f"{mode}-{k}.json")
    parity_plot(results, water.species, out / "parity.png")
    channel_plot({m: r.model for m, r in results.items()}, out / "channels.png")
    write_json_atomic(out / "fit.json", {m: r.model.fit_metrics["held_out"] for m, r in results.items()})
    return results


def fit_stage(run: Cp2kRun, water: WaterSystem, out: Path, train_steps=None,
              settings: FitSettings | None = None, progress=True) -> dict:
    """Fit both modes on the training steps; fit/{agent,reciprocal}.json and plots (cached)."""
    settings = settings or FitSettings()
    mask = step_mask(run.steps, train_steps, settings.frame_stride)
    stamp = {"project": run.project, "n_frames": run.n_frames, "train_steps": list(train_steps or (None, None)),
             "train_frames": int(mask.sum()), "settings": repr(settings)}
    paths = {m: out / f"{m}.json" for m in ("agent", "reciprocal")}
    if stage_done(out, stamp, *[p.name for p in paths.values()]):
        say(progress, f"fit: cached in {out}")
        return paths
    if run.forces is None:
        raise ValueError(f"CP2K run {run.project}: no forces file; fitting needs one (or give --model)")
    idx = np.flatnonzero(mask)
    say(progress, f"fit: {len(idx)} frames, steps {run.steps[idx[0]]}-{run.steps[idx[-1]]}")
    fit_frames(run, water, idx, out, tuple(paths), settings, progress)
    write_stamp(out, stamp)
    return paths


def learning_curve_stage(run: Cp2kRun, system: WaterSystem, out: Path, train_steps=None, sizes=5,
                         settings: FitSettings | None = None, progress=True) -> dict:
    """fit.learning_curve on the training steps; learning_curve.json and .png (cached)."""
    mask = step_mask(run.steps, train_steps, (settings or FitSettings()).frame_stride)
    stamp = {"project": run.project, "train_steps": list(train_steps or (None, None)),
             "train_frames": int(mask.sum()), "sizes": sizes if np.isscalar(sizes) else list(sizes),
             "settings": repr(settings or FitSettings())}
    if stage_done(out, stamp, "learning_curve.json", "learning_curve.png"):
        say(progress, f"learning curve: cached in {out}")
        return json.loads((out / "learning_curve.json").read_text())
    idx = np.flatnonzero(mask)
    lc = learning_curve(run.positions[idx], run.forces[idx], run.box_nm[idx], system, sizes,
                        settings=settings, progress=progress)
    lc["test_steps"] = [int(run.steps[idx[lc["test_frames"][0]]]), int(run.steps[idx[lc["test_frames"][1]]])]
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "learning_curve.json", lc)
    learning_curve_plot(lc, out / "learning_curve.png")
    write_stamp(out, stamp)
    return lc


def agents_stage(models: dict, run: Cp2kRun, system: WaterSystem, out: Path, n_frames=20,
                 progress=True) -> dict:
    """Sensitivity table and plot of every learned model, and held-out errors (cached)."""
    stamp = {"models": {n: loaded_model(p)[1] for n, p in models.items()}, "project": run.project,
             "n_frames": n_frames, "reference_frames": run.n_frames}
    if stage_done(out, stamp, "agents.json", "sensitivity.png"):
        say(progress, f"agents: cached in {out}")
        return json.loads((out / "agents.json").read_text())
    if not models:
        return {}
    idx = np.unique(np.round(np.linspace(0, run.n_frames - 1, min(n_frames, run.n_frames))).astype(int))
    result = {}
    for name, path in tqdm(models.items(), desc="agent sensitivity", unit="model", disable=not progress):
        model = loaded_model(path)[0]
        result[name] = {"mode": model.mode, "file": Path(path).name,
                        "fit_held_out": (model.fit_metrics or {}).get("held_out"),
                        "n_train_frames": (model.fit_metrics or {}).get("n_train_frames"),
                        "train_steps": (model.provenance or {}).get("steps"),
                        "sensitivity": channel_sensitivity(model, run.positions[idx], run.box_nm[idx], system),
                        "held_out_segment": held_out_errors(model, run, system)}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "agents.json", result)
    sensitivity_plot(result, out / "sensitivity.png")
    write_stamp(out, stamp)
    return result
