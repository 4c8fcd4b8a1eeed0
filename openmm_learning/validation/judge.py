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
and ``metrics.json`` to ``out_dir``. ``pipeline.validate`` runs the simulations that
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
from .profiles import VACF_MAX_LAG_PS, Profile, ProfileSettings, Row, Run, sem, vacf_lag
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


@dataclass
class ReportContext:
    """What validate() takes besides the runs and how to judge them: the costs, what the
    report shows around the comparison, and how the RDFs are binned.

    cost: {"cp2k_seconds_per_step": s, name: s} (floats or (value, uncertainty)); it
    overrides the seconds_per_step of the Row objects. settings_info: dict or list of
    provenance lines for the report. sections: extra report sections, dicts with "title"
    and any of "text" (lines), "table" ({"header": [...], "rows": [[...]]}) and "plots"
    (PNG paths, copied into the report's folder). r_max, n_bins: the RDFs' range (nm) and
    number of bins.
    """

    cost: dict | None = None
    settings_info: dict | list | None = None
    sections: list | None = None
    r_max: float = 0.6
    n_bins: int = 120


def _as_runs(row):
    if isinstance(row, (list, tuple)):
        rows = [r if isinstance(r, Row) else Row(r) for r in row]
    else:
        rows = [row if isinstance(row, Row) else Row(row)]
    if not rows:
        raise ValueError("a row with no runs")
    return rows


def validate(reference, rows: dict, *, out_dir, thresholds=None, baseline=None, target_temperature_k=None,
             equilibration_ps=0.0, row_equilibration_ps=0.0, blow_ups=None,
             context: ReportContext | None = None) -> ValidationResult:
    """Compare each row with the CP2K reference; write plots, report.md and metrics.json.

    reference: mdtraj.Trajectory or Row. rows[name]: a Trajectory or Row, or a list of
    them (independent runs of one model: seeds). equilibration_ps is cut from the start
    of the reference (relative to its first frame's time) and row_equilibration_ps from
    every run; pass 0 for runs the caller already cut. baseline: the name of a row (e.g.
    the classical SPC/Fw model) that other rows must beat; judged and reported but not
    counted in .passed. target_temperature_k: the thermostat target (kinetic temperatures
    are judged against it). blow_ups: {row name: [what stopped each run that blew up]}:
    the row's surviving runs are in rows (a row whose every run blew up is absent there),
    and its metric stability.blow_ups counts them (threshold max 0: one blow-up fails the
    row). context: the costs, provenance, extra report sections and RDF binning
    (ReportContext; None: none of the first three, the default binning).
    """
    context = context or ReportContext()
    cfg = load_thresholds(thresholds)
    judging = _Judging.of(cfg, thresholds, context, target_temperature_k)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref_row, groups, blow_ups = _checked_rows(reference, rows, baseline, blow_ups)
    cost = dict(context.cost or {})
    cp2k_seconds = cost.pop("cp2k_seconds_per_step", ref_row.seconds_per_step)
    ref_run = Run.of_row(ref_row, equilibration_ps)
    row_runs = {n: [Run.of_row(r, row_equilibration_ps) for r in g] for n, g in groups.items()}
    judging.lag = _common_vacf_lag(ref_run, row_runs)
    reference = _judged_reference(judging, ref_run, ref_row)
    profiles, metrics, verdicts = _judge_rows(judging, reference, groups, row_runs, blow_ups, cost, cp2k_seconds)
    if baseline is not None:
        _mark_beats_baseline(metrics, baseline)
    rows_passed = {name: verdict != "FAIL" for name, verdict in verdicts.items()}
    # every row that ran, those whose every run blew up included (they are in verdicts only)
    judged = [n for n in verdicts if n != baseline] or list(verdicts)
    equip = equipartition_table(reference.profile, reference.equipartition, profiles, metrics, target_temperature_k)
    result = ValidationResult(passed=all(rows_passed[n] for n in judged), metrics=metrics,
                              report_path=out_dir / "report.md", rows_passed=rows_passed, out_dir=out_dir,
                              html_path=out_dir / "report.html", summary=summary_table(metrics, verdicts),
                              baseline=baseline, verdicts=verdicts, equipartition=equip["data"],
                              overall=overall_verdict(metrics, baseline))
    settings = judging.settings(reference.profile, profiles, (equilibration_ps, row_equilibration_ps), baseline,
                                cp2k_seconds)
    _write_report(result, reference, profiles, [equip["section"]], settings, context)
    return result


