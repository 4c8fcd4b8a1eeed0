"""Inference of the agent losses by force matching.

The first-order loss family is linear in the spline values, so fitting is linear least
squares: forces = D @ y + F_walls. Normal equations are accumulated frame by frame
(numba builds each frame's design matrix) in contiguous time blocks, so the ridge
strength can be cross-validated on a time split without storing the design matrix.

Agent mode solves one problem per species (rows of O atoms for the O channels, rows
of H atoms for the H channels). Reciprocal mode solves one joint problem over all
rows with the tied channels sharing parameters.

With charges, the Ewald forces of unit water charges (losses.ewald) are one more design
column, shared by every row; its coefficient is q_H^2. Agent mode then solves both
species at once (solve_coupled), since the charge belongs to both agents.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..io.topology import SPECIES, WaterSystem
from . import ewald, kernels
from .channels import CHANNEL_KEYS, RECIPROCAL_TIES, Channel, ChebyshevChannel, channel_name, natural_spline_matrix
from .model import (ASYMMETRY_RANGE_NM, ASYMMETRY_SWITCH_NM, LossModel, angle_channel_table, asymmetry_range_fits,
                    pair_channel_table)


BASES = ("spline", "chebyshev")


@dataclass
class FitSettings:
    """Basis, cutoff and regularisation of a fit (nm, rad, kJ/mol)."""

    #: pairs switched off from r_switch to r_cut: beyond 0.5 nm the point charges (PME) hold
    #: what the pairs fitted; a 0.6 nm cutoff gives engines 1.7x the pairs to visit for a
    #: held-out error smaller by 0.02 % of the force (benchmarks/README.md)
    r_cut: float = 0.5
    r_switch: float = 0.4
    h_inter: float = 0.01
    h_intra: float = 0.002
    h_angle: float = 0.03
    margin_inter: float = 0.01
    margin_intra: float = 0.01
    margin_angle: float = 0.15
    k_wall: float = 1.0e5
    lambdas: tuple = tuple(10.0 ** np.arange(-9.0, 1.01, 1.0))
    cv_folds: int = 5
    test_fraction: float = 0.2
    gap_frames: int = 5
    #: agent mode's asymmetry between the O and H views of each pair: "penalty" (mu *
    #: ||f_ab - f_ba||^2), "free" (two separate fits, the paper's) or "shared-molecule" (the
    #: own-molecule views shared: momentum kept within a molecule)
    agent_asymmetry: str = "penalty"
    #: penalty strength: a number, or "cv" for the largest mu within one standard error of
    #: the best cross-validation error (which sees forces only, not dynamics). 1: over 20 ps
    #: runs it pumps no heat and keeps every kind of motion within 5 K of the target, at the
    #: reciprocal model's held-out error (0.1 left the vibration 20 K cold; validation/README.md)
    asymmetry_mu: float | str = 1.0
    #: fit point charges (q_O = -2 q_H, Ewald sum over the box) with the splines
    charges: bool = True
    #: the functions of the model file: "chebyshev" (the fitted splines compiled to
    #: Chebyshev series, which OpenMM evaluates as vectorised expressions, 2-3x faster than
    #: table lookups; chebyshev_model), of pair_degree for intermolecular pairs and
    #: own_degree for the bonds and the angle, or "spline" (the fitted tables themselves)
    basis: str = "chebyshev"
    #: fit on every n-th frame of the training steps (the validation suite): CP2K frames a
    #: few fs apart nearly repeat each other, so n = 2 halves the cost and keeps the error
    frame_stride: int = 1
    #: each degree is a multiply-add per pair; 10 holds the held-out error of 16 at the 0.5 nm
    #: cutoff with point charges, and fit_modes raises it where it does not (COMPILE_ADDED_PERCENT)
    pair_degree: int = 10
    own_degree: int = 16
    #: agent mode: the range (nm) of the asymmetry between the O and H views of a pair
    #: (LossModel.asymmetry_range), beyond which both views are their mean; None: the
    #: whole cutoff (the paper's). Fitted over the whole cutoff at mu = 1, the remainder's
    #: pair force beyond 0.35 nm is at most 0.5 kJ/mol/nm (held-out force error ~105), and
    #: engines evaluate it on the pairs within r_a only: a cheaper agent step
    #: (benchmarks/README.md); `make example`'s agent row runs with it (README results)
    asymmetry_range: float | None = ASYMMETRY_RANGE_NM

    def __post_init__(self):
        if self.agent_asymmetry not in AGENT_ASYMMETRIES:
            raise ValueError(f"agent_asymmetry {self.agent_asymmetry!r}: use one of {AGENT_ASYMMETRIES}")
        if self.basis not in BASES:
            raise ValueError(f"basis {self.basis!r}: use one of {BASES}")
        if min(self.pair_degree, self.own_degree) < 3:
            raise ValueError("polynomial degrees must be at least 3")
        r_a = self.asymmetry_range
        if r_a is not None and not asymmetry_range_fits(r_a, self.r_switch):
            raise ValueError(f"asymmetry_range {r_a} nm: give one above {ASYMMETRY_SWITCH_NM} nm and at most "
                             f"r_switch = {self.r_switch} nm, or None (fit --asymmetry-range 0) for the whole cutoff")


@dataclass
class NormalEquations:
    """Sums over the frames of one time block, per agent species (rows O / rows H)."""

    AtA: np.ndarray  # (2, P, P)
    Atb: np.ndarray  # (2, P)
    btb: np.ndarray  # (2,)
    n_rows: np.ndarray  # (2,)

    def __add__(self, other):
        return NormalEquations(self.AtA + other.AtA, self.Atb + other.Atb,
                               self.btb + other.btb, self.n_rows + other.n_rows)


@dataclass
class FitResult:
    model: LossModel
    lambda_: dict
    cv_error: dict
    test_frames: np.ndarray
    test_reference: np.ndarray = field(repr=False)  # (n_test, n_atoms, 3)
    test_predicted: np.ndarray = field(repr=False)
    #: the mode refitted without each cross-validation block (fit_modes(committee=True))
    committee: list = field(default_factory=list, repr=False)


def _grid(lo, hi, h):
    x0 = np.floor(lo / h) * h
    n = int(np.ceil((hi - x0) / h - 1e-9)) + 1
    return x0, max(n, 4)


def seen_ranges(positions, boxes, system: WaterSystem, r_cut: float):
    """Smallest and largest invariant of every channel (CHANNEL_KEYS order) over the
    frames; the two views of a tied invariant share theirs."""
    lo, hi = kernels.invariant_ranges(positions, boxes, system.species, system.molecules,
                                      system.molecule_id, r_cut, pair_channel_table(),
                                      angle_channel_table(), len(CHANNEL_KEYS))
    for a, b in RECIPROCAL_TIES:
        ia, ib = CHANNEL_KEYS.index(a), CHANNEL_KEYS.index(b)
        lo[ia] = lo[ib] = min(lo[ia], lo[ib])
        hi[ia] = hi[ib] = max(hi[ia], hi[ib])
    return lo, hi


def build_channels(positions, boxes, system: WaterSystem, settings: FitSettings, ranges=None) -> list[Channel]:
    """Grids covering the invariants seen in the data (plus margins); values zero.

    Tied channels (seen from both ends) share one grid, so either mode can use it.
    Intermolecular grids end exactly at r_cut. ranges: seen_ranges of the frames, when known.
    """
    lo, hi = ranges if ranges is not None else seen_ranges(positions, boxes, system, settings.r_cut)
    channels = []
    for c, (agent, neighbour, kind) in enumerate(CHANNEL_KEYS):
        if not np.isfinite(lo[c]):
            raise ValueError(f"no {agent}-{neighbour} {kind} invariants in the data: "
                             "is the cutoff too short or the box not water?")
        if kind == "inter":
            h = settings.h_inter
            n = int(round((settings.r_cut - max(lo[c] - settings.margin_inter, 0.05)) / h)) + 1
            x0 = settings.r_cut - (n - 1) * h
        elif kind == "intra":
            h = settings.h_intra
            x0, n = _grid(lo[c] - settings.margin_intra, hi[c] + settings.margin_intra, h)
        else:
            h = settings.h_angle
            x0, n = _grid(max(lo[c] - settings.margin_angle, 0.0),
                          min(hi[c] + settings.margin_angle, np.pi), h)
        channels.append(Channel(agent, neighbour, kind, float(x0), float(h), np.zeros(n)))
    return channels


def _packed(channels, settings):
    model = LossModel("agent", channels, settings.r_cut, settings.r_switch, settings.k_wall)
    return model.packed()


def accumulate(positions, forces, boxes, system: WaterSystem, channels, settings: FitSettings,
               block_of_frame, n_blocks, progress=True, extra_columns=None) -> list[NormalEquations]:
    """Normal equations per time block (frames with block < 0 are skipped).

    Columns: the spline values of the channels, then the shared parameters: q_H^2 with
    charges, then extra_columns(positions, box) -> (3 n_atoms, k) if given (a term under
    study, fitted jointly with the rest; every problem of every mode shares them).
    """
    p = _packed(channels, settings)
    P = int(p["ch_n"].sum())
    n_par = P + int(settings.charges)
    if extra_columns is not None:
        n_par += extra_columns(positions[0], boxes[0]).shape[1]
    Mbig = np.zeros((P, P))
    for c, ch in enumerate(channels):
        o = p["ch_off"][c]
        Mbig[o:o + ch.n, o:o + ch.n] = natural_spline_matrix(ch.n, ch.h)
    rows = [np.flatnonzero(np.repeat(system.species == s, 3)) for s in range(len(SPECIES))]
    blocks = [NormalEquations(np.zeros((2, n_par, n_par)), np.zeros((2, n_par)), np.zeros(2), np.zeros(2, int))
              for _ in range(n_blocks)]
    mol_id = system.molecule_id
    frames = np.flatnonzero(block_of_frame >= 0)
    for f in tqdm(frames, desc="design matrix", unit="frame", disable=not progress):
        D_exp, ffix = kernels.design_frame(
            np.ascontiguousarray(positions[f]), boxes[f], system.species, system.molecules, mol_id,
            p["pair_channel"], p["angle_channel"], p["ch_kind"], p["ch_x0"], p["ch_h"],
            p["ch_n"], p["ch_off"], P, settings.k_wall, settings.r_switch, settings.r_cut)
        D = D_exp[:, :P] + D_exp[:, P:] @ Mbig
        if settings.charges:
            unit, _ = ewald.unit_charge_forces(positions[f], boxes[f], system.species, system.molecules,
                                               mol_id, settings.r_cut)
            D = np.hstack([D, unit.reshape(-1, 1)])
        if extra_columns is not None:
            D = np.hstack([D, extra_columns(positions[f], boxes[f])])
        b = forces[f].reshape(-1) - ffix
        ne = blocks[block_of_frame[f]]
        for s in range(len(SPECIES)):
            Ds, bs = D[rows[s]], b[rows[s]]
            ne.AtA[s] += Ds.T @ Ds
            ne.Atb[s] += Ds.T @ bs
            ne.btb[s] += bs @ bs
            ne.n_rows[s] += len(bs)
    return blocks


def parameter_map(channels, mode, tied_keys=None, n_shared=0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per problem: the tie matrix T (P x p) from free parameters to spline values, and the
    n_shared parameters after the splines (q_H^2, terms under study) in every problem.

    Agent mode has two problems (O rows, H rows), reciprocal mode one with every tie of
    RECIPROCAL_TIES. mode "coupled" is one problem over both species' rows that ties only
    the pairs in tied_keys (the coupled agent fits: the O and H views of the other pairs
    stay free, and may be drawn together by the asymmetry penalty). The last node of
    every intramolecular and angle channel is pinned to zero: it fixes the energy zero,
    which forces cannot see.
    """
    sizes = [c.n for c in channels]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    P = int(sum(sizes)) + n_shared
    free = {}
    for c, ch in enumerate(channels):
        idx = list(range(offsets[c], offsets[c] + ch.n))
        if ch.kind != "inter":
            idx = idx[:-1]
        free[c] = idx
    ties = RECIPROCAL_TIES if mode == "reciprocal" else [t for t in RECIPROCAL_TIES if t in (tied_keys or ())]
    tied = {CHANNEL_KEYS.index(b): CHANNEL_KEYS.index(a) for a, b in ties}

    def tie_matrix(channel_ids):
        cols, col = {}, 0
        T_rows, T_cols = [], []
        for c in channel_ids:
            owner = tied.get(c, c)
            if owner not in cols:
                cols[owner] = col
                col += len(free[owner])
            for k, row in enumerate(free[c]):
                T_rows.append(row)
                T_cols.append(cols[owner] + k)
        for k in range(n_shared):
            T_rows.append(P - n_shared + k)
            T_cols.append(col)
            col += 1
        T = np.zeros((P, col))
        T[T_rows, T_cols] = 1.0
        return T

    if mode == "agent":
        groups = [[c for c, key in enumerate(CHANNEL_KEYS) if key[0] == s] for s in SPECIES]
        return [tie_matrix(g) for g in groups], [np.array([s]) for s in range(len(SPECIES))]
    return [tie_matrix(range(len(CHANNEL_KEYS)))], [np.arange(len(SPECIES))]


