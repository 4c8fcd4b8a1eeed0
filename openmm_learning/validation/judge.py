"""Compare simulated water trajectories ("rows") with a CP2K reference trajectory.

``validate(reference, rows, out_dir=...)`` computes, for every row against the
reference: g_OO, g_OH, g_HH features and integrated |dg|, O-H length and H-O-H angle
distributions, hydrogen bonds per molecule, O self-diffusion over a fixed window of lag
times, temperature mean and fluctuation, the kinetic temperature of O, of H and of
molecular translation, rotation and vibration (equipartition, against the target and
against the reference), the vibrational bands of the hydrogen velocity autocorrelation,
the thermostat's heat and the net force (reported), and the cost ratio CP2K / row.

A row may be several independent runs (seeds): values are their mean and the
uncertainty is the spread between them; a single run (the reference) gets its
uncertainty from contiguous blocks, which slow processes correlate (say so when
judging a short reference). Every judged metric has one of three
outcomes against its threshold (``validation/thresholds.json``), with z Student's t
quantile of the two-sided ``confidence`` for the uncertainty's degrees of freedom:
pass (the whole interval value +- z sigma is inside), fail (all of value +- z_fail sigma
is outside, z_fail at the family-wise confidence of the row's judged metrics), or
inconclusive (the data cannot decide). A metric that the data cannot measure (a feature
absent in row and reference, a band above the Nyquist frequency, a run too short for
diffusion, different masses for dynamics) is "n/a" with the reason, never a pass.
The reference's own noise (its first half against its second half) and the reference
length that would resolve each threshold are reported.
Writes PNG plots, ``report.md``, a self-contained ``report.html`` (plots embedded)
and ``metrics.json`` to ``out_dir``. ``validation.suite`` runs the simulations that
feed it.
"""

from __future__ import annotations

import base64
import copy
import html
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.atomic import write_json_atomic
from ..units import MASSES_AMU
from . import analysis

PAIRS = ("OO", "OH", "HH")
SCHEMA_VERSION = 2
DEFAULT_THRESHOLDS = Path(__file__).with_name("thresholds.json")  # package data
KINDS = analysis.KINETIC_KINDS
KIND_LABELS = {"O": "O atoms", "H": "H atoms", "translation": "molecular translation",
               "rotation": "molecular rotation", "vibration": "internal vibration"}

#: Metric key -> (label, unit). Difference metrics are row - reference.
METRICS = {}
for _p in PAIRS:
    METRICS.update({
        f"rdf_{_p}.first_peak_position": (f"g_{_p} first peak position", "nm"),
        f"rdf_{_p}.first_peak_height": (f"g_{_p} first peak height", ""),
        f"rdf_{_p}.first_min_position": (f"g_{_p} first minimum position", "nm"),
        f"rdf_{_p}.coordination_number": (f"g_{_p} coordination number", ""),
        f"rdf_{_p}.integrated_abs_diff": (f"g_{_p} integral of |dg| over 0-6 A", "A"),
    })
METRICS.update({
    "bond_length.mean": ("O-H length mean", "nm"),
    "bond_length.width": ("O-H length width (std)", "nm"),
    "bond_length.overlap": ("O-H length histogram overlap", ""),
    "hoh_angle.mean": ("H-O-H angle mean", "deg"),
    "hoh_angle.width": ("H-O-H angle width (std)", "deg"),
    "hoh_angle.overlap": ("H-O-H angle histogram overlap", ""),
    "hbonds.per_molecule": ("H-bonds per molecule (Wernet-Nilsson)", ""),
    "diffusion.log_ratio": ("O self-diffusion, ln(D_row / D_ref)", ""),
    "temperature.mean": ("temperature mean", "K"),
    "temperature.std": ("temperature fluctuation (std)", "K"),
})
for _k in KINDS:
    METRICS[f"kinetic_vs_target.{_k}"] = (f"kinetic temperature of {KIND_LABELS[_k]} - target", "K")
    METRICS[f"kinetic_vs_reference.{_k}"] = (f"kinetic temperature of {KIND_LABELS[_k]}", "K")
METRICS["kinetic_split.O_minus_H"] = ("kinetic temperature of O atoms - that of H atoms (0 in equilibrium)", "K")
METRICS.update({
    "vacf.libration_band": ("H spectrum: libration band position", "cm^-1"),
    "vacf.bend_band": ("H spectrum: H-O-H bend band position", "cm^-1"),
    "vacf.stretch_band": ("H spectrum: O-H stretch band position", "cm^-1"),
    "thermostat.heat_per_ps": ("heat the thermostat removes per ps (row value, not a difference)", "kJ/mol/ps"),
    "forces.net_force": ("mean |net force on all atoms| (row value, not a difference)", "kJ/mol/nm"),
    "cost.speedup": ("speed-up, CP2K s/step / row s/step", "x"),
    "stability.blow_ups": ("runs that blew up (the guard stopped them; the row is judged on the rest)", ""),
})

#: Longest lag (ps) of the velocity autocorrelation whose spectrum gives the bands; every
#: series (and each of its blocks) uses one common lag, shortened to fit the shortest.
VACF_MAX_LAG_PS = 0.2

#: Columns of the summary table: (header, metric, "row" = the row's own number or
#: "value" = the compared value, scale, format).
SUMMARY_COLUMNS = (
    ("g_OO peak (nm)", "rdf_OO.first_peak_position", "row", 1.0, "{:.3f}"),
    ("g_OO height", "rdf_OO.first_peak_height", "row", 1.0, "{:.2f}"),
    ("n_OO", "rdf_OO.coordination_number", "row", 1.0, "{:.2f}"),
    ("∫|Δg_OO| (Å)", "rdf_OO.integrated_abs_diff", "value", 1.0, "{:.2f}"),
    ("∫|Δg_OH| (Å)", "rdf_OH.integrated_abs_diff", "value", 1.0, "{:.2f}"),
    ("∫|Δg_HH| (Å)", "rdf_HH.integrated_abs_diff", "value", 1.0, "{:.2f}"),
    ("O-H (nm)", "bond_length.mean", "row", 1.0, "{:.4f}"),
    ("H-O-H (°)", "hoh_angle.mean", "row", 1.0, "{:.1f}"),
    ("H-bonds / mol", "hbonds.per_molecule", "row", 1.0, "{:.2f}"),
    ("D_O (1e-5 cm²/s)", "diffusion.log_ratio", "row", 1000.0, "{:.2f}"),
    ("T (K)", "temperature.mean", "row", 1.0, "{:.1f}"),
    ("T_O / T_H (K)", "kinetic_vs_reference.O", "pair:kinetic_vs_reference.H", 1.0, "{:.0f}"),
    ("T trans / rot / vib (K)", "kinetic_vs_reference.translation",
     "pair:kinetic_vs_reference.rotation:kinetic_vs_reference.vibration", 1.0, "{:.0f}"),
    ("libration (cm⁻¹)", "vacf.libration_band", "row", 1.0, "{:.0f}"),
    ("bend (cm⁻¹)", "vacf.bend_band", "row", 1.0, "{:.0f}"),
    ("stretch (cm⁻¹)", "vacf.stretch_band", "row", 1.0, "{:.0f}"),
    ("heat (kJ/mol/ps)", "thermostat.heat_per_ps", "row", 1.0, "{:.0f}"),
    ("|F_net| (kJ/mol/nm)", "forces.net_force", "row", 1.0, "{:.3g}"),
    ("ms / step", "cost.speedup", "row", 1000.0, "{:.3g}"),
    ("speed-up", "cost.speedup", "value", 1.0, "{:.0f}"),
)

OUTCOMES = ("pass", "fail", "inconclusive", "n/a", "reported")

#: the metrics that say whether learned water is the reference's: the overall verdict is
#: PASS only when none of them is inconclusive or n/a in a judged row (diffusion excepted
#: where the data cannot measure it) and no judged metric failed
HEADLINE_METRICS = (
    "rdf_OO.first_peak_height", "rdf_OO.first_peak_position",
    "rdf_OO.integrated_abs_diff", "rdf_OH.integrated_abs_diff", "rdf_HH.integrated_abs_diff",
    "bond_length.width", "hoh_angle.width",
    "kinetic_vs_target.O", "kinetic_vs_target.H", "kinetic_vs_target.translation",
    "kinetic_vs_target.rotation", "kinetic_vs_target.vibration", "kinetic_split.O_minus_H",
    "diffusion.log_ratio")