@dataclass
class _Judging:
    """How validate() measures and judges: the thresholds config (its blocks, confidence
    and diffusion window) and where it came from, the RDF binning, the target
    temperature and one VACF lag for every velocity series (set once the runs are cut)."""

    cfg: dict
    thresholds_source: str
    n_blocks: int
    confidence: float
    window: tuple
    r_max: float
    n_bins: int
    target_k: float | None
    lag: float | None = None

    @classmethod
    def of(cls, cfg: dict, thresholds, context: ReportContext, target_k) -> _Judging:
        source = (str(thresholds) if isinstance(thresholds, (str, Path)) else
                  "the package's validation/thresholds.json" + (" with overrides" if thresholds else ""))
        return cls(cfg, source, int(cfg.get("n_blocks", 4)), float(cfg.get("confidence", 0.95)),
                   tuple(cfg.get("diffusion_window_ps", analysis.DIFFUSION_WINDOW_PS)), context.r_max,
                   context.n_bins, target_k)

    def spec(self, metric: str):
        """The metric's threshold spec (None: reported, not judged)."""
        return self.cfg["metrics"].get(metric)

    def profile(self, runs: list, first: Row) -> Profile:
        """The profile of one row's runs (first: the Row of its first run)."""
        blocks = self.n_blocks
        if len(runs) == 1 and langevin(first):
            # Langevin friction on every degree of freedom: block errors of the bundled
            # reference level off by 0.3 ps blocks (validation/README.md), so blocks of
            # min_block_ps give its errors more degrees of freedom
            n = runs[0].traj.n_frames
            covered = runs[0].span_ps * n / max(n - 1, 1)  # each frame stands for one spacing
            blocks = max(self.n_blocks, min(int(self.cfg.get("max_blocks", self.n_blocks)),
                                            int(covered / float(self.cfg.get("min_block_ps", math.inf)) + 1e-9)))
        return Profile(runs, ProfileSettings(blocks, self.r_max, self.n_bins, self.lag, self.window), first)

    def settings(self, ref: Profile, profiles: dict, cuts: tuple, baseline, cp2k_seconds) -> dict:
        """metrics.json's settings: what was compared and how; cuts: the reference's and the rows' equilibration."""
        spectra = [("reference", ref)] + list(profiles.items())
        spec_info = {n: None if p.spectrum is None else {k: p.spectrum[k] for k in ("span_ps", "dt_ps", "nyquist_cm1")}
                     for n, p in spectra}
        return {
            "reference_frames": ref.traj.n_frames, "reference_span_ps": ref.duration_ps,
            "reference_uncertainty_from": ref.part_kind,
            "reference_equilibration_cut_ps": cuts[0], "row_equilibration_cut_ps": cuts[1],
            "rows": {n: {"runs": p.seeds, "frames": sum(r.traj.n_frames for r in p.runs), "span_ps": p.duration_ps,
                         "uncertainty_from": p.part_kind} for n, p in profiles.items()},
            "target_temperature_K": self.target_k, "confidence": self.confidence,
            "family_wise_fail": bool(self.cfg.get("family_wise_fail", True)), "diffusion_window_ps": list(self.window),
            "velocity_series": spec_info, "vacf_lag_ps": self.lag,
            "spectral_band_windows_cm1": analysis.SPECTRAL_BANDS,
            "n_blocks": self.n_blocks, "rdf_r_max_nm": self.r_max, "rdf_bins": self.n_bins,
            "thresholds_schema_version": self.cfg["schema_version"], "thresholds_source": self.thresholds_source,
            "baseline": baseline, "cp2k_seconds_per_step": cp2k_seconds,
        }


@dataclass
class _Reference:
    """The reference's profile, the noise floor of each metric (the reference's first half
    against its second half) and its equipartition against the target."""

    profile: Profile
    floors: dict
    equipartition: dict


def _checked_rows(reference, rows: dict, baseline, blow_ups):
    """The reference's Row, each row's Rows and the blow-ups as lists; ValueError for no rows or an unknown baseline."""
    ref_row = reference if isinstance(reference, Row) else Row(reference)
    groups = {name: _as_runs(r) for name, r in rows.items()}
    blow_ups = {name: list(v) for name, v in (blow_ups or {}).items()}
    if not groups:
        raise ValueError("no rows to validate")
    if baseline is not None and baseline not in groups:
        raise ValueError(f"baseline {baseline!r} is not one of the rows {list(groups)}")
    return ref_row, groups, blow_ups


def _common_vacf_lag(ref_run: Run, row_runs: dict):
    """One VACF lag for the reference and every row whose runs all have velocities (None: none has)."""
    with_v = [[ref_run.velocities]] if ref_run.velocities is not None else []
    with_v += [[r.velocities for r in runs] for runs in row_runs.values()
               if all(r.velocities is not None for r in runs)]
    return vacf_lag(with_v, VACF_MAX_LAG_PS) if with_v else None