def _penalty(channels, T, AtA, weights=None):
    """Second-difference (smoothness) penalty, scaled per channel to the data's strength
    (and by weights[c], e.g. each agent's own ridge strength in a coupled fit)."""
    P = T.shape[0]
    R = np.zeros((P, P))
    o = 0
    for c, ch in enumerate(channels):
        D2 = np.diff(np.eye(ch.n), 2, axis=0)
        blk = D2.T @ D2
        data = np.trace(AtA[o:o + ch.n, o:o + ch.n])
        R[o:o + ch.n, o:o + ch.n] = blk * (data / np.trace(blk) if data > 0 else 1.0) * (
            1.0 if weights is None else weights[c])
        o += ch.n
    Rt = T.T @ R @ T
    return Rt + 1e-12 * np.trace(Rt) / len(Rt) * np.eye(len(Rt))


def asymmetry_penalty(channels, AtA, pairs=RECIPROCAL_TIES):
    """Q with y'Qy = sum over the pairs of ||f_ab - f_ba||^2 (spline values of the O and H
    agents' views of one invariant), each scaled to the data's strength on those channels,
    so that the asymmetry strength mu is dimensionless."""
    offsets = np.concatenate([[0], np.cumsum([c.n for c in channels])[:-1]])
    P = AtA.shape[0]
    Q = np.zeros((P, P))
    for a, b in pairs:
        ia, ib = CHANNEL_KEYS.index(a), CHANNEL_KEYS.index(b)
        n, oa, ob = channels[ia].n, offsets[ia], offsets[ib]
        E = np.zeros((n, P))
        E[:, oa:oa + n] = np.eye(n)
        E[:, ob:ob + n] -= np.eye(n)
        blk = E.T @ E
        data = np.trace(AtA[oa:oa + n, oa:oa + n]) + np.trace(AtA[ob:ob + n, ob:ob + n])
        Q += blk * (data / np.trace(blk))
    return Q


