"""Compare simulated water trajectories ("rows") with a CP2K reference trajectory.

``validate(reference, rows, out_dir=...)`` computes, for every row against the
reference: g_OO, g_OH, g_HH features and integrated |dg|, O-H length and H-O-H angle
distributions, hydrogen bonds per molecule, O self-diffusion, temperature mean and
fluctuation, the vibrational bands of the hydrogen velocity autocorrelation, the
thermostat's heat and the net force (reported), and the cost ratio CP2K / row.
Every number carries a block-average
uncertainty and is judged against a threshold from ``validation/thresholds.json``.
The reference's own noise floor (its first half against its second half) is reported
next to each metric, and a threshold is raised to ``noise_floor_factor`` times that
floor when the reference is too short to resolve the threshold (DESIGN.md section 4).
Writes PNG plots, ``report.md``, a self-contained ``report.html`` (plots embedded)
and ``metrics.json`` to ``out_dir``. ``validation_suite`` runs the simulations that
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

from . import analysis

PAIRS = ("OO", "OH", "HH")
SCHEMA_VERSION = 1
DEFAULT_THRESHOLDS = Path(__file__).resolve().parents[1] / "validation" / "thresholds.json"

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
    "vacf.libration_band": ("H spectrum: libration band position", "cm^-1"),
    "vacf.bend_band": ("H spectrum: H-O-H bend band position", "cm^-1"),
    "vacf.stretch_band": ("H spectrum: O-H stretch band position", "cm^-1"),
    "thermostat.heat_per_ps": ("heat the thermostat removes per ps (row value, not a difference)", "kJ/mol/ps"),
    "forces.net_force": ("mean |net force on all atoms| (row value, not a difference)", "kJ/mol/nm"),
    "cost.speedup": ("speed-up, CP2K s/step / row s/step", "x"),
})

#: Longest lag (ps) of the velocity autocorrelation whose spectrum gives the bands.
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
    ("σ_T (K)", "temperature.std", "row", 1.0, "{:.1f}"),
    ("libration (cm⁻¹)", "vacf.libration_band", "row", 1.0, "{:.0f}"),
    ("bend (cm⁻¹)", "vacf.bend_band", "row", 1.0, "{:.0f}"),
    ("stretch (cm⁻¹)", "vacf.stretch_band", "row", 1.0, "{:.0f}"),
    ("heat (kJ/mol/ps)", "thermostat.heat_per_ps", "row", 1.0, "{:.0f}"),
    ("|F_net| (kJ/mol/nm)", "forces.net_force", "row", 1.0, "{:.3g}"),
    ("ms / step", "cost.speedup", "row", 1000.0, "{:.3g}"),
    ("speed-up", "cost.speedup", "value", 1.0, "{:.0f}"),
)


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
    used whole (e.g. a recording made after the run). heat_per_ps: heat the thermostat
    removes (kJ/mol/ps); net_force: mean |sum of all forces| (kJ/mol/nm).
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


@dataclass
class ValidationResult:
    """passed: every judged metric of every non-baseline row passed. metrics: one record
    (dict) per row and metric, as in metrics.json. report_path: report.md."""

    passed: bool
    metrics: list
    report_path: Path
    rows_passed: dict = field(default_factory=dict)
    out_dir: Path | None = None
    html_path: Path | None = None
    summary: dict = field(default_factory=dict)
    baseline: str | None = None

    def metric(self, row: str, key: str) -> dict:
        """The record of one metric of one row."""
        for m in self.metrics:
            if m["row"] == row and m["metric"] == key:
                return m
        raise KeyError((row, key))

    def failed(self, row: str | None = None) -> list:
        """Records that failed (of one row, or of all rows)."""
        return [m for m in self.metrics if m["passed"] is False and (row is None or m["row"] == row)]


# --------------------------------------------------------------------------- thresholds

def load_thresholds(thresholds=None) -> dict:
    """The thresholds config: the default file, a path, or a dict merged over the default.

    A dict may hold only what it changes, e.g. {"metrics": {"rdf_OO.integrated_abs_diff": {"max": 0.3}}}
    or {"noise_floor_factor": 0}; a metric set to None is reported but not judged.
    """
    if isinstance(thresholds, (str, Path)):
        cfg = json.loads(Path(thresholds).read_text())
    else:
        if not DEFAULT_THRESHOLDS.exists():
            raise FileNotFoundError(
                f"default thresholds {DEFAULT_THRESHOLDS} not found (not a source checkout?): pass thresholds=")
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


# --------------------------------------------------------------------------- per-trajectory numbers

def _cut(traj, ps):
    if not ps:
        return traj
    keep = traj.time >= traj.time[0] + ps - 1e-9
    if keep.sum() < 2:
        raise ValueError(f"cutting {ps} ps leaves fewer than 2 frames")
    return traj[np.flatnonzero(keep)]


def _temperature_series(row: Row, ps):
    if row.temperature is None:
        return None
    temp = np.asarray(row.temperature, float)
    times = row.temperature_times_ps
    if times is None:
        if len(temp) != row.traj.n_frames:
            raise ValueError(f"{len(temp)} temperatures for {row.traj.n_frames} frames: give temperature_times_ps")
        times = row.traj.time
    times = np.asarray(times, float)
    keep = times >= times[0] + (ps or 0.0) - 1e-9
    return np.column_stack([times[keep], temp[keep]])


def _velocity_series(row: Row, ps):
    """(velocities, dt) after the equilibration cut (only when times are given), or None."""
    if row.velocities is None:
        return None
    v = np.asarray(row.velocities)
    dt = row.velocity_dt_ps
    if row.velocity_times_ps is not None:
        times = np.asarray(row.velocity_times_ps, float)
        if len(times) != len(v):
            raise ValueError(f"{len(times)} velocity times for {len(v)} velocity frames")
        if dt is None:
            dt = float(np.median(np.diff(times)))
        v = v[times >= times[0] + (ps or 0.0) - 1e-9]
    if dt is None:
        raise ValueError("velocities need velocity_dt_ps or velocity_times_ps")
    return v, float(dt)


class _Profile:
    """Everything computed once per trajectory, with block standard errors."""

    def __init__(self, traj, temperature, n_blocks, r_max, n_bins, velocities=None,
                 heat_per_ps=None, net_force=None):
        self.traj, self.temperature, self.n_blocks = traj, temperature, n_blocks
        self.heat_per_ps, self.net_force = heat_per_ps, net_force
        self.duration_ps = float(traj.time[-1] - traj.time[0])
        self.spectrum = None
        if velocities is not None:
            v, dt = velocities
            t, c, nu, spec, bands = analysis.hydrogen_spectrum(v, dt, traj.topology, VACF_MAX_LAG_PS)
            sem = analysis.standard_error([analysis.hydrogen_spectrum(b, dt, traj.topology, VACF_MAX_LAG_PS)[4]
                                           for b in analysis.blocks(v, n_blocks)])
            self.spectrum = {"t": t, "vacf": c, "nu": nu, "intensity": spec, "bands": bands,
                             "bands_sem": sem, "span_ps": len(v) * dt, "dt_ps": dt}
        self.rdf = {}
        for p in PAIRS:
            rho = analysis.partner_density(traj, p)
            r, g = analysis.rdf(traj, p, r_max, n_bins)
            g_blocks = [analysis.rdf(b, p, r_max, n_bins)[1] for b in analysis.blocks(traj, n_blocks)]
            feats_blocks = [analysis.rdf_features(r, gb, rho, p) for gb in g_blocks]
            self.rdf[p] = {"r": r, "g": g, "g_sem": np.std(g_blocks, axis=0, ddof=1) / math.sqrt(n_blocks),
                           "features": analysis.rdf_features(r, g, rho, p),
                           "features_sem": analysis.standard_error(feats_blocks)}
        self.bond = analysis.bond_lengths(traj)
        self.angle = analysis.hoh_angles(traj)
        self.hbonds = analysis.hbonds_per_molecule(traj)

    def blocks(self, arr):
        return analysis.blocks(arr, self.n_blocks)

    def series_stat(self, arr, fn):
        """fn of all frames, and its block standard error."""
        return float(fn(arr)), analysis.standard_error([float(fn(b)) for b in self.blocks(arr)])


def _diffusion(traj, t_hi):
    """D (nm^2/ps) fitted on lags up to t_hi; NaN when the frames are too sparse for that."""
    dt = float(np.mean(np.diff(traj.time))) if traj.n_frames > 1 else 1.0
    t, msd = analysis.msd_oxygen(traj, max_lag=int(t_hi / dt + 1e-9))  # only the lags fitted
    sel = t <= t_hi + 1e-12
    try:
        return analysis.diffusion_coefficient(t[sel], msd[sel])
    except ValueError:
        return math.nan


def _diff_record(key, row_v, row_e, ref_v, ref_e):
    value = row_v - ref_v
    return {"metric": key, "row_value": row_v, "row_uncertainty": row_e,
            "reference_value": ref_v, "reference_uncertainty": ref_e,
            "value": value, "uncertainty": math.hypot(row_e, ref_e)}


def _compare(row: _Profile, ref: _Profile, seconds=None, cp2k_seconds=None) -> list:
    """Raw metric records (no thresholds) of row against ref."""
    out = []
    for p in PAIRS:
        a, b = row.rdf[p], ref.rdf[p]
        for feat in ("first_peak_position", "first_peak_height", "first_min_position", "coordination_number"):
            out.append(_diff_record(f"rdf_{p}.{feat}", a["features"][feat], a["features_sem"][feat],
                                    b["features"][feat], b["features_sem"][feat]))
        r = a["r"]
        # Uncertainty: the integrated block error of g_row - g_ref, the size of what noise alone adds.
        sem = np.sqrt(a["g_sem"] ** 2 + b["g_sem"] ** 2)
        out.append({"metric": f"rdf_{p}.integrated_abs_diff", "row_value": None, "row_uncertainty": None,
                    "reference_value": None, "reference_uncertainty": None,
                    "value": analysis.rdf_difference(r, a["g"], b["g"]),
                    "uncertainty": float(np.sum(sem) * (r[1] - r[0]) * analysis.ANGSTROM_PER_NM)})
    for name, x, y in (("bond_length", row.bond, ref.bond), ("hoh_angle", row.angle, ref.angle)):
        out.append(_diff_record(f"{name}.mean", *row.series_stat(x, np.mean), *ref.series_stat(y, np.mean)))
        out.append(_diff_record(f"{name}.width", *row.series_stat(x, np.std), *ref.series_stat(y, np.std)))
        blocks = [analysis.overlap_coefficient(u, v) for u, v in zip(row.blocks(x), ref.blocks(y))]
        out.append({"metric": f"{name}.overlap", "row_value": None, "row_uncertainty": None,
                    "reference_value": None, "reference_uncertainty": None,
                    "value": analysis.overlap_coefficient(x, y), "uncertainty": analysis.standard_error(blocks)})
    out.append(_diff_record("hbonds.per_molecule", *row.series_stat(row.hbonds, np.mean),
                            *ref.series_stat(ref.hbonds, np.mean)))
    box = np.mean(row.traj.unitcell_lengths, axis=0)
    size_note = (f"{row.traj.n_residues} molecules in a {' x '.join(f'{b:.3f}' for b in box)} nm box, "
                 "no finite-size correction")
    # Same MSD fit window (in ps) for both, set by the shorter run, so the slopes compare.
    t_hi = 0.5 * min(row.duration_ps, ref.duration_ps)
    d_row, d_ref = _diffusion(row.traj, t_hi), _diffusion(ref.traj, t_hi)
    e_row = analysis.standard_error([_diffusion(b, t_hi / row.n_blocks) for b in row.blocks(row.traj)])
    e_ref = analysis.standard_error([_diffusion(b, t_hi / ref.n_blocks) for b in ref.blocks(ref.traj)])
    if np.isfinite(d_row) and np.isfinite(d_ref) and d_row > 0 and d_ref > 0:
        # ln of the ratio: symmetric, so "within a factor f" is one threshold, ln f.
        out.append({"metric": "diffusion.log_ratio", "row_value": d_row, "row_uncertainty": e_row,
                    "reference_value": d_ref, "reference_uncertainty": e_ref, "value": math.log(d_row / d_ref),
                    "uncertainty": math.hypot(e_row / d_row, e_ref / d_ref), "unit_values": "nm^2/ps",
                    "context": size_note})
    else:
        out.append({"metric": "diffusion.log_ratio", "value": math.nan, "uncertainty": math.nan,
                    "skipped": f"too few frames for an MSD fit up to {t_hi:.3g} ps"})
    if row.temperature is not None and ref.temperature is not None:
        ta, tb = row.temperature[:, 1], ref.temperature[:, 1]
        out.append(_diff_record("temperature.mean", *row.series_stat(ta, np.mean), *ref.series_stat(tb, np.mean)))
        out.append(_diff_record("temperature.std", *row.series_stat(ta, np.std), *ref.series_stat(tb, np.std)))
    else:
        for key in ("temperature.mean", "temperature.std"):
            out.append({"metric": key, "value": math.nan, "uncertainty": math.nan, "skipped": "no temperature series"})
    for band in analysis.SPECTRAL_BANDS:
        key = f"vacf.{band}_band"
        if row.spectrum is None or ref.spectrum is None:
            out.append({"metric": key, "value": math.nan, "uncertainty": math.nan,
                        "skipped": "no velocities" + (" in the reference" if ref.spectrum is None else "")})
            continue
        a, b = row.spectrum, ref.spectrum
        out.append(_diff_record(key, a["bands"][band], a["bands_sem"][band], b["bands"][band], b["bands_sem"][band]))
    # Reported, not differences: a conservative run has no net force and no steady heat flow.
    for key, attr in (("thermostat.heat_per_ps", "heat_per_ps"), ("forces.net_force", "net_force")):
        a, b = getattr(row, attr), getattr(ref, attr)
        if a is None:
            out.append({"metric": key, "value": math.nan, "uncertainty": math.nan, "skipped": "not recorded"})
        else:
            out.append({"metric": key, "row_value": float(a), "row_uncertainty": math.nan,
                        "reference_value": None if b is None else float(b), "reference_uncertainty": math.nan,
                        "value": float(a), "uncertainty": math.nan})
    if seconds is not None and cp2k_seconds is not None:
        (s, se), (c, ce) = _with_error(seconds), _with_error(cp2k_seconds)
        out.append({"metric": "cost.speedup", "row_value": s, "row_uncertainty": se,
                    "reference_value": c, "reference_uncertainty": ce, "value": c / s,
                    "uncertainty": _ratio_error(c / s, se / s, ce / c), "unit_values": "s/step"})
    else:
        out.append({"metric": "cost.speedup", "value": math.nan, "uncertainty": math.nan,
                    "skipped": "no seconds per step"})
    return out


def _ratio_error(ratio, *relative):
    """Error of a ratio from the relative errors that are known (NaN when none is)."""
    known = [e for e in relative if np.isfinite(e)]
    return ratio * math.hypot(*known) if known else math.nan


def _with_error(x):
    if isinstance(x, (tuple, list)):
        return float(x[0]), float(x[1])
    return float(x), math.nan


# --------------------------------------------------------------------------- judging

def _judge(rec, spec, floor, factor):
    """Fill threshold, threshold_used, passed and note into rec."""
    label, unit = METRICS[rec["metric"]]
    rec.update({"label": label, "unit": unit, "noise_floor": floor, "threshold": None,
                "threshold_used": None, "kind": None, "passed": None, "note": rec.pop("skipped", "")})
    if rec["note"]:
        return rec
    if spec is None:
        rec["note"] = "no threshold: reported only"
        return rec
    kind = "max" if "max" in spec else "min"
    thr = float(spec[kind])
    used = thr
    if floor is not None and np.isfinite(floor):
        # The reference cannot resolve differences below its own half-vs-half disagreement.
        used = max(thr, factor * floor) if kind == "max" else min(thr, 1.0 - factor * (1.0 - floor))
    if used != thr:
        rec["note"] = f"threshold {'raised' if kind == 'max' else 'lowered'} by the reference noise floor (x{factor:g})"
    rec.update({"threshold": thr, "threshold_used": used, "kind": kind})
    v = rec["value"]
    row_v, ref_v = rec.get("row_value"), rec.get("reference_value")
    if row_v is not None and ref_v is not None and (np.isnan(row_v) or np.isnan(ref_v)):
        both = np.isnan(row_v) and np.isnan(ref_v)
        rec["passed"] = bool(both)
        rec["note"] = "absent in row and reference" if both else (
            "absent in row" if np.isnan(row_v) else "absent in reference")
        return rec
    rec["passed"] = bool(abs(v) <= used) if kind == "max" else bool(v >= used)
    return rec


def _floor_value(rec):
    """What a half-vs-half record says about the noise: |difference|, or the overlap itself."""
    v = rec["value"]
    if v is None or not np.isfinite(v) or rec["metric"] == "cost.speedup":
        return None
    return float(v) if rec["metric"].endswith(".overlap") else abs(float(v))


# --------------------------------------------------------------------------- entry point

def validate(reference, rows: dict, *, out_dir, thresholds=None, cost: dict | None = None,
             equilibration_ps: float = 0.0, row_equilibration_ps: float = 0.0,
             baseline: str | None = None, settings_info=None, sections=None,
             r_max: float = 0.6, n_bins: int = 120) -> ValidationResult:
    """Compare each row with the CP2K reference; write plots, report.md and metrics.json.

    reference, rows[name]: mdtraj.Trajectory or Row. equilibration_ps is cut from the
    start of the reference (relative to its first frame's time) and row_equilibration_ps
    from every row; pass 0 for runs the caller already cut. cost: {"cp2k_seconds_per_step":
    s, name: s} (floats or (value, uncertainty)); it overrides the seconds_per_step of the
    Row objects, the reference's one being CP2K's. baseline: the name of a row (e.g. the
    classical SPC/Fw model) that other rows must beat; it is judged and reported but does
    not count in .passed. settings_info: dict or list of provenance lines for the report.
    sections: extra report sections, dicts with "title" and any of "text" (lines),
    "table" ({"header": [...], "rows": [[...]]}) and "plots" (PNG paths, copied here).
    """
    cfg = load_thresholds(thresholds)
    n_blocks, factor = int(cfg.get("n_blocks", 4)), float(cfg.get("noise_floor_factor", 2.0))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref_row = reference if isinstance(reference, Row) else Row(reference)
    rows = {name: (r if isinstance(r, Row) else Row(r)) for name, r in rows.items()}
    if not rows:
        raise ValueError("no rows to validate")
    if baseline is not None and baseline not in rows:
        raise ValueError(f"baseline {baseline!r} is not one of the rows {list(rows)}")
    cost = dict(cost or {})
    cp2k_seconds = cost.pop("cp2k_seconds_per_step", ref_row.seconds_per_step)

    ref_traj = _cut(ref_row.traj, equilibration_ps)
    ref_temp = _temperature_series(ref_row, equilibration_ps)
    ref_vel = _velocity_series(ref_row, equilibration_ps)
    ref = _Profile(ref_traj, ref_temp, n_blocks, r_max, n_bins, ref_vel, ref_row.heat_per_ps, ref_row.net_force)

    # Noise floor: the first half of the reference against its second half.
    h = ref_traj.n_frames // 2
    th = None if ref_temp is None else len(ref_temp) // 2
    vh = None if ref_vel is None else len(ref_vel[0]) // 2
    half1 = _Profile(ref_traj[:h], None if th is None else ref_temp[:th], n_blocks, r_max, n_bins,
                     None if vh is None else (ref_vel[0][:vh], ref_vel[1]))
    half2 = _Profile(ref_traj[h:], None if th is None else ref_temp[th:], n_blocks, r_max, n_bins,
                     None if vh is None else (ref_vel[0][vh:], ref_vel[1]))
    floors = {rec["metric"]: _floor_value(rec) for rec in _compare(half1, half2)}

    profiles, metrics, rows_passed = {}, [], {}
    for name, row in rows.items():
        traj = _cut(row.traj, row_equilibration_ps)
        prof = _Profile(traj, _temperature_series(row, row_equilibration_ps), n_blocks, r_max, n_bins,
                        _velocity_series(row, row_equilibration_ps), row.heat_per_ps, row.net_force)
        profiles[name] = prof
        seconds = cost.get(name, row.seconds_per_step)
        recs = [_judge(rec, cfg["metrics"].get(rec["metric"]), floors.get(rec["metric"]), factor)
                for rec in _compare(prof, ref, seconds, cp2k_seconds)]
        for rec in recs:
            rec["row"] = name
        metrics.extend(recs)
        rows_passed[name] = all(rec["passed"] is not False for rec in recs)
    if baseline is not None:
        _mark_beats_baseline(metrics, baseline)
    judged = [n for n in rows if n != baseline] or list(rows)
    passed = all(rows_passed[n] for n in judged)

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
    spec_info = {n: (None if p.spectrum is None else {"span_ps": p.spectrum["span_ps"], "dt_ps": p.spectrum["dt_ps"]})
                 for n, p in [("reference", ref)] + list(profiles.items())}
    settings = {
        "reference_frames": ref_traj.n_frames, "reference_span_ps": ref.duration_ps,
        "reference_equilibration_cut_ps": equilibration_ps, "row_equilibration_cut_ps": row_equilibration_ps,
        "rows": {n: {"frames": p.traj.n_frames, "span_ps": p.duration_ps} for n, p in profiles.items()},
        "velocity_series": spec_info, "vacf_max_lag_ps": VACF_MAX_LAG_PS,
        "spectral_band_windows_cm1": analysis.SPECTRAL_BANDS,
        "n_blocks": n_blocks, "noise_floor_factor": factor, "rdf_r_max_nm": r_max, "rdf_bins": n_bins,
        "thresholds_schema_version": cfg["schema_version"], "thresholds_source": (
            str(thresholds) if isinstance(thresholds, (str, Path)) else
            "validation/thresholds.json" + (" with overrides" if thresholds else "")),
        "baseline": baseline, "cp2k_seconds_per_step": cp2k_seconds,
    }
    reference_numbers = {p: {"features": ref.rdf[p]["features"], "uncertainty": ref.rdf[p]["features_sem"]}
                         for p in PAIRS}
    summary = summary_table(metrics, rows_passed)
    report_path = out_dir / "report.md"
    report_path.write_text(_report_md(passed, rows_passed, metrics, settings, settings_info, plots, floors,
                                      summary, sections))
    html_path = out_dir / "report.html"
    html_path.write_text(_report_html(out_dir, passed, rows_passed, metrics, settings, settings_info, plots,
                                      summary, sections))
    (out_dir / "metrics.json").write_text(json.dumps(_jsonable({
        "schema_version": SCHEMA_VERSION, "passed": passed, "rows_passed": rows_passed,
        "settings": settings, "provenance": _provenance_lines(settings_info),
        "reference_rdf_features": reference_numbers, "noise_floor": floors, "summary": summary,
        "metrics": metrics, "plots": plots + [p for sec in sections for p in sec["plots"]]}), indent=1))
    return ValidationResult(passed=passed, metrics=metrics, report_path=report_path,
                            rows_passed=rows_passed, out_dir=out_dir, html_path=html_path, summary=summary,
                            baseline=baseline)


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
        data = [getattr(ref, attr).ravel()] + [getattr(pr, attr).ravel() for pr in profiles.values()]
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
            t = prof.temperature
            style = {"color": "k"} if prof is ref else {}
            line, = ax.plot(t[:, 0] - t[0, 0], t[:, 1], lw=0.8,
                            label=f"{name} ({t[:, 1].mean():.1f} ± {t[:, 1].std():.1f} K)", **style)
            axh.hist(t[:, 1], 30, density=True, histtype="step", lw=1.3, color=line.get_color(),
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
        t, msd = analysis.msd_oxygen(prof.traj)
        ax.plot(t, msd, label=name, **({"color": "k", "lw": 2} if prof is ref else {}))
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


def summary_table(metrics, rows_passed) -> dict:
    """{"header": [...], "rows": [[...]]}: the CP2K reference and every row, one line each.

    The reference line holds the reference's numbers and, in difference columns, the
    reference's own half-vs-half floor.
    """
    header = ["row"] + [c[0] for c in SUMMARY_COLUMNS] + ["metrics passed"]
    by = {(m["row"], m["metric"]): m for m in metrics}
    first = next(iter(rows_passed))

    def cell(rec, source, scale, fmt, reference=False):
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

    table = [["CP2K reference"] + [cell(by.get((first, key)), src, sc, fmt, True)
                                   for _, key, src, sc, fmt in SUMMARY_COLUMNS] + ["–"]]
    for name, ok in rows_passed.items():
        recs = [m for m in metrics if m["row"] == name]
        n_judged = sum(m["passed"] is not None for m in recs)
        n_pass = sum(m["passed"] is True for m in recs)
        table.append([name] + [cell(by.get((name, key)), src, sc, fmt) for _, key, src, sc, fmt in SUMMARY_COLUMNS]
                     + [f"{n_pass}/{n_judged} {'PASS' if ok else 'FAIL'}"])
    return {"header": header, "rows": table}


def _note(m) -> str:
    note = m["note"]
    for extra in ([f"reference and row in {m['unit_values']}"] if m.get("unit_values") else []) + \
            ([m["context"]] if m.get("context") else []) + \
            ([("beats baseline" if m["beats_baseline"] else "worse than baseline")] if "beats_baseline" in m else []):
        note = (note + "; " if note else "") + extra
    return note


_LEGEND = ("Values are row − reference unless the metric says otherwise; ± is the block-average "
           "standard error; *floor* is the same number for the reference's first half against its second "
           "half; a max-threshold passes when |value| ≤ threshold used, a min-threshold when value ≥ it.")
_METRIC_HEADER = ["metric", "unit", "reference", "row", "value", "floor", "threshold", "used", "pass", "note"]


def _metric_cells(m):
    thr = "" if m["threshold"] is None else f"{m['kind']} {_fmt(m['threshold'])}"
    verdict = {True: "PASS", False: "FAIL", None: "-"}[m["passed"]]
    return [m["metric"], m["unit"], _fmt(m.get("reference_value"), m.get("reference_uncertainty")),
            _fmt(m.get("row_value"), m.get("row_uncertainty")), _fmt(m["value"], m["uncertainty"]),
            _fmt(m["noise_floor"]), thr, _fmt(m["threshold_used"]), verdict, _note(m)]


def _verdict_lines(passed, rows_passed, metrics, settings):
    head = f"Overall: {'PASS' if passed else 'FAIL'}" + (
        f" (baseline row `{settings['baseline']}` does not count)" if settings["baseline"] else "")
    lines = []
    for name, ok in rows_passed.items():
        recs = [m for m in metrics if m["row"] == name]
        n_fail = sum(m["passed"] is False for m in recs)
        n_judged = sum(m["passed"] is not None for m in recs)
        lines.append(f"`{name}`: {'PASS' if ok else 'FAIL'} ({n_judged - n_fail}/{n_judged} metrics pass)")
    return head, lines


def _md_table(header, rows):
    esc = lambda x: str(x).replace("|", "\\|")  # noqa: E731
    return (["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows])


def _report_md(passed, rows_passed, metrics, settings, info, plots, floors, summary, sections) -> str:
    head, lines = _verdict_lines(passed, rows_passed, metrics, settings)
    out = ["# Validation against CP2K", "", f"**{head}**", ""] + [f"- {x}" for x in lines]
    out += ["", "## Summary", ""] + _md_table(summary["header"], summary["rows"])
    out += ["", _LEGEND, ""]
    for name in rows_passed:
        rows = []
        for m in (m for m in metrics if m["row"] == name):
            cells = _metric_cells(m)
            cells[8] = "**FAIL**" if cells[8] == "FAIL" else cells[8]
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
td:first-child,th:first-child{text-align:left}th{background:#f0f0f0}.PASS{color:#070}.FAIL{color:#b00;font-weight:bold}
img{max-width:100%;margin:0.5em 0}code{background:#f4f4f4}"""


def _report_html(out_dir, passed, rows_passed, metrics, settings, info, plots, summary, sections) -> str:
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
                    cls = " class='FAIL'" if "FAIL" in c else " class='PASS'" if "PASS" in c else ""
                cells.append(f"<td{cls}>{e(c)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        return "\n".join(out + ["</table>"])

    def img(name):
        data = base64.b64encode((Path(out_dir) / name).read_bytes()).decode("ascii")
        return f"<figure><img alt='{e(name)}' src='data:image/png;base64,{data}'><figcaption>{e(name)}</figcaption></figure>"

    head, lines = _verdict_lines(passed, rows_passed, metrics, settings)
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Validation against CP2K</title>",
           f"<style>{_CSS}</style></head><body>", "<h1>Validation against CP2K</h1>",
           f"<p class='{'PASS' if passed else 'FAIL'}'><b>{e(head)}</b></p><ul>"]
    out += [f"<li>{e(x)}</li>" for x in lines] + ["</ul>", "<h2>Summary</h2>",
                                                  table(summary["header"], summary["rows"], -1),
                                                  f"<p>{e(_LEGEND)}</p>"]
    out += ["<h2>Overlays</h2>"] + [img(p) for p in plots]
    for name in rows_passed:
        out += [f"<h2>{e(name)}</h2>",
                table(_METRIC_HEADER, [_metric_cells(m) for m in metrics if m["row"] == name], 8)]
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
