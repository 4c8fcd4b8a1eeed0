"""A row's profile against the reference's: one record per metric (value, uncertainty and
their parts, degrees of freedom), or n/a with the reason when the data cannot measure it."""

from __future__ import annotations

import math

import numpy as np

from ..units import MASSES_AMU
from . import analysis
from .decision import welch_dof
from .metrics import KINDS, PAIRS
from .profiles import Profile, sem


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


def _coordination_record(p, a, b) -> dict:
    """Partners within the reference's first minimum, for row and reference alike: a shallow
    minimum (H-H) moves with small changes of shape, and its position is a metric of its own,
    so each side counted to its own minimum would count that shift twice."""
    key, r_min = f"rdf_{p}.coordination_number", b["features"]["first_min_position"]
    if np.isfinite(b["features"]["first_peak_position"]) and not np.isfinite(r_min):
        return _na(key, "the reference's g has no first minimum in its window to count to")
    if not np.isfinite(r_min):  # no peak in the reference: the presence rule decides
        return _diff_record(key, a["features"]["coordination_number"], a["features_sem"]["coordination_number"],
                            b["features"]["coordination_number"], b["features_sem"]["coordination_number"])

    def count(side):
        parts = [analysis.coordination_within(side["r"], g, side["density"], r_min) for g in side["g_parts"]]
        return analysis.coordination_within(side["r"], side["g"], side["density"], r_min), sem(parts)

    return {**_diff_record(key, *count(a), *count(b)),
            "context": f"partners within the reference's first minimum, {r_min:.4f} nm, on both sides"}


def compare(row: Profile, ref: Profile, seconds=None, cp2k_seconds=None, target_k=None,
             reference_equipartition_ok=True) -> list:
    """Raw metric records (no thresholds) of row against ref."""
    out = _compare_records(row, ref, seconds, cp2k_seconds, target_k, reference_equipartition_ok)
    special = {"diffusion.log_ratio": (row.diffusion or {}).get("dof", 0), **{
        f"vacf.{b}_band": (row.spectrum or {}).get("dof", 0) for b in analysis.SPECTRAL_BANDS}}
    ref_special = {"diffusion.log_ratio": (ref.diffusion or {}).get("dof", 0), **{
        f"vacf.{b}_band": (ref.spectrum or {}).get("dof", 0) for b in analysis.SPECTRAL_BANDS}}
    for rec in out:
        rec["dof"] = welch_dof(rec, special.get(rec["metric"], row.dof), ref_special.get(rec["metric"], ref.dof))
    return out


def _compare_records(row, ref, seconds, cp2k_seconds, target_k, reference_equipartition_ok):
    out = []
    for p in PAIRS:
        out += _rdf_records(p, row, ref)
    for name in ("bond", "angle"):
        out += _distribution_records(name, row, ref)
    out.append(_diff_record("hbonds.per_molecule", *row.stat("hbonds", np.mean), *ref.stat("hbonds", np.mean)))
    out.append(_diffusion_record(row, ref))
    out += _temperature_records(row, ref)
    out += _kinetic_records(row, ref, target_k, reference_equipartition_ok)
    out += _spectrum_records(row, ref)
    out += _reported_records(row, ref)
    out.append(_cost_record(seconds, cp2k_seconds))
    return out


def _rdf_records(p, row, ref) -> list:
    """The pair's g(r) features, coordination number and integrated difference."""
    a, b = row.rdf[p], ref.rdf[p]
    # each side's peak prominence, its error and degrees of freedom: the judge decides
    # "present" or "absent" only beyond the noise of MIN_PEAK_PROMINENCE
    presence = {side: (prof.rdf[p]["features"]["peak_prominence"],
                       prof.rdf[p]["features_sem"]["peak_prominence"], prof.dof)
                for side, prof in (("row", row), ("reference", ref))}
    out = []
    for feat in ("first_peak_position", "first_peak_height", "first_min_position"):
        out.append({**_diff_record(f"rdf_{p}.{feat}", a["features"][feat], a["features_sem"][feat],
                                   b["features"][feat], b["features_sem"][feat]), "presence": presence})
    lost = [side for side, prof in (("row", a), ("reference", b))
            if np.isnan(prof["features"]["first_min_position"])
            and np.isfinite(prof["features"]["first_peak_position"])]
    if lost:  # a peak without a minimum in its window: position and count are undefined, not absent
        lo, hi = analysis.RDF_WINDOWS[p]["min"]
        why = f"no first minimum within {lo:g}-{hi:g} nm in the {' and the '.join(lost)} (g still falls there)"
        out[-1] = _na(f"rdf_{p}.first_min_position", why)
    out.append({**_coordination_record(p, a, b), "presence": presence})
    out.append(_integrated_rdf_record(p, a, b))
    return out