#: headline metrics whose n/a (the data cannot measure them) leaves the verdict alone
HEADLINE_WHERE_DECIDABLE = ("diffusion.log_ratio",)
#: exit code of `openmm-learning validate` for each overall verdict (2: bad input)
EXIT_CODES = {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}


def overall_verdict(metrics: list, baseline: str | None = None) -> str:
    """FAIL when a judged metric of a row other than the baseline failed; else INCONCLUSIVE
    when one of such a row's HEADLINE_METRICS is inconclusive, or n/a (missing included)
    unless it is one measured only where decidable; else PASS."""
    rows = {m["row"] for m in metrics if m["row"] != baseline} or {m["row"] for m in metrics}
    judged = [m for m in metrics if m["row"] in rows]
    if any(m["outcome"] == "fail" for m in judged):
        return "FAIL"
    for row in rows:
        outcome = {m["metric"]: m["outcome"] for m in judged if m["row"] == row}
        for key in HEADLINE_METRICS:
            got = outcome.get(key, "n/a")
            if got == "inconclusive" or (got != "pass" and key not in HEADLINE_WHERE_DECIDABLE):
                return "INCONCLUSIVE"
    return "PASS"


@dataclass
class Row:
    """One trajectory to compare, with what else is known about its run.

    traj: mdtraj.Trajectory of water (O H H per residue) with a unit cell and with
    traj.time in ps (set it after mdtraj.load_dcd, which numbers frames instead).
    temperature: instantaneous temperature (K), either one value per frame of traj or
    at temperature_times_ps. seconds_per_step: wall time per MD step (float, or
    (value, uncertainty)); a ``cost`` entry given to validate() overrides it.
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


@dataclass
class ValidationResult:
    """passed: no judged metric of a non-baseline row failed. rows_passed: the same per
    row; verdicts: "PASS", "FAIL" or "INCONCLUSIVE" per row. overall: the verdict of the
    whole validation (overall_verdict: PASS needs every headline metric decided). metrics:
    one record (dict) per row and metric, as in metrics.json. report_path: report.md."""

    passed: bool
    metrics: list
    report_path: Path
    rows_passed: dict = field(default_factory=dict)
    out_dir: Path | None = None
    html_path: Path | None = None
    summary: dict = field(default_factory=dict)
    baseline: str | None = None
    verdicts: dict = field(default_factory=dict)
    equipartition: dict = field(default_factory=dict)
    overall: str = ""

    def metric(self, row: str, key: str) -> dict:
        """The record of one metric of one row."""
        for m in self.metrics:
            if m["row"] == row and m["metric"] == key:
                return m
        raise KeyError((row, key))

    def failed(self, row: str | None = None) -> list:
        """Records that failed (of one row, or of all rows)."""
        return [m for m in self.metrics if m["outcome"] == "fail" and (row is None or m["row"] == row)]

    def outcomes(self, row: str) -> dict:
        """{outcome: number of metrics} of one row."""
        recs = [m for m in self.metrics if m["row"] == row]
        return {o: sum(m["outcome"] == o for m in recs) for o in OUTCOMES}


# --------------------------------------------------------------------------- thresholds

def load_thresholds(thresholds=None) -> dict:
    """The thresholds config: the default file, a path, or a dict merged over the default.

    A dict may hold only what it changes, e.g. {"metrics": {"rdf_OO.integrated_abs_diff": {"max": 0.3}}}
    or {"confidence": 0.99}; a metric set to None is reported but not judged.
    """
    if isinstance(thresholds, (str, Path)):
        try:
            cfg = json.loads(Path(thresholds).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValidationError(f"{thresholds}: not a thresholds JSON file ({e})") from None
    else:
        if not DEFAULT_THRESHOLDS.exists():
            raise FileNotFoundError(
                f"default thresholds {DEFAULT_THRESHOLDS} not found (a broken install?): pass thresholds=")
        cfg = json.loads(DEFAULT_THRESHOLDS.read_text())
        if thresholds is not None:
            cfg = copy.deepcopy(cfg)
            for k, v in thresholds.items():
                if k == "metrics":
                    for name, spec in v.items():  # a metric's spec is replaced whole; None drops it
                        if spec is None:
                            cfg["metrics"].pop(name, None)
                        else:
                            cfg["metrics"][name] = dict(spec)
                else:
                    cfg[k] = v
    if cfg.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"thresholds schema_version {cfg.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    unknown = set(cfg["metrics"]) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics in thresholds: {sorted(unknown)}")
    return cfg


# --------------------------------------------------------------------------- runs, blocks and profiles

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


class ValidationError(ValueError):
    """The data cannot be validated as asked (too few frames, mismatched series); the
    message says what to change."""


class _Run:
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
            raise ValidationError(f"cutting {cut_ps} ps leaves fewer than 2 frames of a {traj.time[-1] - traj.time[0]:g} "
                                  "ps trajectory: cut less or run longer")
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
            out.append(_Run(self.traj[t], None if self.temperature is None else cut(self.temperature, k), kin,
                            None if self.velocities is None else (cut(self.velocities[0], k), self.velocities[1])))
        return out


def _sem(values):
    return analysis.standard_error(values)


class _Profile:
    """Everything computed once per row (or reference): values over all its runs and
    standard errors over its independent parts (the runs when there are two or more,
    else contiguous blocks of the one run)."""

    def __init__(self, runs: list, n_blocks, r_max, n_bins, vacf_lag_ps=None, diffusion_window=None,
                 heat_per_ps=None, net_force=None, hydrogen_mass_amu=None, temperature_atoms=None, thermostat=None,
                 friction_per_ps=None):
        self.runs, self.n_blocks, self.thermostat, self.friction_per_ps = runs, n_blocks, thermostat, friction_per_ps
        self.temperature_atoms = temperature_atoms or runs[0].traj.n_atoms
        self.heat_per_ps, self.net_force, self.hydrogen_mass_amu = heat_per_ps, net_force, hydrogen_mass_amu
        self.seeds = len(runs)
        # Independent runs when there are several: blocks of one run are correlated over the
        # slow exchange between kinds of motion (tens of ps in flexible water), runs are not.
        self.parts = runs if len(runs) >= 2 else runs[0].blocks(n_blocks)
        self.dof = len(self.parts) - 1
        self.part_kind = f"{len(runs)} independent runs" if len(runs) >= 2 else f"{n_blocks} blocks of one run"
        self.duration_ps = float(sum(r.span_ps for r in runs))
        self.traj = runs[0].traj
        self.rdf = {}
        for p in PAIRS:
            rho = analysis.partner_density(self.traj, p)
            r, _ = analysis.rdf(self.parts[0].traj, p, r_max, n_bins)
            g_parts = [analysis.rdf(part.traj, p, r_max, n_bins)[1] for part in self.parts]
            # frame-weighted mean of the parts = the RDF of all frames together
            g = np.average(g_parts, axis=0, weights=[part.traj.n_frames for part in self.parts])
            self.rdf[p] = {"r": r, "g": g, "g_sem": np.std(g_parts, axis=0, ddof=1) / math.sqrt(len(g_parts)),
                           "features": analysis.rdf_features(r, g, rho, p),
                           "features_sem": _sem([analysis.rdf_features(r, gp, rho, p) for gp in g_parts])}
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
        self.diffusion = self._diffusion(diffusion_window) if diffusion_window else None
        self.spectrum = None
        if vacf_lag_ps and all(run.velocities is not None for run in runs):
            self.spectrum = self._spectrum(vacf_lag_ps)

    @staticmethod
    def _mean_sem(arrays, fn):
        vals = [float(fn(a)) for a in arrays]
        return float(np.mean(vals)), _sem(vals)

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
            out["sem"], out["dof"] = _sem(values), len(values) - 1
            return out
        run = self.runs[0]
        n = int(run.traj.n_frames * (run.span_ps / max(run.traj.n_frames - 1, 1)) // (2 * window[1]) + 1e-9)
        if n < 2:
            out["why"] = (f"one run of {self.runs[0].span_ps:.3g} ps: no error bar, which needs 2 blocks of "
                          f"{2 * window[1]:g} ps ({4 * window[1]:g} ps)")
            return out
        out["sem"] = _sem([analysis.diffusion_in_window(b.traj, window) for b in self.runs[0].blocks(min(n, 8))])
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
                "bands": analysis.band_positions(nu, spec), "bands_sem": _sem(bands) if len(bands) >= 2 else
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


def _diff_record(key, row_v, row_e, ref_v, ref_e):
    value = row_v - ref_v
    return {"metric": key, "row_value": row_v, "row_uncertainty": row_e,
            "reference_value": ref_v, "reference_uncertainty": ref_e,
            "value": value, "uncertainty": math.hypot(row_e, ref_e)}


def _na(key, why):
    return {"metric": key, "value": math.nan, "uncertainty": math.nan, "skipped": why}


def _integrated_rdf_record(p, a, b):
    """integral |g_row - g_ref|: noise alone adds about sqrt(2/pi) sum(sigma dr) to it (the
    noise bias, taken off before deciding a failure) and scatters it by sqrt(sum (sigma dr)^2)."""
    r = a["r"]
    sd = np.sqrt(a["g_sem"] ** 2 + b["g_sem"] ** 2) * (r[1] - r[0]) * analysis.ANGSTROM_PER_NM
    sd = sd[r <= 0.6 + 1e-9]
    return {"metric": f"rdf_{p}.integrated_abs_diff", "row_value": None, "row_uncertainty": None,
            "reference_value": None, "reference_uncertainty": None,
            "value": analysis.rdf_difference(r, a["g"], b["g"]),
            "uncertainty": float(np.sqrt(np.sum(sd**2))), "noise_bias": float(np.sqrt(2 / np.pi) * np.sum(sd))}


def _compare(row: _Profile, ref: _Profile, seconds=None, cp2k_seconds=None, target_k=None,
             reference_equipartition_ok=True) -> list:
    """Raw metric records (no thresholds) of row against ref."""
    out = _compare_records(row, ref, seconds, cp2k_seconds, target_k, reference_equipartition_ok)
    special = {"diffusion.log_ratio": (row.diffusion or {}).get("dof", 0), **{
        f"vacf.{b}_band": (row.spectrum or {}).get("dof", 0) for b in analysis.SPECTRAL_BANDS}}
    ref_special = {"diffusion.log_ratio": (ref.diffusion or {}).get("dof", 0), **{
        f"vacf.{b}_band": (ref.spectrum or {}).get("dof", 0) for b in analysis.SPECTRAL_BANDS}}
    for rec in out:
        rec["dof"] = _welch_dof(rec, special.get(rec["metric"], row.dof), ref_special.get(rec["metric"], ref.dof))
    return out


def _compare_records(row, ref, seconds, cp2k_seconds, target_k, reference_equipartition_ok):
    out = []
    for p in PAIRS:
        a, b = row.rdf[p], ref.rdf[p]
        # each side's peak prominence, its error and degrees of freedom: the judge decides
        # "present" or "absent" only beyond the noise of MIN_PEAK_PROMINENCE
        presence = {side: (prof.rdf[p]["features"]["peak_prominence"],
                           prof.rdf[p]["features_sem"]["peak_prominence"], prof.dof)
                    for side, prof in (("row", row), ("reference", ref))}
        for feat in ("first_peak_position", "first_peak_height", "first_min_position", "coordination_number"):
            out.append({**_diff_record(f"rdf_{p}.{feat}", a["features"][feat], a["features_sem"][feat],
                                       b["features"][feat], b["features_sem"][feat]), "presence": presence})
        out.append(_integrated_rdf_record(p, a, b))
    for name in ("bond", "angle"):
        key = {"bond": "bond_length", "angle": "hoh_angle"}[name]
        out.append(_diff_record(f"{key}.mean", *row.stat(name, np.mean), *ref.stat(name, np.mean)))
        out.append(_diff_record(f"{key}.width", *row.stat(name, np.std), *ref.stat(name, np.std)))
        parts = [analysis.overlap_coefficient(u, v) for u in getattr(row, name) for v in getattr(ref, name)]
        out.append({"metric": f"{key}.overlap", "row_value": None, "row_uncertainty": None,
                    "reference_value": None, "reference_uncertainty": None,
                    "value": analysis.overlap_coefficient(row.pooled(name), ref.pooled(name)),
                    "uncertainty": _sem(parts) / math.sqrt(2)})
    out.append(_diff_record("hbonds.per_molecule", *row.stat("hbonds", np.mean), *ref.stat("hbonds", np.mean)))
    out.append(_diffusion_record(row, ref))
    if row.temperature is not None and ref.temperature is not None:
        out.append(_diff_record("temperature.mean", *row.temperature_stat(np.mean), *ref.temperature_stat(np.mean)))
        if row.temperature_atoms == ref.temperature_atoms:
            out.append(_diff_record("temperature.std", *row.temperature_stat(np.std), *ref.temperature_stat(np.std)))
        else:
            out.append(_na("temperature.std", f"temperatures of {row.temperature_atoms} and {ref.temperature_atoms} "
                                              "atoms: their fluctuations scale as 1/sqrt(atoms)"))
    else:
        out += [_na(k, "no temperature series") for k in ("temperature.mean", "temperature.std")]
    out += _kinetic_records(row, ref, target_k, reference_equipartition_ok)
    out += _spectrum_records(row, ref)
    # Reported, not differences: a conservative run has no net force and no steady heat flow.
    for key, attr in (("thermostat.heat_per_ps", "heat_per_ps"), ("forces.net_force", "net_force")):
        a, b = getattr(row, attr), getattr(ref, attr)
        if a is None:
            out.append(_na(key, "not recorded"))
        else:
            out.append({"metric": key, "row_value": float(a), "row_uncertainty": math.nan,
                        "reference_value": None if b is None else float(b), "reference_uncertainty": math.nan,
                        "value": float(a), "uncertainty": math.nan})
    if seconds is not None and cp2k_seconds is not None:
        (s, se), (c, ce) = _with_error(seconds), _with_error(cp2k_seconds)
        out.append({"metric": "cost.speedup", "row_value": s, "row_uncertainty": se,
                    "reference_value": c, "reference_uncertainty": ce, "value": c / s,
                    "uncertainty": _ratio_error(c / s, se / s, ce / c), "unit_values": "s/step",
                    "error_components": (se / s, ce / c)})
    else:
        out.append(_na("cost.speedup", "no seconds per step"))
    return out


def _masses_differ(row, ref):
    a, b = row.hydrogen_mass_amu, ref.hydrogen_mass_amu
    if a is not None and b is not None and abs(a - b) > 0.01 * b:
        return f"hydrogen masses differ (row {a:g} amu, reference {b:g} amu): dynamics do not compare"
    return ""


def light_water(hydrogen_mass_amu: float) -> bool:
    """Standard hydrogen mass: the spectral band windows (analysis.SPECTRAL_BANDS) are light water's."""
    return abs(hydrogen_mass_amu - MASSES_AMU["H"]) < 0.01


