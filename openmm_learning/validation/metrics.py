"""What the validation measures: every metric's key, label and unit, the outcomes a
metric can have, the headline metrics that decide the verdict, and the error that bad
input raises."""

from __future__ import annotations

from . import analysis

PAIRS = ("OO", "OH", "HH")

SCHEMA_VERSION = 2

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


class ValidationError(ValueError):
    """The data cannot be validated as asked (too few frames, mismatched series); the
    message says what to change."""