def _reduce(ne: NormalEquations, T, species_rows):
    AtA = sum(ne.AtA[s] for s in species_rows)
    Atb = sum(ne.Atb[s] for s in species_rows)
    btb = sum(ne.btb[s] for s in species_rows)
    return T.T @ AtA @ T, T.T @ Atb, btb, AtA


def solve_cv(blocks: list[NormalEquations], channels, mode, settings: FitSettings):
    """Pick the ridge strength by blocked cross-validation, then solve on all blocks.

    Returns the spline values (P,), and per problem the chosen lambda and the CV errors.
    With shared parameters (charges) in agent mode each species' problem fits its own here
    (their mean is returned); solve_mode shares one set between the agents.
    """
    n_shared = _n_shared(blocks, channels)
    Ts, species_sets = parameter_map(channels, mode, n_shared=n_shared)
    total = sum(blocks[1:], blocks[0])
    y = np.zeros(Ts[0].shape[0])
    chosen, cv = {}, {}
    for T, sp in zip(Ts, species_sets):
        name = "+".join(SPECIES[s] for s in sp)
        A_all, b_all, _, AtA_full = _reduce(total, T, sp)
        R = _penalty(channels, T, AtA_full)
        reduced = [_reduce(ne, T, sp) for ne in blocks]
        errors = []
        for lam in settings.lambdas:
            sse = 0.0
            for k, (Ak, bk, ck, _) in enumerate(reduced):
                x = np.linalg.solve(A_all - Ak + lam * R, b_all - bk)
                sse += ck - 2 * x @ bk + x @ Ak @ x
            errors.append(sse)
        best = int(np.argmin(errors))
        lam = settings.lambdas[best]
        x = np.linalg.solve(A_all + lam * R, b_all)
        y += T @ x
        chosen[name] = float(lam)
        n_rows = sum(total.n_rows[s] for s in sp)
        cv[name] = {f"{lam:.0e}": float(np.sqrt(max(e, 0) / n_rows)) for lam, e in zip(settings.lambdas, errors)}
    if n_shared:
        y[len(y) - n_shared:] /= len(Ts)
    return y, chosen, cv