def _langevin(profile) -> bool:
    return "langevin" in str(profile.thermostat or "").lower()


def _dynamics_differ(row, ref) -> str:
    """Why the row's diffusion cannot be compared with the reference's ("" when it can)."""
    if _masses_differ(row, ref):
        return _masses_differ(row, ref)
    if _langevin(row) != _langevin(ref):
        which = "reference" if _langevin(ref) else "row"
        return (f"the {which} ran Langevin dynamics (friction on every atom slows diffusion), the other did not: "
                "their diffusion does not compare")
    a, b = row.friction_per_ps, ref.friction_per_ps
    if _langevin(ref) and (a is None or b is None or abs(a - b) > 0.01 * b):
        def text(x):
            return "unknown" if x is None else f"{x:g}/ps"
        return f"Langevin frictions differ (row {text(a)}, reference {text(b)}): their diffusion does not compare"
    return ""


def _diffusion_record(row, ref):
    key = "diffusion.log_ratio"
    box_row, box_ref = np.mean(row.traj.unitcell_lengths, axis=0), np.mean(ref.traj.unitcell_lengths, axis=0)
    if not np.allclose(box_row, box_ref, rtol=1e-3):
        return _na(key, "boxes differ: diffusion depends on the box size (Yeh-Hummer), compare equal boxes")
    if _dynamics_differ(row, ref):
        return _na(key, _dynamics_differ(row, ref))
    a, b = row.diffusion, ref.diffusion
    if not np.isfinite(b["value"]):
        return _na(key, f"reference {b['why']}")
    if not np.isfinite(a["value"]):
        return _na(key, f"row {a['why']}")
    if a["value"] <= 0 or b["value"] <= 0:
        return _na(key, "a non-positive MSD slope: no diffusion in the window")
    lo, hi = a["window"]
    note = (f"MSD slope over lags {lo:g}-{hi:g} ps; {row.traj.n_residues} molecules in a "
            f"{box_row[0]:.3f} nm box, no finite-size (Yeh-Hummer) correction")
    if b["why"]:
        note += f"; reference {b['why']}"
    # ln of the ratio: symmetric, so "within a factor f" is one threshold, ln f.
    return {"metric": key, "row_value": a["value"], "row_uncertainty": a["sem"], "reference_value": b["value"],
            "reference_uncertainty": b["sem"], "value": math.log(a["value"] / b["value"]),
            "uncertainty": math.hypot(a["sem"] / a["value"], b["sem"] / b["value"]), "unit_values": "nm^2/ps",
            "error_components": (a["sem"] / a["value"], b["sem"] / b["value"]), "context": note}