def _distribution_records(name, row, ref) -> list:
    """Mean, width and histogram overlap of the O-H lengths ("bond") or H-O-H angles ("angle")."""
    key = {"bond": "bond_length", "angle": "hoh_angle"}[name]
    parts = [analysis.overlap_coefficient(u, v) for u in getattr(row, name) for v in getattr(ref, name)]
    return [_diff_record(f"{key}.mean", *row.stat(name, np.mean), *ref.stat(name, np.mean)),
            _diff_record(f"{key}.width", *row.stat(name, np.std), *ref.stat(name, np.std)),
            {"metric": f"{key}.overlap", "row_value": None, "row_uncertainty": None,
             "reference_value": None, "reference_uncertainty": None,
             "value": analysis.overlap_coefficient(row.pooled(name), ref.pooled(name)),
             "uncertainty": sem(parts) / math.sqrt(2)}]


def _temperature_records(row, ref) -> list:
    if row.temperature is None or ref.temperature is None:
        return [_na(k, "no temperature series") for k in ("temperature.mean", "temperature.std")]
    out = [_diff_record("temperature.mean", *row.temperature_stat(np.mean), *ref.temperature_stat(np.mean))]
    if row.temperature_atoms == ref.temperature_atoms:
        out.append(_diff_record("temperature.std", *row.temperature_stat(np.std), *ref.temperature_stat(np.std)))
    else:
        out.append(_na("temperature.std", f"temperatures of {row.temperature_atoms} and {ref.temperature_atoms} "
                                          "atoms: their fluctuations scale as 1/sqrt(atoms)"))
    return out


def _reported_records(row, ref) -> list:
    """Reported, not differences: a conservative run has no net force and no steady heat flow."""
    out = []
    for key, attr in (("thermostat.heat_per_ps", "heat_per_ps"), ("forces.net_force", "net_force")):
        a, b = getattr(row, attr), getattr(ref, attr)
        if a is None:
            out.append(_na(key, "not recorded"))
        else:
            out.append({"metric": key, "row_value": float(a), "row_uncertainty": math.nan,
                        "reference_value": None if b is None else float(b), "reference_uncertainty": math.nan,
                        "value": float(a), "uncertainty": math.nan})
    return out


def _cost_record(seconds, cp2k_seconds) -> dict:
    """cost.speedup: CP2K's seconds per step over the row's."""
    if seconds is None or cp2k_seconds is None:
        return _na("cost.speedup", "no seconds per step")
    (s, se), (c, ce) = with_error(seconds), with_error(cp2k_seconds)
    return {"metric": "cost.speedup", "row_value": s, "row_uncertainty": se,
            "reference_value": c, "reference_uncertainty": ce, "value": c / s,
            "uncertainty": _ratio_error(c / s, se / s, ce / c), "unit_values": "s/step",
            "error_components": (se / s, ce / c)}


def _masses_differ(row, ref):
    a, b = row.hydrogen_mass_amu, ref.hydrogen_mass_amu
    if a is not None and b is not None and abs(a - b) > 0.01 * b:
        return f"hydrogen masses differ (row {a:g} amu, reference {b:g} amu): dynamics do not compare"
    return ""


def light_water(hydrogen_mass_amu: float) -> bool:
    """Standard hydrogen mass: the spectral band windows (analysis.SPECTRAL_BANDS) are light water's."""
    return abs(hydrogen_mass_amu - MASSES_AMU["H"]) < 0.01


def langevin(profile) -> bool:
    return "langevin" in str(profile.thermostat or "").lower()


def _dynamics_differ(row, ref) -> str:
    """Why the row's diffusion cannot be compared with the reference's ("" when it can)."""
    if _masses_differ(row, ref):
        return _masses_differ(row, ref)
    if langevin(row) != langevin(ref):
        which = "reference" if langevin(ref) else "row"
        return (f"the {which} ran Langevin dynamics (friction on every atom slows diffusion), the other did not: "
                "their diffusion does not compare")
    a, b = row.friction_per_ps, ref.friction_per_ps
    if langevin(ref) and (a is None or b is None or abs(a - b) > 0.01 * b):
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
            rec["skipped"] = (
                "the reference is out of equipartition (see the equipartition table): matching it is no test"
            )
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


def _ratio_error(ratio, *relative):
    """Error of a ratio from the relative errors that are known (NaN when none is)."""
    known = [e for e in relative if np.isfinite(e)]
    return ratio * math.hypot(*known) if known else math.nan


def with_error(x):
    if isinstance(x, (tuple, list)):
        return float(x[0]), float(x[1])
    return float(x), math.nan