def _n_shared(blocks, channels) -> int:
    """How many shared parameters follow the spline values in the normal equations."""
    return blocks[0].Atb.shape[1] - sum(c.n for c in channels)


AGENT_ASYMMETRIES = ("free", "shared-molecule", "penalty")
#: strengths of the asymmetry penalty tried by cross-validation (0: free agents)
MUS = (0.0,) + tuple(10.0 ** np.arange(-4.0, 4.01, 1.0))
#: the own-molecule pairs of views (the O-H bond seen from O and from H, the angle)
OWN_MOLECULE_TIES = tuple(t for t in RECIPROCAL_TIES if t[0][2] != "inter")


def solve_coupled(blocks: list[NormalEquations], channels, settings: FitSettings, lambdas: dict,
                  mus=MUS, tied_keys=()):
    """Agent fit of both species at once with an asymmetry penalty mu * ||f_ab - f_ba||^2 on
    the O and H views of each pair not tied exactly (tied_keys are shared outright).

    Each agent keeps its own ridge strength (lambdas, from the free agent fit). mu is
    chosen by the blocked cross-validation with the one-standard-error rule: the largest
    mu (the least asymmetric model) whose CV error is within one standard error of the
    best. Returns the spline values, the chosen mu and the CV curve {mu: (rmse, se)}.
    """
    (T,), (sp,) = parameter_map(channels, "coupled", tied_keys, _n_shared(blocks, channels))
    total = sum(blocks[1:], blocks[0])
    A_all, b_all, _, AtA_full = _reduce(total, T, sp)
    weights = [lambdas[ch.agent] for ch in channels]
    R = _penalty(channels, T, AtA_full, weights)
    pairs = [t for t in RECIPROCAL_TIES if t not in tied_keys]
    Q = T.T @ asymmetry_penalty(channels, AtA_full, pairs) @ T
    reduced = [_reduce(ne, T, sp) for ne in blocks]
    n_rows = sum(total.n_rows[s] for s in sp)
    curve = {}
    for mu in mus:
        per_fold = []
        for Ak, bk, ck, _ in reduced:
            x = np.linalg.solve(A_all - Ak + R + mu * Q, b_all - bk)
            per_fold.append(ck - 2 * x @ bk + x @ Ak @ x)
        per_fold = np.maximum(per_fold, 0.0)
        k = len(per_fold)
        # the CV error and its standard error over the folds (each fold's share of the rows)
        fold_rmse = np.sqrt(per_fold * k / n_rows)
        curve[float(mu)] = (float(np.sqrt(per_fold.sum() / n_rows)), float(np.std(fold_rmse, ddof=1) / np.sqrt(k)))
    best = min(curve, key=lambda m: curve[m][0])
    limit = curve[best][0] + curve[best][1]
    mu = max(m for m, (e, _) in curve.items() if e <= limit)
    x = np.linalg.solve(A_all + R + mu * Q, b_all)
    return T @ x, mu, curve