def _kinetic_records(row, ref, target_k, reference_ok):
    out = []
    for k in KINDS:
        if row.kinetic is None:
            out.append(_na(f"kinetic_vs_target.{k}", "no kinetic temperatures recorded for the row"))
        elif target_k is None:
            out.append(_na(f"kinetic_vs_target.{k}", "no target temperature given"))
        else:
            v, e = row.kinetic[k]
            out.append({"metric": f"kinetic_vs_target.{k}", "row_value": v, "row_uncertainty": e,
                        "reference_value": float(target_k), "reference_uncertainty": 0.0,
                        "value": v - float(target_k), "uncertainty": e, "context": "reference column: the target"})
    if row.kinetic is None:
        out.append(_na("kinetic_split.O_minus_H", "no kinetic temperatures recorded for the row"))
    else:
        v, e = row.kinetic_split
        out.append({"metric": "kinetic_split.O_minus_H", "row_value": v, "row_uncertainty": e,
                    "reference_value": 0.0, "reference_uncertainty": 0.0, "value": v, "uncertainty": e,
                    "context": "reference column: equipartition (0)"})
    for k in KINDS:
        key = f"kinetic_vs_reference.{k}"
        if row.kinetic is None or ref.kinetic is None:
            out.append(_na(key, "no kinetic temperatures" + (" in the reference" if ref.kinetic is None else "")))
            continue
        rec = _diff_record(key, *row.kinetic[k], *ref.kinetic[k])
        if not reference_ok:
            rec["skipped"] = "the reference is out of equipartition (see the equipartition table): matching it is no test"
        out.append(rec)
    return out


def _spectrum_records(row, ref):
    out = []
    for band, (lo, hi) in analysis.SPECTRAL_BANDS.items():
        key = f"vacf.{band}_band"
        if row.spectrum is None or ref.spectrum is None:
            out.append(_na(key, "no velocities" + (" in the reference" if ref.spectrum is None else "")))
            continue
        low = min(row.spectrum["nyquist_cm1"], ref.spectrum["nyquist_cm1"])
        if hi > low:
            which = "reference" if ref.spectrum["nyquist_cm1"] <= row.spectrum["nyquist_cm1"] else "row"
            dt = (ref if which == "reference" else row).spectrum["dt_ps"]
            out.append(_na(key, f"{which} velocities every {1000 * dt:g} fs: Nyquist {low:.0f} cm^-1 is below "
                                f"the band's window {lo:g}-{hi:g} cm^-1"))
            continue
        if _masses_differ(row, ref):
            out.append(_na(key, _masses_differ(row, ref)))
            continue
        if not light_water(ref.hydrogen_mass_amu):
            out.append(_na(key, f"hydrogen mass {ref.hydrogen_mass_amu:g} amu: the band windows "
                                f"({lo:g}-{hi:g} cm^-1) are those of light water"))
            continue
        resolution = _spectral_resolution_cm1(row.spectrum["lag_ps"])
        if resolution > (hi - lo) / 2:
            out.append(_na(key, f"velocity series allow a VACF lag of {1000 * row.spectrum['lag_ps']:.3g} fs only: "
                                f"a resolution of {resolution:.0f} cm^-1, coarser than half the band's window "
                                f"{lo:g}-{hi:g} cm^-1 (record longer velocity series)"))
            continue
        a, b = row.spectrum, ref.spectrum
        out.append(_diff_record(key, a["bands"][band], a["bands_sem"][band], b["bands"][band], b["bands_sem"][band]))
    return out


def _spectral_resolution_cm1(lag_ps):
    """Frequency resolution (cm^-1) of a spectrum from a VACF cut at lag_ps: 1 / (c lag)."""
    return 1.0 / (2.99792458e-2 * lag_ps)  # c in cm/ps


def _welch_dof(rec, row_dof, ref_dof):
    """Degrees of freedom of a record's uncertainty (Welch-Satterthwaite for a difference)."""
    # a ratio's uncertainty adds relative errors: those are the components
    a, b = rec.get("error_components", (rec.get("row_uncertainty"), rec.get("reference_uncertainty")))
    if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)):
        return max(min(row_dof, ref_dof), 1)
    if b == 0.0:
        return max(row_dof, 1)
    den = (a**4 / max(row_dof, 1) if a > 0 else 0.0) + (b**4 / max(ref_dof, 1) if b > 0 else 0.0)
    return float((a * a + b * b) ** 2 / den) if den > 0 else max(min(row_dof, ref_dof), 1)


def _ratio_error(ratio, *relative):
    """Error of a ratio from the relative errors that are known (NaN when none is)."""
    known = [e for e in relative if np.isfinite(e)]
    return ratio * math.hypot(*known) if known else math.nan


def _with_error(x):
    if isinstance(x, (tuple, list)):
        return float(x[0]), float(x[1])
    return float(x), math.nan


# --------------------------------------------------------------------------- judging

