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
feed it. Its parts, one job each: ``metrics`` (what is measured, the headline metrics),
``profiles`` (runs, blocks, the values and errors of one row), ``comparisons`` (a row
against the reference, one record per metric), ``decision`` (thresholds, outcomes,
verdicts) and ``report`` (plots, report.md and report.html); this module is the entry
point that runs them in order.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.atomic import write_json_atomic
from . import analysis
from .comparisons import compare, langevin, with_error
from .decision import (blow_up_record, decide, floor_value, load_thresholds, overall_verdict, reference_equipartition,
                       reference_needed_ps)
from .metrics import OUTCOMES, PAIRS, SCHEMA_VERSION, ValidationError
from .profiles import VACF_MAX_LAG_PS, Profile, Row, Run, sem, vacf_lag
from .report import equipartition_table, jsonable, plot_all, provenance_lines, report_html, report_md, summary_table


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

    ref_run = Run.of_row(ref_row, equilibration_ps)
    row_runs = {n: [Run.of_row(r, row_equilibration_ps) for r in g] for n, g in groups.items()}
    with_v = [[ref_run.velocities]] if ref_run.velocities is not None else []
    with_v += [[r.velocities for r in runs] for runs in row_runs.values()
               if all(r.velocities is not None for r in runs)]
    lag = vacf_lag(with_v, VACF_MAX_LAG_PS) if with_v else None

    def profile(runs, first: Row):
        blocks = n_blocks
        if len(runs) == 1 and langevin(first):
            # Langevin friction on every degree of freedom: block errors of the bundled
            # reference level off by 0.3 ps blocks (validation/README.md), so blocks of
            # min_block_ps give its errors more degrees of freedom
            n = runs[0].traj.n_frames
            covered = runs[0].span_ps * n / max(n - 1, 1)  # each frame stands for one spacing
            blocks = max(n_blocks, min(int(cfg.get("max_blocks", n_blocks)),
                                       int(covered / float(cfg.get("min_block_ps", math.inf)) + 1e-9)))
        return Profile(runs, blocks, r_max, n_bins, lag, window, first.heat_per_ps, first.net_force,
                        first.hydrogen_mass_amu, first.temperature_atoms, first.thermostat, first.friction_per_ps)

    ref = profile([ref_run], ref_row)
    # Noise floor: the first half of the reference against its second half.
    half1, half2 = (profile([h], Row(None)) for h in ref_run.blocks(2))
    floors = {rec["metric"]: floor_value(rec) for rec in compare(half1, half2, target_k=target_temperature_k)}
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
        recs = compare(prof, ref, seconds, cp2k_seconds, target_temperature_k, ref_eq["ok"])
        recs.append(blow_up_record(blow_ups.get(name, []), len(runs)))
        family = sum(cfg["metrics"].get(r["metric"]) is not None and not r.get("skipped") for r in recs) \
            if cfg.get("family_wise_fail", True) else 1
        recs = [decide(rec, cfg["metrics"].get(rec["metric"]), confidence, family) for rec in recs]
        for rec in recs:
            rec["row"] = name
            rec["noise_floor"] = floors.get(rec["metric"])
            rec["reference_needed_ps"] = reference_needed_ps(rec, cfg["metrics"].get(rec["metric"]),
                                                              ref.duration_ps)
            rec["seeds"] = len(runs)
        metrics.extend(recs)
        outcomes = {m["outcome"] for m in recs}
        rows_passed[name] = "fail" not in outcomes
        verdicts[name] = "FAIL" if "fail" in outcomes else "INCONCLUSIVE" if "inconclusive" in outcomes else "PASS"
    for name in only_blow_ups:
        survived = len(row_runs.get(name, []))
        rec = decide(blow_up_record(blow_ups[name], survived), cfg["metrics"].get("stability.blow_ups"), confidence)
        rec.update(row=name, seeds=len(blow_ups[name]) + survived)
        metrics.append(rec)
        rows_passed[name] = rec["outcome"] != "fail"
        verdicts[name] = "FAIL" if rec["outcome"] == "fail" else "INCONCLUSIVE"
    if baseline is not None:
        _mark_beats_baseline(metrics, baseline)
    judged = [n for n in groups if n != baseline] or list(groups)
    passed = all(rows_passed[n] for n in judged)
    overall = overall_verdict(metrics, baseline)

    plots = plot_all(out_dir, ref, profiles)
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
    report_path.write_text(report_md(overall, verdicts, metrics, settings, settings_info, plots, summary,
                                      sections))
    html_path = out_dir / "report.html"
    html_path.write_text(report_html(out_dir, overall, verdicts, metrics, settings, settings_info, plots,
                                      summary, sections))
    write_json_atomic(
        out_dir / "metrics.json",
        jsonable(
            {
                "schema_version": SCHEMA_VERSION,
                "overall": overall,
                "passed": passed,
                "rows_passed": rows_passed,
                "verdicts": verdicts,
                "settings": settings,
                "provenance": provenance_lines(settings_info),
                "reference_rdf_features": reference_numbers,
                "noise_floor": floors,
                "summary": summary,
                "equipartition": equip["data"],
                "metrics": metrics,
                "plots": plots + [p for sec in sections for p in sec["plots"]],
            }
        ),
    )
    return ValidationResult(passed=passed, metrics=metrics, report_path=report_path,
                            rows_passed=rows_passed, out_dir=out_dir, html_path=html_path, summary=summary,
                            baseline=baseline, verdicts=verdicts, equipartition=equip["data"], overall=overall)


def _mean_seconds(rows):
    known = [with_error(r.seconds_per_step) for r in rows if r.seconds_per_step is not None]
    if not known:
        return None
    vals = [v for v, _ in known]
    return (float(np.mean(vals)), sem(vals) if len(vals) > 1 else known[0][1])


def _mark_beats_baseline(metrics, baseline):
    base = {m["metric"]: m for m in metrics if m["row"] == baseline}
    for m in metrics:
        b = base.get(m["metric"])
        if m["row"] == baseline or b is None or m["kind"] is None or not np.isfinite(m["value"]) \
                or not np.isfinite(b["value"]):
            continue
        m["beats_baseline"] = bool(abs(m["value"]) <= abs(b["value"])) if m["kind"] == "max" \
            else bool(m["value"] >= b["value"])