def time_split(n_frames, settings: FitSettings):
    """Block index per frame: CV blocks over the first part, -1 for the gap and the test."""
    n_test = max(1, int(round(n_frames * settings.test_fraction)))
    n_train = n_frames - n_test - settings.gap_frames
    if n_train < settings.cv_folds:
        raise ValueError(f"{n_frames} frames are too few to fit with a {settings.cv_folds}-fold time split")
    block = -np.ones(n_frames, np.int64)
    block[:n_train] = np.arange(n_train) * settings.cv_folds // n_train
    test = np.arange(n_frames - n_test, n_frames)
    return block, test


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def training_provenance(run, frames) -> dict:
    """What a model was fitted on, for its file: the CP2K run (project, files with their
    SHA-256, method, target temperature, replica), the steps and number of frames, and
    the mean kinetic temperature of every kind of motion over those frames (None without
    velocities): a training run out of equipartition shows there."""
    from ..io.water_run import kinetic_means

    frames = np.asarray(frames)
    kinetic = kinetic_means(run, frames)
    return {"cp2k_project": run.project, "cp2k_files": file_hashes(run.files),
            "cp2k_method": run.settings.method if run.settings else None,
            "steps": [int(run.steps[frames[0]]), int(run.steps[frames[-1]])], "n_frames": int(len(frames)),
            "temperature_K": run.settings.temperature_k if run.settings else None, "replica": run.replica,
            "training_kinetic_K": kinetic}


def file_hashes(files: dict) -> dict:
    """{role: {file name, SHA-256}} of a run's files, for a model's provenance."""
    return {role: {"file": Path(path).name, "sha256": sha256_of(path)} for role, path in files.items()}