def _judge(rec, spec, confidence, family: int = 1):
    """Fill threshold, kind, outcome, passed and note into rec.

    outcome: "pass" when value +- z sigma lies inside the threshold, "fail" when value
    +- z_fail sigma lies outside, "inconclusive" otherwise or when sigma is unknown; z is Student's t quantile of
    the two-sided `confidence` for the record's degrees of freedom (few blocks or runs
    widen the interval). A row fails when any of its `family` metrics fails, so a fail
    decision must hold with all of them looked at, or a row of good metrics fails by
    chance in some runs: z_fail is z times the ratio of the normal quantiles at the
    family-wise (Bonferroni) and the single confidence. Student's t at the Bonferroni
    level itself would make 2-3 runs unable to fail anything (t_1 = 840 for 30 metrics).
    "n/a" when the data cannot measure the metric, "reported" when it has no threshold.
    passed: True, False or None.
    """
    from scipy.stats import norm
    from scipy.stats import t as student_t

    def t_quantile(dof):
        return float(student_t.ppf(0.5 + 0.5 * confidence, max(dof, 1)))

    z = t_quantile(rec.get("dof", 1e6))
    alpha = 1.0 - confidence
    family_factor = float(norm.ppf(1.0 - 0.5 * alpha / max(family, 1)) / norm.ppf(1.0 - 0.5 * alpha))
    z_fail = z * family_factor
    label, unit = METRICS[rec["metric"]]
    rec.update({"label": label, "unit": unit, "threshold": None, "kind": None, "passed": None,
                "outcome": "n/a", "note": rec.pop("skipped", ""), "interval": None})
    if rec["note"]:
        return rec
    row_v, ref_v = rec.get("row_value"), rec.get("reference_value")
    if row_v is not None and ref_v is not None and (np.isnan(row_v) or np.isnan(ref_v)):
        if np.isnan(row_v) and np.isnan(ref_v):
            rec["note"] = "absent in row and reference: nothing to compare"
            return rec
        rec["note"] = "absent in row, present in reference" if np.isnan(row_v) else \
            "present in row, absent in reference"
        # One curve's shoulder can be lifted over MIN_PEAK_PROMINENCE by noise: a mismatch
        # fails only when the present side's peak stands higher than the other side's
        # prominence by more than that threshold, beyond noise at the fail confidence.
        presence = rec.get("presence")
        decided, why = True, ""
        if presence:
            (p_row, e_row, dof_row), (p_ref, e_ref, dof_ref) = presence["row"], presence["reference"]
            diff = (p_row - p_ref) * (1.0 if np.isnan(ref_v) else -1.0)
            e = math.hypot(*(x if np.isfinite(x) else 0.0 for x in (e_row, e_ref)))
            margin = t_quantile(_welch_dof({"error_components": (e_row, e_ref)}, dof_row, dof_ref)) * family_factor * e
            decided = diff - margin > analysis.MIN_PEAK_PROMINENCE
            why = (f"; peak prominence {p_row:.3g} ± {e_row:.2g} (row), {p_ref:.3g} ± {e_ref:.2g} (reference): "
                   f"they differ by {diff:.3g} - {margin:.2g} (noise), "
                   f"{'more' if decided else 'not more'} than the presence threshold {analysis.MIN_PEAK_PROMINENCE}")
        rec["note"] += why
        if spec is not None:
            rec.update(threshold=float(spec.get("max", spec.get("min"))), kind="max" if "max" in spec else "min",
                       outcome="fail" if decided else "inconclusive", passed=False if decided else None)
        return rec
    if spec is None:
        rec.update(outcome="reported", note="no threshold: reported only")
        return rec
    kind = "max" if "max" in spec else "min"
    thr = float(spec[kind])
    v, sigma = float(rec["value"]), rec["uncertainty"]
    notes = []
    unknown = sigma is None or not np.isfinite(sigma)
    if unknown:  # e.g. a feature found in one run or block only: a value without its noise decides nothing
        sigma = 0.0
        notes.append("uncertainty unknown (fewer than two runs or blocks gave a value): undecided")
    # interval: [the fail test's lower end, the pass test's upper end] for "max", the
    # other way round for "min"; equal z's when family is 1
    if kind == "max":
        lo, hi = max(abs(v) - rec.get("noise_bias", 0.0) - z_fail * sigma, 0.0), abs(v) + z * sigma
        outcome = "pass" if hi <= thr else "fail" if lo > thr else "inconclusive"
        shown = f"|value| - {z_fail:.2f}σ, |value| + {z:.2f}σ = [{lo:.3g}, {hi:.3g}] against max {thr:.3g}"
    else:
        lo, hi = v - z * sigma, v + z_fail * sigma
        outcome = "pass" if lo >= thr else "fail" if hi < thr else "inconclusive"
        shown = f"value - {z:.2f}σ, value + {z_fail:.2f}σ = [{lo:.3g}, {hi:.3g}] against min {thr:.3g}"
    if unknown:
        outcome = "inconclusive"
    rec.update({"threshold": thr, "kind": kind, "outcome": outcome, "interval": [lo, hi], "z": z,
                "z_fail": z_fail, "family": family, "passed": {"pass": True, "fail": False}.get(outcome)})
    rec["note"] = "; ".join([shown] + notes)
    return rec


def _blow_up_record(notes, survived: int) -> dict:
    """stability.blow_ups of a row: how many of its runs blew up (exact: no uncertainty)."""
    n = len(notes)
    return {"metric": "stability.blow_ups", "value": float(n), "uncertainty": 0.0, "row_value": float(n),
            "reference_value": 0.0, "dof": 1e6, "reference_uncertainty": 0.0,
            "context": f"{n} of {n + survived} runs blew up: " + "; ".join(notes) if n else "no run blew up"}


def _floor_value(rec):
    """What a half-vs-half record says about the noise: |difference|, or the overlap itself."""
    v = rec["value"]
    if v is None or not np.isfinite(v) or rec["metric"] == "cost.speedup":
        return None
    return float(v) if rec["metric"].endswith(".overlap") else abs(float(v))


def _reference_needed_ps(rec, spec, span_ps):
    """Reference length (ps) at which its own error alone uses half the threshold at z sigma
    (errors fall as 1/sqrt(length)); None when unknown."""
    e = rec.get("reference_uncertainty")
    if spec is None or e is None or not np.isfinite(e) or e <= 0:
        return None
    thr = float(spec.get("max", spec.get("min")))
    margin = thr if "max" in spec else max(1.0 - thr, 1e-9)  # an overlap's distance from 1
    return float(span_ps * (2 * rec.get("z", 2.0) * e / margin) ** 2)


def reference_equipartition(ref: _Profile, target_k, tolerance_k, confidence) -> dict:
    """The reference's kinetic temperatures against the target: {kind: (T, sem, outcome)}, "ok"."""
    if ref.kinetic is None or target_k is None:
        return {"ok": True, "kinds": {}, "why": "no reference velocities or target"}
    kinds = {}
    for k in KINDS:
        v, e = ref.kinetic[k]
        rec = _judge({"metric": f"kinetic_vs_target.{k}", "value": v - target_k, "uncertainty": e,
                      "row_value": v, "reference_value": target_k, "dof": ref.dof}, {"max": tolerance_k}, confidence,
                     len(KINDS))
        kinds[k] = {"value": v, "uncertainty": e, "outcome": rec["outcome"]}
    return {"ok": all(x["outcome"] != "fail" for x in kinds.values()), "kinds": kinds}


# --------------------------------------------------------------------------- entry point

def _as_runs(row):
    if isinstance(row, (list, tuple)):
        rows = [r if isinstance(r, Row) else Row(r) for r in row]
    else:
        rows = [row if isinstance(row, Row) else Row(row)]
    if not rows:
        raise ValueError("a row with no runs")
    return rows


