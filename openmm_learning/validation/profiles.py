"""Runs, blocks and profiles: everything measured once per row (or reference), its values
over all its runs and their standard errors over its independent parts (the runs when
there are two or more, else contiguous blocks of the one run)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import analysis
from .metrics import KINDS, PAIRS, ValidationError

@dataclass
class Row:
    """One trajectory to compare, with what else is known about its run.

    traj: mdtraj.Trajectory of water (O H H per residue) with a unit cell and with
    traj.time in ps (set it after mdtraj.load_dcd, which numbers frames instead).
    temperature: instantaneous temperature (K), either one value per frame of traj or
    at temperature_times_ps. seconds_per_step: wall time per MD step (float, or
    (value, uncertainty)); a ``cost`` entry of validate()'s ReportContext overrides it.
    velocities: (n, n_atoms, 3) nm/ps, evenly spaced by velocity_dt_ps, atoms as in traj;
    with velocity_times_ps the equilibration cut applies to them too, without they are
    used whole (e.g. a recording made after the run). kinetic: {kind: (n,) K} for the
    kinds of analysis.KINETIC_KINDS at kinetic_times_ps. hydrogen_mass_amu: the run's H
    mass (dynamics compare only between equal masses). thermostat: the run's (CP2K's
    name or the summary's); Langevin friction on every atom slows diffusion, so a
    Langevin run's diffusion compares only with another's of the same friction_per_ps
    (1/ps). heat_per_ps: heat the thermostat
    removes (kJ/mol/ps); net_force: mean |sum of all forces| (kJ/mol/nm).
    temperature_atoms: how many atoms the temperature series is of, when not traj's (a
    CP2K cell used as its periodic replica: fluctuations scale as 1/sqrt(atoms)).
    """

    traj: object
    temperature: np.ndarray | None = None
    temperature_times_ps: np.ndarray | None = None
    seconds_per_step: float | tuple | None = None
    velocities: np.ndarray | None = None
    velocity_dt_ps: float | None = None
    velocity_times_ps: np.ndarray | None = None
    heat_per_ps: float | None = None
    net_force: float | None = None
    kinetic: dict | None = None
    kinetic_times_ps: np.ndarray | None = None
    hydrogen_mass_amu: float = 1.00794
    temperature_atoms: int | None = None
    thermostat: str | None = None
    friction_per_ps: float | None = None


#: Longest lag (ps) of the velocity autocorrelation whose spectrum gives the bands; every
#: series (and each of its blocks) uses one common lag, shortened to fit the shortest.
VACF_MAX_LAG_PS = 0.2


def _series(values, times, n, what):
    if values is None:
        return None
    values = np.asarray(values, float)
    if times is None:
        if len(values) != n:
            raise ValueError(f"{len(values)} {what} values for {n} frames: give their times")
        return None
    if len(times) != len(values):
        raise ValueError(f"{len(times)} {what} times for {len(values)} values")
    return np.asarray(times, float)


class Run:
    """One run after its equilibration cut: trajectory, temperature series (t, T), kinetic
    temperatures (t, {kind: T}), velocities (v, dt). Splits into blocks by time."""

    def __init__(self, traj, temperature=None, kinetic=None, velocities=None):
        self.traj, self.temperature, self.kinetic, self.velocities = traj, temperature, kinetic, velocities
        self.span_ps = float(traj.time[-1] - traj.time[0])

    @classmethod
    def of_row(cls, row: Row, cut_ps: float):
        traj = row.traj
        t_start = float(traj.time[0]) + (cut_ps or 0.0) - 1e-9
        keep = np.flatnonzero(traj.time >= t_start)
        if len(keep) < 2:
            raise ValidationError(
                f"cutting {cut_ps} ps leaves fewer than 2 frames of a {traj.time[-1] - traj.time[0]:g} "
                "ps trajectory: cut less or run longer"
            )
        temp = kin = vel = None
        if row.temperature is not None:
            times = _series(row.temperature, row.temperature_times_ps, traj.n_frames, "temperature")
            times = traj.time if times is None else times
            sel = times >= times[0] + (cut_ps or 0.0) - 1e-9
            temp = np.column_stack([times[sel], np.asarray(row.temperature, float)[sel]])
        if row.kinetic is not None:
            first = np.asarray(row.kinetic[KINDS[0]])
            times = _series(first, row.kinetic_times_ps, traj.n_frames, "kinetic temperature")
            times = traj.time if times is None else times
            sel = times >= times[0] + (cut_ps or 0.0) - 1e-9
            kin = (times[sel], {k: np.asarray(row.kinetic[k], float)[sel] for k in KINDS})
        if row.velocities is not None:
            v, dt = np.asarray(row.velocities), row.velocity_dt_ps
            if row.velocity_times_ps is not None:
                times = np.asarray(row.velocity_times_ps, float)
                if len(times) != len(v):
                    raise ValueError(f"{len(times)} velocity times for {len(v)} velocity frames")
                dt = float(np.median(np.diff(times))) if dt is None else dt
                v = v[times >= times[0] + (cut_ps or 0.0) - 1e-9]
            if dt is None:
                raise ValueError("velocities need velocity_dt_ps or velocity_times_ps")
            vel = (v, float(dt))
        return cls(traj[keep], temp, kin, vel)

    def blocks(self, n: int) -> list:
        """n contiguous blocks, each field cut at the same fractions of its own series."""
        if self.traj.n_frames < 2 * n:
            raise ValidationError(
                f"a single run of {self.traj.n_frames} frames ({self.span_ps:g} ps) cannot give {n} blocks of 2 "
                "frames or more for its uncertainties: run longer, report more often, or run several seeds")

        def cut(arr, k):
            edges = np.linspace(0, len(arr), n + 1).astype(int)
            return arr[edges[k]:edges[k + 1]]
        out = []
        for k in range(n):
            t = cut(np.arange(self.traj.n_frames), k)
            kin = None if self.kinetic is None else (cut(self.kinetic[0], k),
                                                     {q: cut(v, k) for q, v in self.kinetic[1].items()})
            out.append(Run(self.traj[t], None if self.temperature is None else cut(self.temperature, k), kin,
                            None if self.velocities is None else (cut(self.velocities[0], k), self.velocities[1])))
        return out


def sem(values):
    return analysis.standard_error(values)


@dataclass(frozen=True)
class ProfileSettings:
    """How a profile measures: n_blocks contiguous blocks of a single run for its errors,
    RDFs out to r_max (nm) in n_bins bins, the velocity autocorrelation to vacf_lag_ps
    (None: no spectrum), diffusion over the lag window diffusion_window (ps; None: none)."""

    n_blocks: int
    r_max: float = 0.6
    n_bins: int = 120
    vacf_lag_ps: float | None = None
    diffusion_window: tuple | None = None


class Profile:
    """Everything computed once per row (or reference): values over all its runs and
    standard errors over its independent parts (the runs when there are two or more,
    else contiguous blocks of the one run). row: the Row of its first run, whose record of
    the run (heat, net force, hydrogen mass, temperature atoms, thermostat, friction) the
    profile keeps."""

    def __init__(self, runs: list, settings: ProfileSettings, row: Row):
        self.runs, self.n_blocks = runs, settings.n_blocks
        self.thermostat, self.friction_per_ps = row.thermostat, row.friction_per_ps
        self.temperature_atoms = row.temperature_atoms or runs[0].traj.n_atoms
        self.heat_per_ps, self.net_force, self.hydrogen_mass_amu = row.heat_per_ps, row.net_force, row.hydrogen_mass_amu
        self.seeds = len(runs)
        # Independent runs when there are several: blocks of one run are correlated over the
        # slow exchange between kinds of motion (tens of ps in flexible water), runs are not.
        self.parts = runs if len(runs) >= 2 else runs[0].blocks(self.n_blocks)
        self.dof = len(self.parts) - 1
        self.part_kind = f"{len(runs)} independent runs" if len(runs) >= 2 else f"{self.n_blocks} blocks of one run"
        self.duration_ps = float(sum(r.span_ps for r in runs))
        self.traj = runs[0].traj
        self.rdf = {p: self._rdf(p, settings.r_max, settings.n_bins) for p in PAIRS}
        self.bond = [analysis.bond_lengths(part.traj) for part in self.parts]
        self.angle = [analysis.hoh_angles(part.traj) for part in self.parts]
        self.hbonds = [analysis.hbonds_per_molecule(part.traj) for part in self.parts]
        self.temperature = None
        if all(run.temperature is not None for run in runs):
            self.temperature = [run.temperature for run in runs]
        self.kinetic = None
        if all(run.kinetic is not None for run in runs):
            self.kinetic = {k: self._mean_sem([part.kinetic[1][k] for part in self.parts], np.mean) for k in KINDS}
            # the split per part: O and H share each part's slow fluctuations
            self.kinetic_split = self._mean_sem([part.kinetic[1]["O"] - part.kinetic[1]["H"]
                                                 for part in self.parts], np.mean)
        window, lag = settings.diffusion_window, settings.vacf_lag_ps
        self.diffusion = self._diffusion(window) if window else None
        self.spectrum = None
        if lag and all(run.velocities is not None for run in runs):
            self.spectrum = self._spectrum(lag)

    def _rdf(self, p, r_max, n_bins) -> dict:
        """The pair's g(r) over all frames, its parts' g(r), their errors and features."""
        rho = analysis.partner_density(self.traj, p)
        r, _ = analysis.rdf(self.parts[0].traj, p, r_max, n_bins)
        g_parts = [analysis.rdf(part.traj, p, r_max, n_bins)[1] for part in self.parts]
        # frame-weighted mean of the parts = the RDF of all frames together
        g = np.average(g_parts, axis=0, weights=[part.traj.n_frames for part in self.parts])
        return {"r": r, "g": g, "g_parts": g_parts, "density": rho,
                "g_sem": np.std(g_parts, axis=0, ddof=1) / math.sqrt(len(g_parts)),
                "features": analysis.rdf_features(r, g, rho, p),
                "features_sem": sem([analysis.rdf_features(r, gp, rho, p) for gp in g_parts])}

    @staticmethod
    def _mean_sem(arrays, fn):
        vals = [float(fn(a)) for a in arrays]
        return float(np.mean(vals)), sem(vals)

    def stat(self, name, fn):
        """fn over the parts of a per-part list attribute: (mean of the parts, their standard error)."""
        return self._mean_sem(getattr(self, name), fn)

    def pooled(self, name):
        return np.concatenate([np.ravel(a) for a in getattr(self, name)])

    def temperature_stat(self, fn):
        """fn of the temperature series: per run, or per block of the one run."""
        if len(self.temperature) >= 2:
            series = [t[:, 1] for t in self.temperature]
        else:
            series = [b[:, 1] for b in analysis.blocks(self.temperature[0], self.n_blocks)]
        return self._mean_sem(series, fn)

    def _diffusion(self, window):
        """{"value", "sem", "dof", "window", "why"}: D (nm^2/ps) over a fixed window of lag times,
        its error from the runs (two or more) or from blocks of the one run."""
        out = {"value": math.nan, "sem": math.nan, "dof": 0, "window": tuple(window), "why": ""}
        try:
            values = [analysis.diffusion_in_window(run.traj, window) for run in self.runs]
        except ValueError as exc:
            out["why"] = f"too short for a diffusion coefficient: {exc}"
            return out
        out["value"] = float(np.mean(values))
        if len(values) >= 2:
            out["sem"], out["dof"] = sem(values), len(values) - 1
            return out
        run = self.runs[0]
        n = int(run.traj.n_frames * (run.span_ps / max(run.traj.n_frames - 1, 1)) // (2 * window[1]) + 1e-9)
        if n < 2:
            out["why"] = (f"one run of {self.runs[0].span_ps:.3g} ps: no error bar, which needs 2 blocks of "
                          f"{2 * window[1]:g} ps ({4 * window[1]:g} ps)")
            return out
        out["sem"] = sem([analysis.diffusion_in_window(b.traj, window) for b in self.runs[0].blocks(min(n, 8))])
        out["dof"] = min(n, 8) - 1
        return out

    def _spectrum(self, lag_ps):
        v0, dt = self.runs[0].velocities
        per_run = [analysis.hydrogen_spectrum(run.velocities[0], dt, self.traj.topology, lag_ps) for run in self.runs]
        t, c, nu, _, _ = per_run[0]
        spec = np.mean([s[3] for s in per_run], axis=0)
        if len(self.runs) >= 2:
            bands = [s[4] for s in per_run]
        else:
            bands = [analysis.hydrogen_spectrum(p.velocities[0], dt, self.traj.topology, lag_ps)[4]
                     for p in self.runs[0].blocks(self._spectral_blocks(lag_ps))]
        nyquist = analysis.CM1_PER_INV_PS / (2 * dt)
        return {"t": t, "vacf": np.mean([s[1] for s in per_run], axis=0), "nu": nu, "intensity": spec,
                "bands": analysis.band_positions(nu, spec), "bands_sem": sem(bands) if len(bands) >= 2 else
                {b: math.nan for b in analysis.SPECTRAL_BANDS}, "dof": len(bands) - 1, "span_ps": len(v0) * dt,
                "dt_ps": dt,
                "nyquist_cm1": nyquist, "lag_ps": lag_ps}

    def _spectral_blocks(self, lag_ps):
        v, dt = self.runs[0].velocities
        return int(max(1, min(self.n_blocks, len(v) * dt // (2 * lag_ps))))


def vacf_lag(profiles_velocities, max_lag_ps=VACF_MAX_LAG_PS):
    """One lag for every velocity series: at most max_lag_ps, and short enough that each
    single-run series gives at least 2 (up to n_blocks) blocks of twice the lag."""
    spans = []
    for runs in profiles_velocities:
        if len(runs) == 1:
            v, dt = runs[0]
            spans.append(len(v) * dt / (2 * 2))
        else:
            spans += [len(v) * dt / 2 for v, dt in runs]
    return float(min([max_lag_ps] + spans))