def fit_modes(positions, forces, boxes, system: WaterSystem, modes=("agent", "reciprocal"),
              settings: FitSettings | None = None, provenance=None, progress=True,
              committee: bool = False) -> dict:
    """Fit the requested modes on one set of frames; returns {mode: FitResult}.

    positions (n_frames, n_atoms, 3) nm, forces kJ/mol/nm, boxes (n_frames, 3) nm.
    The last `test_fraction` of the frames (after a gap) is held out for the metrics.
    committee: also fit each mode once without each cross-validation block (FitResult.committee,
    cv_folds models): the spread of their forces on a frame is the model's uncertainty
    there (DP-GEN's model deviation), nearly free because the fit is linear.
    """
    settings = settings or FitSettings()
    positions = np.ascontiguousarray(positions, dtype=float)
    boxes = np.ascontiguousarray(boxes, dtype=float)
    block, test = time_split(len(positions), settings)
    train = block >= 0
    lo, hi = seen_ranges(positions[train], boxes[train], system, settings.r_cut)
    channels = build_channels(positions[train], boxes[train], system, settings, (lo, hi))
    seen = {channel_name(k): [float(a), float(b)] for k, a, b in zip(CHANNEL_KEYS, lo, hi)}
    t0 = time.perf_counter()
    blocks = accumulate(positions, forces, boxes, system, channels, settings, block,
                        settings.cv_folds, progress)
    t_design = time.perf_counter() - t0
    results = {}
    for mode in modes:
        y, chosen, cv, asymmetry = solve_mode(blocks, channels, mode, settings)
        model = _model_of(y, channels, mode, settings)
        pred = _predictions(model, positions, boxes, system, test)
        metrics = force_errors(forces[test], pred, system.species)
        spline_metrics, degree = None, settings.pair_degree
        if settings.basis == "chebyshev":
            # the lowest pair degree from settings.pair_degree up that keeps the splines'
            # held-out error (a fit without charges needs more: its pairs hold the Coulomb tail)
            spline_metrics, splines = metrics, model
            while True:
                model = chebyshev_model(splines, positions[train], boxes[train], system, degree, settings.own_degree)
                pred = _predictions(model, positions, boxes, system, test)
                metrics = force_errors(forces[test], pred, system.species)
                added = compiled_added_percent(metrics, spline_metrics)
                if added <= COMPILE_ADDED_PERCENT or degree >= MAX_PAIR_DEGREE:
                    break
                degree = min(degree + 2, MAX_PAIR_DEGREE)
        compile_ = lambda m: chebyshev_model(m, positions[train], boxes[train], system,  # noqa: E731
                                             degree, settings.own_degree)
        members = []
        for k in range(len(blocks) if committee else 0):
            member = _model_of(solve_mode(blocks[:k] + blocks[k + 1:], channels, mode, settings)[0],
                               channels, mode, settings)
            members.append(compile_(member) if settings.basis == "chebyshev" else member)
        model.provenance = dict(provenance or {})
        model.fit_metrics = {
            "held_out": metrics,
            "lambda": chosen,
            "cv_rmse_by_lambda": cv,
            "n_train_frames": int(train.sum()),
            "n_test_frames": int(len(test)),
            "test_frames": [int(test[0]), int(test[-1])],
            "design_seconds": round(t_design, 2),
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
        }
        if settings.basis == "chebyshev":
            model.fit_metrics["pair_degree"] = degree
        if asymmetry:
            model.fit_metrics["asymmetry"] = asymmetry
        if spline_metrics:
            model.fit_metrics["held_out_of_fitted_splines"] = spline_metrics
        model.seen = seen
        for k, member in enumerate(members):
            member.seen = seen
            member.provenance = dict(model.provenance, committee_member=k, left_out_block=k)
            member.fit_metrics = {"left_out_block": k, "settings": model.fit_metrics["settings"]}
        results[mode] = FitResult(model, chosen, cv, test, forces[test], pred, members)
    return results


def solve_mode(blocks, channels, mode, settings: FitSettings):
    """Parameters of one mode: ridge strengths by cross-validation, then in agent mode the
    asymmetry variant of the settings (and one shared charge). Returns (y, lambdas, CV
    errors, asymmetry record or None)."""
    y, chosen, cv = solve_cv(blocks, channels, mode, settings)
    if mode != "agent":
        return y, chosen, cv, None
    asymmetry = {"variant": settings.agent_asymmetry}
    if settings.agent_asymmetry != "free" or _n_shared(blocks, channels):
        penalty = settings.agent_asymmetry == "penalty"
        ties = OWN_MOLECULE_TIES if settings.agent_asymmetry == "shared-molecule" else ()
        y, mu, curve = solve_coupled(blocks, channels, settings, chosen, MUS if penalty else (0.0,), ties)
        asymmetry.update(mu=mu, cv_rmse_by_mu={f"{m:g}": e for m, e in curve.items()})
        if penalty and settings.asymmetry_mu != "cv":  # a set strength; the CV pick stays on record
            y, mu, fixed = solve_coupled(blocks, channels, settings, chosen, (settings.asymmetry_mu,), ties)
            asymmetry.update(mu=mu, mu_cross_validation=asymmetry["mu"], cv_rmse_at_mu=fixed[mu])
    return y, chosen, cv, asymmetry