def validate(reference, rows: dict, *, out_dir, thresholds=None, cost: dict | None = None,
             equilibration_ps: float = 0.0, row_equilibration_ps: float = 0.0,
             baseline: str | None = None, settings_info=None, sections=None,
             r_max: float = 0.6, n_bins: int = 120, target_temperature_k: float | None = None,
             blow_ups: dict | None = None) -> ValidationResult:
    """Compare each row with the CP2K reference; write plots, report.md and metrics.json.

    reference: mdtraj.Trajectory or Row. rows[name]: a Trajectory or Row, or a list of
    them (independent runs of one model: seeds). equilibration_ps is cut from the start
    of the reference (relative to its first frame's time) and row_equilibration_ps from
    every run; pass 0 for runs the caller already cut. cost: {"cp2k_seconds_per_step": s,
    name: s} (floats or (value, uncertainty)); it overrides the seconds_per_step of the
    Row objects. baseline: the name of a row (e.g. the classical SPC/Fw model) that other
    rows must beat; judged and reported but not counted in .passed.
    target_temperature_k: the thermostat target (kinetic temperatures are judged against
    it). settings_info: dict or list of provenance lines for the report. sections:
    extra report sections, dicts with "title" and any of "text" (lines), "table"
    ({"header": [...], "rows": [[...]]}) and "plots" (PNG paths, copied here).
    blow_ups: {row name: [what stopped each run that blew up]}: the row's surviving runs
    are in rows (a row whose every run blew up is absent there), and its metric
    stability.blow_ups counts them (threshold max 0: one blow-up fails the row).
    """
    cfg = load_thresholds(thresholds)
    n_blocks, confidence = int(cfg.get("n_blocks", 4)), float(cfg.get("confidence", 0.95))
    window = tuple(cfg.get("diffusion_window_ps", analysis.DIFFUSION_WINDOW_PS))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref_row = reference if isinstance(reference, Row) else Row(reference)
    groups = {name: _as_runs(r) for name, r in rows.items()}
    blow_ups = {name: list(v) for name, v in (blow_ups or {}).items()}
    if not groups:
        raise ValueError("no rows to validate")
    if baseline is not None and baseline not in groups:
        raise ValueError(f"baseline {baseline!r} is not one of the rows {list(groups)}")
    cost = dict(cost or {})
    cp2k_seconds = cost.pop("cp2k_seconds_per_step", ref_row.seconds_per_step)

    ref_run = _Run.of_row(ref_row, equilibration_ps)
    row_runs = {n: [_Run.of_row(r, row_equilibration_ps) for r in g] for n, g in groups.items()}
    with_v = [[ref_run.velocities]] if ref_run.velocities is not None else []
    with_v += [[r.velocities for r in runs] for runs in row_runs.values()
               if all(r.velocities is not None for r in runs)]
    lag = vacf_lag(with_v, VACF_MAX_LAG_PS) if with_v else None

    def profile(runs, first: Row):
        blocks = n_blocks
        if len(runs) == 1 and _langevin(first):
            # Langevin friction on every degree of freedom: block errors of the bundled
            # reference level off by 0.3 ps blocks (validation/README.md), so blocks of
            # min_block_ps give its errors more degrees of freedom
            n = runs[0].traj.n_frames
            covered = runs[0].span_ps * n / max(n - 1, 1)  # each frame stands for one spacing
            blocks = max(n_blocks, min(int(cfg.get("max_blocks", n_blocks)),
                                       int(covered / float(cfg.get("min_block_ps", math.inf)) + 1e-9)))
        return _Profile(runs, blocks, r_max, n_bins, lag, window, first.heat_per_ps, first.net_force,
                        first.hydrogen_mass_amu, first.temperature_atoms, first.thermostat, first.friction_per_ps)

    ref = profile([ref_run], ref_row)
    # Noise floor: the first half of the reference against its second half.
    half1, half2 = (profile([h], Row(None)) for h in ref_run.blocks(2))
    floors = {rec["metric"]: _floor_value(rec) for rec in _compare(half1, half2, target_k=target_temperature_k)}
    tolerance = (cfg["metrics"].get("kinetic_vs_target.O") or {"max": 15.0})["max"]
    ref_eq = reference_equipartition(ref, target_temperature_k, tolerance, confidence)

    profiles, metrics, rows_passed, verdicts = {}, [], {}, {}
    only_blow_ups = [n for n in blow_ups if n not in groups]  # every run blew up: nothing else to judge
    for name, runs in row_runs.items():
        first = groups[name][0]
        try:
            prof = profile(runs, first)
        except ValidationError:
            if name not in blow_ups:
                raise
            only_blow_ups.append(name)  # what survived is too short to judge: the blow-ups decide
            continue
        profiles[name] = prof
        seconds = cost.get(name, _mean_seconds(groups[name]))
        recs = _compare(prof, ref, seconds, cp2k_seconds, target_temperature_k, ref_eq["ok"])
        recs.append(_blow_up_record(blow_ups.get(name, []), len(runs)))
        family = sum(cfg["metrics"].get(r["metric"]) is not None and not r.get("skipped") for r in recs) \
            if cfg.get("family_wise_fail", True) else 1
        recs = [_judge(rec, cfg["metrics"].get(rec["metric"]), confidence, family) for rec in recs]
        for rec in recs:
            rec["row"] = name
            rec["noise_floor"] = floors.get(rec["metric"])
            rec["reference_needed_ps"] = _reference_needed_ps(rec, cfg["metrics"].get(rec["metric"]),
                                                              ref.duration_ps)
            rec["seeds"] = len(runs)
        metrics.extend(recs)
        outcomes = {m["outcome"] for m in recs}
        rows_passed[name] = "fail" not in outcomes
        verdicts[name] = "FAIL" if "fail" in outcomes else "INCONCLUSIVE" if "inconclusive" in outcomes else "PASS"
    for name in only_blow_ups:
        survived = len(row_runs.get(name, []))
        rec = _judge(_blow_up_record(blow_ups[name], survived), cfg["metrics"].get("stability.blow_ups"), confidence)
        rec.update(row=name, seeds=len(blow_ups[name]) + survived)
        metrics.append(rec)
        rows_passed[name] = rec["outcome"] != "fail"
        verdicts[name] = "FAIL" if rec["outcome"] == "fail" else "INCONCLUSIVE"
    if baseline is not None:
        _mark_beats_baseline(metrics, baseline)
    judged = [n for n in groups if n != baseline] or list(groups)
    passed = all(rows_passed[n] for n in judged)
    overall = overall_verdict(metrics, baseline)

    plots = _plot_all(out_dir, ref, profiles)
    sections = [dict(sec) for sec in (sections or [])]
    for sec in sections:
        names = []
        for p in sec.get("plots", []):
            p = Path(p)
            if p.resolve() != (out_dir / p.name).resolve():
                shutil.copyfile(p, out_dir / p.name)
            names.append(p.name)
        sec["plots"] = names
    equip = equipartition_table(ref, ref_eq, profiles, metrics, target_temperature_k)
    sections.insert(0, equip["section"])
    spec_info = {n: (None if p.spectrum is None else {k: p.spectrum[k] for k in ("span_ps", "dt_ps", "nyquist_cm1")})
                 for n, p in [("reference", ref)] + list(profiles.items())}
    settings = {
        "reference_frames": ref.traj.n_frames, "reference_span_ps": ref.duration_ps,
        "reference_uncertainty_from": ref.part_kind,
        "reference_equilibration_cut_ps": equilibration_ps, "row_equilibration_cut_ps": row_equilibration_ps,
        "rows": {n: {"runs": p.seeds, "frames": sum(r.traj.n_frames for r in p.runs), "span_ps": p.duration_ps,
                     "uncertainty_from": p.part_kind} for n, p in profiles.items()},
        "target_temperature_K": target_temperature_k, "confidence": confidence,
        "family_wise_fail": bool(cfg.get("family_wise_fail", True)), "diffusion_window_ps": list(window),
        "velocity_series": spec_info, "vacf_lag_ps": lag,
        "spectral_band_windows_cm1": analysis.SPECTRAL_BANDS,
        "n_blocks": n_blocks, "rdf_r_max_nm": r_max, "rdf_bins": n_bins,
        "thresholds_schema_version": cfg["schema_version"], "thresholds_source": (
            str(thresholds) if isinstance(thresholds, (str, Path)) else
            "the package's validation/thresholds.json" + (" with overrides" if thresholds else "")),
        "baseline": baseline, "cp2k_seconds_per_step": cp2k_seconds,
    }
    reference_numbers = {p: {"features": ref.rdf[p]["features"], "uncertainty": ref.rdf[p]["features_sem"]}
                         for p in PAIRS}
    summary = summary_table(metrics, verdicts)
    report_path = out_dir / "report.md"
    report_path.write_text(_report_md(overall, verdicts, metrics, settings, settings_info, plots, summary,
                                      sections))
    html_path = out_dir / "report.html"
    html_path.write_text(_report_html(out_dir, overall, verdicts, metrics, settings, settings_info, plots,
                                      summary, sections))
    write_json_atomic(out_dir / "metrics.json", _jsonable({
        "schema_version": SCHEMA_VERSION, "overall": overall, "passed": passed, "rows_passed": rows_passed, "verdicts": verdicts,
        "settings": settings, "provenance": _provenance_lines(settings_info),
        "reference_rdf_features": reference_numbers, "noise_floor": floors, "summary": summary,
        "equipartition": equip["data"], "metrics": metrics,
        "plots": plots + [p for sec in sections for p in sec["plots"]]}))
    return ValidationResult(passed=passed, metrics=metrics, report_path=report_path,
                            rows_passed=rows_passed, out_dir=out_dir, html_path=html_path, summary=summary,
                            baseline=baseline, verdicts=verdicts, equipartition=equip["data"], overall=overall)


def _mean_seconds(rows):
    known = [_with_error(r.seconds_per_step) for r in rows if r.seconds_per_step is not None]
    if not known:
        return None
    vals = [v for v, _ in known]
    return (float(np.mean(vals)), _sem(vals) if len(vals) > 1 else known[0][1])


