"""What drives a learned model's agents: each invariant channel's share of the force, and
the model's force errors on reference frames it was not fitted on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..io import Cp2kRun
from ..io.topology import SPECIES, WaterSystem
from ..losses.channels import CHANNEL_KEYS
from ..losses.fit import force_errors
from ..losses.model import LossModel


def channel_sensitivity(model: LossModel, positions, boxes, system: WaterSystem) -> dict:
    """How strongly each invariant channel drives the agent forces, per agent species.

    The forces are linear in the spline values, so a channel's contribution is the force
    of the model with every other channel's values set to zero, minus the walls-only
    force (all values zero; the walls are fixed, not fitted, and reported apart). For
    agent species a: RMS over frames, atoms of a and components of each channel's
    contribution (kJ/mol/nm) and that RMS over the RMS of a's total agent force.
    """
    def with_values(keep):
        chans = [replace(c, values=c.values if k in keep else np.zeros_like(c.values))
                 for k, c in enumerate(model.channels)]
        return LossModel(model.mode, chans, model.r_cut, model.r_switch, model.k_wall,
                         asymmetry_range=model.asymmetry_range)

    n_ch = len(model.channels)
    variants = {"all": with_values(range(n_ch)), "walls": with_values(())}
    variants.update({k: with_values((k,)) for k in range(n_ch)})
    # Groups: the own-molecule invariants are redundant (H-H follows from the two O-H and
    # the angle), so single channels can pull against each other; their sum cannot.
    groups = {"own": [k for k, c in enumerate(model.channels) if c.kind != "inter"],
              "other": [k for k, c in enumerate(model.channels) if c.kind == "inter"]}
    variants.update({g: with_values(ks) for g, ks in groups.items()})
    sq = {k: np.zeros(len(SPECIES)) for k in variants}
    counts = np.array([3 * np.sum(system.species == s) * len(positions) for s in range(len(SPECIES))], float)
    for x, box in zip(positions, boxes):
        f = {k: m.forces(x, box, system.species, system.molecules)[0] for k, m in variants.items()}
        for k in variants:
            contrib = f[k] if k in ("all", "walls") else f[k] - f["walls"]
            for s in range(len(SPECIES)):
                sq[k][s] += np.sum(contrib[system.species == s] ** 2)
    rms = {k: np.sqrt(v / counts) for k, v in sq.items()}
    with np.errstate(invalid="ignore", divide="ignore"):  # a species with no force at all: NaN
        rel = {k: v / rms["all"] for k, v in rms.items()}
    out = {"mode": model.mode, "n_frames": int(len(positions)), "agents": {}}
    for s, name in enumerate(SPECIES):
        total = float(rms["all"][s])
        rows = [{"channel": model.channels[k].name, "invariant": _invariant(model.channels[k]),
                 "rms": float(rms[k][s]), "relative": float(rel[k][s])}
                for k, (agent, _, _) in enumerate(CHANNEL_KEYS) if agent == name]
        out["agents"][name] = {"total_rms": total, "walls_rms": float(rms["walls"][s]), "channels": rows,
                               "own_molecule_relative": float(rel["own"][s]),
                               "other_molecules_relative": float(rel["other"][s])}
    return out


def _invariant(ch) -> str:
    if ch.kind == "angle":
        return "H-O-H angle, own molecule"
    return f"{ch.agent}-{ch.neighbour} distance, {'other molecules' if ch.kind == 'inter' else 'own molecule'}"


def held_out_errors(model: LossModel, run: Cp2kRun, system: WaterSystem, max_frames=100) -> dict | None:
    """Force RMSE of a model on the reference frames it was not fitted on (a second segment).

    Frames of the same CP2K project inside the model's training steps are excluded;
    a model fitted on another run is scored on every frame. None when nothing is left.
    """
    if run.forces is None:
        return None
    prov = model.provenance or {}
    mask = np.ones(run.n_frames, bool)
    if prov.get("cp2k_project") == run.project and prov.get("steps"):
        a, b = prov["steps"]
        # A gap of 25 steps (CP2K's frames are correlated over ~10 fs) on both sides.
        mask = (run.steps < a - 25) | (run.steps > b + 25)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return None
    idx = idx[np.unique(np.round(np.linspace(0, len(idx) - 1, min(max_frames, len(idx)))).astype(int))]
    pred = np.stack([model.forces(run.positions[f], run.box_nm[f], system.species, system.molecules)[0]
                     for f in idx])
    errs = force_errors(run.forces[idx], pred, system.species)
    return {"n_frames": int(len(idx)), "steps": [int(run.steps[idx[0]]), int(run.steps[idx[-1]])], **errs}