def _model_of(y, channels, mode, settings) -> LossModel:
    """The model with spline values y on the fit's grids (and q_H^2 last, with charges)."""
    fitted, o = [], 0
    for ch in channels:
        fitted.append(Channel(ch.agent, ch.neighbour, ch.kind, ch.x0, ch.h, y[o:o + ch.n].copy()))
        o += ch.n
    charge_h = None
    if settings.charges:
        if y[o] <= 0:
            raise ValueError(f"the fitted charge coefficient q_H^2 = {y[o]:.3g} e^2 is not positive: these "
                             "forces do not look like those of point charges; fit without charges")
        charge_h = float(np.sqrt(y[o]))
    return LossModel(mode, fitted, settings.r_cut, settings.r_switch, settings.k_wall, charge_h=charge_h,
                     asymmetry_range=settings.asymmetry_range if mode == "agent" else None)


def _predictions(model: LossModel, positions, boxes, system: WaterSystem, frames) -> np.ndarray:
    """The model's forces on `frames` (n_frames, n_atoms, 3)."""
    return np.stack([model.forces(positions[f], boxes[f], system.species, system.molecules)[0] for f in frames])


#: bins of the invariants' histograms that weigh a compiled polynomial, and the weight
#: spread evenly over each range (so the function stays tame where the data are thin)
COMPILE_BINS = 400
COMPILE_FLOOR = 2e-4
#: what compiling may add to the splines' held-out force RMSE, in percent of the RMS
#: reference force (fit_modes raises the pair degree by 2 up to MAX_PAIR_DEGREE until it holds)
COMPILE_ADDED_PERCENT = 0.1
MAX_PAIR_DEGREE = 16


def compiled_added_percent(compiled: dict, splines: dict) -> float:
    """What a compiled model adds to its splines' held-out force RMSE (force_errors of
    each), in percent of the RMS reference force, the larger of the two species."""
    return max(100 * (compiled[s]["rmse"] - e["rmse"]) * e["relative_rmse"] / e["rmse"] for s, e in splines.items())


def chebyshev_model(model: LossModel, positions, boxes, system: WaterSystem, pair_degree=FitSettings.pair_degree,
                    own_degree=FitSettings.own_degree) -> LossModel:
    """The model with every spline compiled to a Chebyshev series (channels.ChebyshevChannel)
    on the spline's range (intermolecular pairs in 1/r up to r_cut, times their cutoff factor).

    Each series is the least-squares fit to the spline's dE/dx (the force along the
    invariant), weighted by how often the invariant occurs in the training frames plus
    COMPILE_FLOOR spread over the range; the energy constant of a bond or angle matches
    the spline's at the upper end. The two views of a tied invariant share one histogram,
    so a reciprocal model stays reciprocal and an agent model's split is unchanged.
    """
    lo = np.array([c.x0 for c in model.channels])
    hi = np.array([model.r_cut if c.kind == "inter" else c.x1 for c in model.channels])
    counts = kernels.invariant_histograms(np.ascontiguousarray(positions, dtype=float),
                                          np.ascontiguousarray(boxes, dtype=float), system.species,
                                          system.molecules, system.molecule_id, model.r_cut,
                                          pair_channel_table(), angle_channel_table(), lo, hi, COMPILE_BINS)
    for a, b in RECIPROCAL_TIES:
        ia, ib = CHANNEL_KEYS.index(a), CHANNEL_KEYS.index(b)
        counts[ia] = counts[ib] = counts[ia] + counts[ib]
    # one term per channel (an agent-mode plan lists both views of a tied invariant)
    as_agents = LossModel("agent", model.channels, model.r_cut, model.r_switch, model.k_wall)
    spline = {t.function.key: t for t in as_agents.terms()}
    compiled = []
    for c, ch in enumerate(model.channels):
        if ch.basis != Channel.basis:
            raise ValueError(f"channel {ch.name} is already a {ch.basis!r} function")
        pair = ch.kind == "inter"
        degree = pair_degree if pair else own_degree
        x = lo[c] + (np.arange(COMPILE_BINS) + 0.5) * (hi[c] - lo[c]) / COMPILE_BINS
        w = counts[c] / max(counts[c].sum(), 1.0) + COMPILE_FLOOR / COMPILE_BINS
        term = spline[ch.key]
        de_target = term.energy(x)[1]
        unit = np.eye(degree + 1)
        basis = np.array([[kernels.chebyshev_series(xi, lo[c], hi[c], unit[k], 0, degree + 1, pair)
                           for k in range(degree + 1)] for xi in x])  # (bins, k, [E, dE/dx])
        first = 0 if pair else 1  # T_0 has no slope: a bond's or angle's constant is set below
        sw = np.sqrt(w)[:, None]
        coef = np.zeros(degree + 1)
        coef[first:] = np.linalg.lstsq(basis[:, first:, 1] * sw, de_target * sw[:, 0], rcond=None)[0]
        if not pair:
            end = kernels.chebyshev_series(hi[c], lo[c], hi[c], coef, 0, degree + 1, False)[0]
            coef[0] = term.energy(hi[c])[0] - end
        compiled.append(ChebyshevChannel(ch.agent, ch.neighbour, ch.kind, float(lo[c]), float(hi[c]), coef))
    return LossModel(model.mode, compiled, model.r_cut, model.r_switch, model.k_wall, dict(model.fit_metrics),
                     dict(model.provenance), model.charge_h, model.seen, model.asymmetry_range)