def equipartition_table(ref, ref_eq, profiles, metrics, target_k) -> dict:
    """Kinetic temperature of every kind of motion, reference first, with outcomes against the target."""
    header = ["row"] + [f"T {KIND_LABELS[k]} (K)" for k in KINDS] + ["against target"]
    rows, data = [], {}

    def cells(kin):
        return [("n/a" if kin is None else f"{kin[k][0]:.0f} ± {kin[k][1]:.0f}") for k in KINDS]

    if ref.kinetic is not None:
        outs = {k: ref_eq["kinds"].get(k, {}).get("outcome", "n/a") for k in KINDS}
        rows.append(["CP2K reference"] + cells(ref.kinetic) + [_outcome_summary(outs)])
        data["CP2K reference"] = {k: {"value": ref.kinetic[k][0], "uncertainty": ref.kinetic[k][1],
                                      "outcome": outs[k]} for k in KINDS}
    else:
        rows.append(["CP2K reference"] + ["n/a"] * len(KINDS) + ["no velocities"])
    for name, prof in profiles.items():
        outs = {k: next((m["outcome"] for m in metrics if m["row"] == name
                         and m["metric"] == f"kinetic_vs_target.{k}"), "n/a") for k in KINDS}
        rows.append([name] + cells(prof.kinetic) + [_outcome_summary(outs)])
        if prof.kinetic is not None:
            data[name] = {k: {"value": prof.kinetic[k][0], "uncertainty": prof.kinetic[k][1], "outcome": outs[k]}
                          for k in KINDS}
    text = [f"Kinetic temperature of each species and of each kind of molecular motion (3 degrees of freedom "
            f"per molecule each), target {target_k if target_k is not None else '?'} K; ± is the standard error "
            "(runs, or blocks of one run). In equilibrium all are equal to the target. A global thermostat "
            "(CSVR, one Nose-Hoover variable) scales every velocity by one factor and cannot restore "
            "equipartition; non-reciprocal (agent) forces break it by themselves."]
    if not ref_eq["ok"]:
        text.append("The reference is out of equipartition: the row-against-reference comparisons of kinetic "
                    "temperatures are not applicable, and the reference's dynamics (diffusion, spectra) are suspect.")
    return {"section": {"title": "Equipartition", "text": text, "table": {"header": header, "rows": rows},
                        "plots": []},
            "data": data}


def _outcome_summary(outs: dict) -> str:
    bad = [k for k, o in outs.items() if o == "fail"]
    unsure = [k for k, o in outs.items() if o == "inconclusive"]
    if bad:
        return "FAIL: " + ", ".join(bad)
    if unsure:
        return "INCONCLUSIVE: " + ", ".join(unsure)
    return "PASS" if any(o == "pass" for o in outs.values()) else "n/a"


def _mark_beats_baseline(metrics, baseline):
    base = {m["metric"]: m for m in metrics if m["row"] == baseline}
    for m in metrics:
        b = base.get(m["metric"])
        if m["row"] == baseline or b is None or m["kind"] is None or not np.isfinite(m["value"]) \
                or not np.isfinite(b["value"]):
            continue
        m["beats_baseline"] = bool(abs(m["value"]) <= abs(b["value"])) if m["kind"] == "max" \
            else bool(m["value"] >= b["value"])


# --------------------------------------------------------------------------- plots

def _plot_all(out_dir, ref, profiles) -> list:
    # Figure objects on the Agg canvas: no pyplot, no global backend switch, nothing to close.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = []

    def subplots(*args, **kw):
        fig = Figure(figsize=kw.pop("figsize"))
        FigureCanvasAgg(fig)
        return fig, fig.subplots(*args, **kw)

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        names.append(name)

    for p in PAIRS:
        fig, ax = subplots(figsize=(6, 4))
        r = ref.rdf[p]["r"]
        ax.fill_between(r, ref.rdf[p]["g"] - 2 * ref.rdf[p]["g_sem"], ref.rdf[p]["g"] + 2 * ref.rdf[p]["g_sem"],
                        color="0.8", label="CP2K +/- 2 s.e.")
        ax.plot(r, ref.rdf[p]["g"], color="k", lw=2, label="CP2K reference")
        for name, prof in profiles.items():
            ax.plot(r, prof.rdf[p]["g"], lw=1.2, label=name)
        ax.set_xlabel("r (nm)")
        ax.set_ylabel(f"g_{p}(r)  (intermolecular)")
        ax.set_title(f"g_{p}")
        ax.legend(fontsize=8)
        save(fig, f"rdf_{p}.png")
    for fname, attr, xlabel in (("bond_length.png", "bond", "O-H length (nm)"),
                                ("hoh_angle.png", "angle", "H-O-H angle (degrees)")):
        fig, ax = subplots(figsize=(6, 4))
        data = [ref.pooled(attr)] + [pr.pooled(attr) for pr in profiles.values()]
        edges = np.linspace(min(d.min() for d in data), max(d.max() for d in data), 81)
        ax.hist(data[0], edges, density=True, histtype="stepfilled", color="0.8", label="CP2K reference")
        for name, d in zip(profiles, data[1:]):
            ax.hist(d, edges, density=True, histtype="step", lw=1.3, label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("probability density (1/" + xlabel.split("(")[-1].rstrip(")") + ")")
        ax.legend(fontsize=8)
        save(fig, fname)
    # Time series (left) and distribution (right): runs of different lengths still compare.
    fig, (ax, axh) = subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    for name, prof in [("CP2K reference", ref)] + list(profiles.items()):
        if prof.temperature is not None:
            t = prof.temperature[0]  # the first run's series; the histogram pools every run
            allt = np.concatenate([x[:, 1] for x in prof.temperature])
            style = {"color": "k"} if prof is ref else {}
            line, = ax.plot(t[:, 0] - t[0, 0], t[:, 1], lw=0.8,
                            label=f"{name} ({allt.mean():.1f} ± {allt.std():.1f} K)", **style)
            axh.hist(allt, 30, density=True, histtype="step", lw=1.3, color=line.get_color(),
                     orientation="horizontal")
    if not ax.lines:
        ax.text(0.5, 0.5, "no temperature series given", ha="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel("time since cut (ps)")
    ax.set_ylabel("temperature (K)")
    axh.set_xlabel("probability density (1/K)")
    axh.set_ylabel("temperature (K)")
    save(fig, "temperature.png")
    fig, ax = subplots(figsize=(6, 4))
    for name, prof in [("CP2K reference", ref)] + list(profiles.items()):
        # the mean MSD of the runs, over the lags the shortest run resolves
        curves = [analysis.msd_oxygen(run.traj) for run in prof.runs]
        n = min(len(c[0]) for c in curves)
        ax.plot(curves[0][0][:n], np.mean([c[1][:n] for c in curves], axis=0), label=name,
                **({"color": "k", "lw": 2} if prof is ref else {}))
    lo, hi = ref.diffusion["window"] if ref.diffusion else analysis.DIFFUSION_WINDOW_PS
    ax.axvspan(lo, hi, color="0.93", zorder=0, label="diffusion fit window")
    ax.set_xlabel("lag time (ps)")
    ax.set_ylabel("O mean-squared displacement (nm$^2$)")
    box = np.mean(ref.traj.unitcell_lengths, axis=0)
    ax.set_title(f"{ref.traj.n_residues} molecules, box {box[0]:.3f} nm", fontsize=9)
    ax.legend(fontsize=8)
    save(fig, "msd.png")
    with_spec = [(n, p) for n, p in [("CP2K reference", ref)] + list(profiles.items()) if p.spectrum is not None]
    if with_spec:
        fig, (ax, axs) = subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 2]})
        for name, prof in with_spec:
            sp = prof.spectrum
            style = {"color": "k", "lw": 2} if prof is ref else {"lw": 1.2}
            ax.plot(sp["t"] * 1000, sp["vacf"], label=name, **style)
            axs.plot(sp["nu"], sp["intensity"] * 1000, label=name, **style)
        for lo, hi in analysis.SPECTRAL_BANDS.values():
            axs.axvspan(lo, hi, color="0.93", zorder=0)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("lag time (fs)")
        ax.set_ylabel("H velocity autocorrelation (normalised)")
        axs.set_xlim(0, 4500)
        axs.set_xlabel("wavenumber (cm$^{-1}$); shaded: libration, bend, stretch windows")
        axs.set_ylabel("H vibrational spectrum (10$^{-3}$ cm)")
        axs.legend(fontsize=8)
        save(fig, "vacf.png")
    return names


# --------------------------------------------------------------------------- report

def _fmt(v, e=None):
    if v is None:
        return ""
    if isinstance(v, float) and not np.isfinite(v):
        return "n/a"
    s = f"{v:.4g}"
    if e is not None and isinstance(e, float) and np.isfinite(e):
        s += f" ± {e:.2g}"
    return s


def _round(x):
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    return x


def _provenance_lines(info):
    if info is None:
        return []
    if isinstance(info, dict):
        return [f"{k}: {v}" for k, v in info.items()]
    if isinstance(info, str):
        return [info]
    return [str(x) for x in info]


