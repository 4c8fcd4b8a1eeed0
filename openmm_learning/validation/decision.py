"""Thresholds and the decision: a record's outcome (pass, fail, inconclusive) from its
value, uncertainty and degrees of freedom against validation/thresholds.json; the
verdict of the whole validation; the reference's equipartition."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np

from . import analysis
from .metrics import HEADLINE_METRICS, HEADLINE_WHERE_DECIDABLE, KINDS, METRICS, SCHEMA_VERSION, ValidationError
from .profiles import Profile

DEFAULT_THRESHOLDS = Path(__file__).with_name("thresholds.json")  # package data


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


def welch_dof(rec, row_dof, ref_dof):
    """Degrees of freedom of a record's uncertainty (Welch-Satterthwaite for a difference)."""
    # a ratio's uncertainty adds relative errors: those are the components
    a, b = rec.get("error_components", (rec.get("row_uncertainty"), rec.get("reference_uncertainty")))
    if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)):
        return max(min(row_dof, ref_dof), 1)
    if b == 0.0:
        return max(row_dof, 1)
    den = (a**4 / max(row_dof, 1) if a > 0 else 0.0) + (b**4 / max(ref_dof, 1) if b > 0 else 0.0)
    return float((a * a + b * b) ** 2 / den) if den > 0 else max(min(row_dof, ref_dof), 1)


def decide(rec, spec, confidence, family: int = 1):
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
    z = _t_quantile(confidence, rec.get("dof", 1e6))
    family_factor = _family_factor(confidence, family)
    label, unit = METRICS[rec["metric"]]
    rec.update({"label": label, "unit": unit, "threshold": None, "kind": None, "passed": None,
                "outcome": "n/a", "note": rec.pop("skipped", ""), "interval": None})
    if rec["note"]:
        return rec
    row_v, ref_v = rec.get("row_value"), rec.get("reference_value")
    if row_v is not None and ref_v is not None and (np.isnan(row_v) or np.isnan(ref_v)):
        return _decide_presence(rec, spec, confidence, family_factor)
    if spec is None:
        rec.update(outcome="reported", note="no threshold: reported only")
        return rec
    return _decide_against_threshold(rec, spec, z, z * family_factor, family)


def _t_quantile(confidence, dof) -> float:
    """Student's t quantile of the two-sided confidence for dof degrees of freedom (at least 1)."""
    from scipy.stats import t as student_t

    return float(student_t.ppf(0.5 + 0.5 * confidence, max(dof, 1)))


def _family_factor(confidence, family) -> float:
    """z_fail / z: the ratio of the normal quantiles at the family-wise (Bonferroni) and the
    single confidence."""
    from scipy.stats import norm

    alpha = 1.0 - confidence
    return float(norm.ppf(1.0 - 0.5 * alpha / max(family, 1)) / norm.ppf(1.0 - 0.5 * alpha))


def _decide_presence(rec, spec, confidence, family_factor):
    """A feature present on one side only (its value NaN on the other): n/a when absent on
    both, else fail or inconclusive by the peaks' prominences."""
    row_v, ref_v = rec["row_value"], rec["reference_value"]
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
        dof = welch_dof({"error_components": (e_row, e_ref)}, dof_row, dof_ref)
        margin = _t_quantile(confidence, dof) * family_factor * e
        decided = diff - margin > analysis.MIN_PEAK_PROMINENCE
        why = (f"; peak prominence {p_row:.3g} ± {e_row:.2g} (row), {p_ref:.3g} ± {e_ref:.2g} (reference): "
               f"they differ by {diff:.3g} - {margin:.2g} (noise), "
               f"{'more' if decided else 'not more'} than the presence threshold {analysis.MIN_PEAK_PROMINENCE}")
    rec["note"] += why
    if spec is not None:
        rec.update(threshold=float(spec.get("max", spec.get("min"))), kind="max" if "max" in spec else "min",
                   outcome="fail" if decided else "inconclusive", passed=False if decided else None)
    return rec


def _decide_against_threshold(rec, spec, z, z_fail, family):
    """pass, fail or inconclusive: value +- z sigma (pass) and +- z_fail sigma (fail) against the threshold."""
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


def blow_up_record(notes, survived: int) -> dict:
    """stability.blow_ups of a row: how many of its runs blew up (exact: no uncertainty)."""
    n = len(notes)
    return {"metric": "stability.blow_ups", "value": float(n), "uncertainty": 0.0, "row_value": float(n),
            "reference_value": 0.0, "dof": 1e6, "reference_uncertainty": 0.0,
            "context": f"{n} of {n + survived} runs blew up: " + "; ".join(notes) if n else "no run blew up"}


def floor_value(rec):
    """What a half-vs-half record says about the noise: |difference|, or the overlap itself."""
    v = rec["value"]
    if v is None or not np.isfinite(v) or rec["metric"] == "cost.speedup":
        return None
    return float(v) if rec["metric"].endswith(".overlap") else abs(float(v))


def reference_needed_ps(rec, spec, span_ps):
    """Reference length (ps) at which its own error alone uses half the threshold at z sigma
    (errors fall as 1/sqrt(length)); None when unknown."""
    e = rec.get("reference_uncertainty")
    if spec is None or e is None or not np.isfinite(e) or e <= 0:
        return None
    thr = float(spec.get("max", spec.get("min")))
    margin = thr if "max" in spec else max(1.0 - thr, 1e-9)  # an overlap's distance from 1
    return float(span_ps * (2 * rec.get("z", 2.0) * e / margin) ** 2)


def reference_equipartition(ref: Profile, target_k, tolerance_k, confidence) -> dict:
    """The reference's kinetic temperatures against the target: {kind: (T, sem, outcome)}, "ok"."""
    if ref.kinetic is None or target_k is None:
        return {"ok": True, "kinds": {}, "why": "no reference velocities or target"}
    kinds = {}
    for k in KINDS:
        v, e = ref.kinetic[k]
        rec = decide({"metric": f"kinetic_vs_target.{k}", "value": v - target_k, "uncertainty": e,
                      "row_value": v, "reference_value": target_k, "dof": ref.dof}, {"max": tolerance_k}, confidence,
                     len(KINDS))
        kinds[k] = {"value": v, "uncertainty": e, "outcome": rec["outcome"]}
    return {"ok": all(x["outcome"] != "fail" for x in kinds.values()), "kinds": kinds}