def force_errors(reference, predicted, species) -> dict:
    """RMSE (kJ/mol/nm) and relative RMSE per species of agent forces."""
    out = {}
    for s, name in enumerate(SPECIES):
        ref = reference[:, species == s]
        err = predicted[:, species == s] - ref
        rmse = float(np.sqrt(np.mean(err**2)))
        out[name] = {"rmse": rmse, "relative_rmse": rmse / float(np.sqrt(np.mean(ref**2))),
                     "max_abs_error": float(np.abs(err).max())}
    return out


def learning_curve(positions, forces, boxes, system: WaterSystem, sizes=5,
                   modes=("agent", "reciprocal"), settings: FitSettings | None = None,
                   progress=True) -> dict:
    """Held-out force RMSE against the number of training frames.

    The held-out frames are fit_modes' own (the last test_fraction, after a gap). Each
    size n fits on n frames spread evenly over the training part (every size spans the
    same time, so the curve shows what more frames buy, not what a longer run buys), with
    the ridge strength cross-validated as in fit_modes. sizes: a list of frame counts or
    how many sizes to space geometrically from 2 * cv_folds to all training frames.
    Returns {"n_frames": [...], "test_frames": [first, last], "errors": {mode: {species:
    {"rmse": [...], "relative_rmse": [...]}}}}.
    """
    settings = settings or FitSettings()
    positions = np.ascontiguousarray(positions, dtype=float)
    boxes = np.ascontiguousarray(boxes, dtype=float)
    block, test = time_split(len(positions), settings)
    train = np.flatnonzero(block >= 0)
    if np.isscalar(sizes):
        lo = min(2 * settings.cv_folds, len(train))
        sizes = np.unique(np.round(np.geomspace(lo, len(train), int(sizes))).astype(int))
    sizes = [int(n) for n in sizes if settings.cv_folds <= n <= len(train)]
    if not sizes:
        raise ValueError(f"no learning-curve size between {settings.cv_folds} and {len(train)} frames")
    channels = build_channels(positions[train], boxes[train], system, settings)
    errors = {m: {s: {"rmse": [], "relative_rmse": []} for s in SPECIES} for m in modes}
    for n in tqdm(sizes, desc="learning curve", unit="size", disable=not progress):
        chosen = train[np.unique(np.round(np.linspace(0, len(train) - 1, n)).astype(int))]
        blk = -np.ones(len(positions), np.int64)
        blk[chosen] = np.arange(len(chosen)) * settings.cv_folds // len(chosen)
        blocks = accumulate(positions, forces, boxes, system, channels, settings, blk,
                            settings.cv_folds, progress=False)
        for mode in modes:
            y = solve_mode(blocks, channels, mode, settings)[0]
            pred = _predictions(_model_of(y, channels, mode, settings), positions, boxes, system, test)
            for s, e in force_errors(forces[test], pred, system.species).items():
                errors[mode][s]["rmse"].append(e["rmse"])
                errors[mode][s]["relative_rmse"].append(e["relative_rmse"])
    return {"n_frames": sizes, "n_train_available": int(len(train)),
            "test_frames": [int(test[0]), int(test[-1])], "errors": errors}