def summary_table(metrics, verdicts) -> dict:
    """{"header": [...], "rows": [[...]]}: the CP2K reference and every row, one line each.

    The reference line holds the reference's numbers and, in difference columns, the
    reference's own half-vs-half floor.
    """
    header = ["row"] + [c[0] for c in SUMMARY_COLUMNS] + ["pass / fail / inconclusive / n/a"]
    by = {(m["row"], m["metric"]): m for m in metrics}
    first = next(iter(verdicts))

    def one(rec, source, scale, fmt, reference):
        if rec is None:
            return "–"
        if source == "value":
            v = rec.get("noise_floor") if reference else rec.get("value")
            prefix = "floor " if reference else ""
        else:
            v = rec.get("reference_value" if reference else "row_value")
            prefix = ""
        if v is None or not np.isfinite(v):
            return "–" if reference and source == "value" else "n/a"
        return prefix + fmt.format(v * scale)

    def cell(name, key, source, scale, fmt, reference=False):
        if source.startswith("pair:"):  # several row values in one cell, e.g. T_O / T_H
            keys = [key] + source.split(":")[1:]
            return " / ".join(one(by.get((name, k)), "row", scale, fmt, reference) for k in keys)
        return one(by.get((name, key)), source, scale, fmt, reference)

    table = [["CP2K reference"] + [cell(first, key, src, sc, fmt, True)
                                   for _, key, src, sc, fmt in SUMMARY_COLUMNS] + ["–"]]
    for name, verdict in verdicts.items():
        recs = [m for m in metrics if m["row"] == name]
        counts = "/".join(str(sum(m["outcome"] == o for m in recs)) for o in ("pass", "fail", "inconclusive", "n/a"))
        table.append([name] + [cell(name, key, src, sc, fmt) for _, key, src, sc, fmt in SUMMARY_COLUMNS]
                     + [f"{counts} {verdict}"])
    return {"header": header, "rows": table}


def _note(m) -> str:
    note = m["note"]
    for extra in ([f"reference and row in {m['unit_values']}"] if m.get("unit_values") else []) + \
            ([m["context"]] if m.get("context") else []) + \
            ([("beats baseline" if m["beats_baseline"] else "worse than baseline")] if "beats_baseline" in m else []):
        note = (note + "; " if note else "") + extra
    return note


_LEGEND = ("Values are row − reference unless the metric says otherwise; a row's value is the mean of its "
           "independent runs and ± is the standard error (between those runs: their spread is √n times it; "
           "between blocks for the reference's one run); *floor* is the same "
           "number for the reference's first half against its second half. Outcomes: PASS when value ± zσ "
           "lies inside the threshold, FAIL when value ± z_fail σ lies outside (z_fail at the family-wise "
           "confidence of the row's judged metrics: a row fails when any one fails), INCONCLUSIVE when it straddles it (the data "
           "cannot decide), n/a when the data cannot measure the metric (the note says why); n/a and "
           "inconclusive never count as passes. 'needs': the reference length (ps) at which its own error "
           "would use half the threshold.")
_METRIC_HEADER = ["metric", "unit", "reference", "row", "value", "floor", "threshold", "outcome", "needs (ps)",
                  "note"]


def _metric_cells(m):
    thr = "" if m["threshold"] is None else f"{m['kind']} {_fmt(m['threshold'])}"
    needs = m.get("reference_needed_ps")
    return [m["metric"], m["unit"], _fmt(m.get("reference_value"), m.get("reference_uncertainty")),
            _fmt(m.get("row_value"), m.get("row_uncertainty")), _fmt(m["value"], m["uncertainty"]),
            _fmt(m.get("noise_floor")), thr, m["outcome"].upper(), "" if needs is None else f"{needs:.3g}",
            _note(m)]


def _verdict_lines(overall, verdicts, metrics, settings):
    head = f"Overall: {overall}" + (
        f" (baseline row `{settings['baseline']}` does not count)" if settings["baseline"] else "")
    lines = []
    for name, verdict in verdicts.items():
        recs = [m for m in metrics if m["row"] == name]
        n = {o: sum(m["outcome"] == o for m in recs) for o in OUTCOMES}
        seeds = recs[0].get("seeds", 1) if recs else 1
        lines.append(f"`{name}` ({seeds} run{'s' if seeds != 1 else ''}): {verdict} ({n['pass']} pass, "
                     f"{n['fail']} fail, {n['inconclusive']} inconclusive, {n['n/a']} n/a, "
                     f"{n['reported']} reported)")
    return head, lines


def _md_table(header, rows):
    esc = lambda x: str(x).replace("|", "\\|")  # noqa: E731
    return (["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows])


def _report_md(overall, rows_passed, metrics, settings, info, plots, summary, sections) -> str:
    head, lines = _verdict_lines(overall, rows_passed, metrics, settings)
    out = ["# Validation against CP2K", "", f"**{head}**", ""] + [f"- {x}" for x in lines]
    out += ["", "## Summary", ""] + _md_table(summary["header"], summary["rows"])
    out += ["", _LEGEND, ""]
    for name in rows_passed:
        rows = []
        for m in (m for m in metrics if m["row"] == name):
            cells = _metric_cells(m)
            cells[7] = "**FAIL**" if cells[7] == "FAIL" else cells[7]
            rows.append(cells)
        out += [f"## {name}", ""] + _md_table(_METRIC_HEADER, rows) + [""]
    for sec in sections:
        out += [f"## {sec['title']}", ""] + list(sec.get("text", []))
        if sec.get("table"):
            out += [""] + _md_table(sec["table"]["header"], sec["table"]["rows"])
        out += [""] + [f"![{p}]({p})" for p in sec.get("plots", [])] + [""]
    out += ["## Settings", ""]
    for k, v in _jsonable(settings).items():
        out.append(f"- {k}: {_round(v)}")
    prov = _provenance_lines(info)
    if prov:
        out += ["", "## Provenance", ""] + [f"- {line}" for line in prov]
    out += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(out)


_CSS = """body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f0f0f0}.PASS{color:#070}.FAIL{color:#b00;font-weight:bold}.INCONCLUSIVE{color:#b60}
img{max-width:100%;margin:0.5em 0}code{background:#f4f4f4}"""


def _report_html(out_dir, overall, rows_passed, metrics, settings, info, plots, summary, sections) -> str:
    """One self-contained HTML page: the plots are embedded as base64 PNG."""
    e = html.escape

    def table(header, rows, verdict_col=None):
        out = ["<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>"]
        for r in rows:
            cells = []
            for k, c in enumerate(r):
                c = str(c)
                cls = ""
                if k == verdict_col or (verdict_col == -1 and k == len(r) - 1):
                    cls = next((f" class='{w}'" for w in ("FAIL", "INCONCLUSIVE", "PASS") if w in c), "")
                cells.append(f"<td{cls}>{e(c)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        return "\n".join(out + ["</table>"])

    def img(name):
        data = base64.b64encode((Path(out_dir) / name).read_bytes()).decode("ascii")
        return f"<figure><img alt='{e(name)}' src='data:image/png;base64,{data}'><figcaption>{e(name)}</figcaption></figure>"

    head, lines = _verdict_lines(overall, rows_passed, metrics, settings)
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Validation against CP2K</title>",
           f"<style>{_CSS}</style></head><body>", "<h1>Validation against CP2K</h1>",
           f"<p class='{overall}'><b>{e(head)}</b></p><ul>"]
    out += [f"<li>{e(x)}</li>" for x in lines] + ["</ul>", "<h2>Summary</h2>",
                                                  table(summary["header"], summary["rows"], -1),
                                                  f"<p>{e(_LEGEND)}</p>"]
    out += ["<h2>Overlays</h2>"] + [img(p) for p in plots]
    for name in rows_passed:
        out += [f"<h2>{e(name)}</h2>",
                table(_METRIC_HEADER, [_metric_cells(m) for m in metrics if m["row"] == name], 7)]
    for sec in sections:
        out += [f"<h2>{e(sec['title'])}</h2>"] + [f"<p>{e(t)}</p>" for t in sec.get("text", []) if t]
        if sec.get("table"):
            out.append(table(sec["table"]["header"], sec["table"]["rows"]))
        out += [img(p) for p in sec.get("plots", [])]
    out += ["<h2>Settings</h2><ul>"] + [f"<li>{e(k)}: {e(str(_round(v)))}</li>" for k, v in _jsonable(settings).items()]
    out += ["</ul>"]
    prov = _provenance_lines(info)
    if prov:
        out += ["<h2>Provenance</h2><ul>"] + [f"<li>{e(x)}</li>" for x in prov] + ["</ul>"]
    out += ["</body></html>", ""]
    return "\n".join(out)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x