def _judged_reference(judging: _Judging, ref_run: Run, ref_row: Row) -> _Reference:
    ref = judging.profile([ref_run], ref_row)
    # Noise floor: the first half of the reference against its second half.
    half1, half2 = (judging.profile([h], Row(None)) for h in ref_run.blocks(2))
    floors = {rec["metric"]: floor_value(rec) for rec in compare(half1, half2, target_k=judging.target_k)}
    tolerance = (judging.spec("kinetic_vs_target.O") or {"max": 15.0})["max"]
    return _Reference(ref, floors, reference_equipartition(ref, judging.target_k, tolerance, judging.confidence))


def _judge_rows(judging: _Judging, reference: _Reference, groups: dict, row_runs: dict, blow_ups: dict, cost: dict,
                cp2k_seconds):
    """(profiles, metric records, verdicts) of every row; a row whose runs all blew up, or
    whose survivors are too short to judge, is judged on its blow-ups alone."""
    profiles, metrics, verdicts = {}, [], {}
    only_blow_ups = [n for n in blow_ups if n not in groups]  # every run blew up: nothing else to judge
    for name, runs in row_runs.items():
        try:
            profiles[name] = judging.profile(runs, groups[name][0])
        except ValidationError:
            if name not in blow_ups:
                raise
            only_blow_ups.append(name)  # what survived is too short to judge: the blow-ups decide
            continue
        seconds = cost.get(name, _mean_seconds(groups[name]))
        recs = _row_records(judging, reference, name, profiles[name], (seconds, cp2k_seconds), blow_ups.get(name, []))
        metrics.extend(recs)
        outcomes = {m["outcome"] for m in recs}
        verdicts[name] = "FAIL" if "fail" in outcomes else "INCONCLUSIVE" if "inconclusive" in outcomes else "PASS"
    for name in only_blow_ups:
        survived = len(row_runs.get(name, []))
        rec = decide(blow_up_record(blow_ups[name], survived), judging.spec("stability.blow_ups"), judging.confidence)
        rec.update(row=name, seeds=len(blow_ups[name]) + survived)
        metrics.append(rec)
        verdicts[name] = "FAIL" if rec["outcome"] == "fail" else "INCONCLUSIVE"
    return profiles, metrics, verdicts


def _row_records(judging: _Judging, reference: _Reference, name: str, prof: Profile, seconds: tuple,
                 blow_up_notes: list) -> list:
    """The row's decided records; seconds: (the row's, CP2K's) per step."""
    ref = reference.profile
    recs = compare(prof, ref, *seconds, judging.target_k, reference.equipartition["ok"])
    recs.append(blow_up_record(blow_up_notes, prof.seeds))
    family = sum(judging.spec(r["metric"]) is not None and not r.get("skipped") for r in recs) \
        if judging.cfg.get("family_wise_fail", True) else 1
    recs = [decide(rec, judging.spec(rec["metric"]), judging.confidence, family) for rec in recs]
    for rec in recs:
        rec["row"] = name
        rec["noise_floor"] = reference.floors.get(rec["metric"])
        rec["reference_needed_ps"] = reference_needed_ps(rec, judging.spec(rec["metric"]), ref.duration_ps)
        rec["seeds"] = prof.seeds
    return recs


def _copied_sections(sections, out_dir: Path) -> list:
    """The extra sections, their plots copied into out_dir and named by file name."""
    sections = [dict(sec) for sec in (sections or [])]
    for sec in sections:
        names = []
        for p in sec.get("plots", []):
            p = Path(p)
            if p.resolve() != (out_dir / p.name).resolve():
                shutil.copyfile(p, out_dir / p.name)
            names.append(p.name)
        sec["plots"] = names
    return sections


def _write_report(result: ValidationResult, reference: _Reference, profiles: dict, first_sections: list,
                  settings: dict, context: ReportContext):
    """Plots, report.md, report.html and metrics.json into result.out_dir; first_sections
    go before the context's sections."""
    out_dir, ref, metrics, verdicts = result.out_dir, reference.profile, result.metrics, result.verdicts
    plots = plot_all(out_dir, ref, profiles)
    sections = first_sections + _copied_sections(context.sections, out_dir)
    report = (result.overall, verdicts, metrics, settings, context.settings_info, plots, result.summary, sections)
    result.report_path.write_text(report_md(*report))
    result.html_path.write_text(report_html(out_dir, *report))
    reference_numbers = {p: {"features": ref.rdf[p]["features"], "uncertainty": ref.rdf[p]["features_sem"]}
                         for p in PAIRS}
    write_json_atomic(out_dir / "metrics.json", jsonable({
        "schema_version": SCHEMA_VERSION, "overall": result.overall, "passed": result.passed,
        "rows_passed": result.rows_passed, "verdicts": verdicts, "settings": settings,
        "provenance": provenance_lines(context.settings_info), "reference_rdf_features": reference_numbers,
        "noise_floor": reference.floors, "summary": result.summary, "equipartition": result.equipartition,
        "metrics": metrics, "plots": plots + [p for sec in sections for p in sec["plots"]],
    }))


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
