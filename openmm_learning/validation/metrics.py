"""What the validation measures: every metric's key, label and unit, the outcomes a
metric can have, the headline metrics that decide the verdict, and the error that bad
input raises."""

from __future__ import annotations

from itertools import groupby

from . import analysis

PAIRS = ("OO", "OH", "HH")

SCHEMA_VERSION = 2

KINDS = analysis.KINETIC_KINDS

KIND_LABELS = {"O": "O atoms", "H": "H atoms", "translation": "molecular translation",
               "rotation": "molecular rotation", "vibration": "internal vibration"}

#: Every metric as (key, label, unit), in report order; "{pair}" entries stand for one
#: metric per pair of PAIRS and "{kind}" entries for one per kind of KINDS ("{label}" is
#: the kind's KIND_LABELS entry), a whole run of such entries written out per pair or kind.
_TABLE = (
    ("rdf_{pair}.first_peak_position", "g_{pair} first peak position", "nm"),
    ("rdf_{pair}.first_peak_height", "g_{pair} first peak height", ""),
    ("rdf_{pair}.first_min_position", "g_{pair} first minimum position", "nm"),
    ("rdf_{pair}.coordination_number", "g_{pair} coordination number", ""),
    ("rdf_{pair}.integrated_abs_diff", "g_{pair} integral of |dg| over 0-6 A", "A"),
    ("bond_length.mean", "O-H length mean", "nm"),
    ("bond_length.width", "O-H length width (std)", "nm"),
    ("bond_length.overlap", "O-H length histogram overlap", ""),
    ("hoh_angle.mean", "H-O-H angle mean", "deg"),
    ("hoh_angle.width", "H-O-H angle width (std)", "deg"),
    ("hoh_angle.overlap", "H-O-H angle histogram overlap", ""),
    ("hbonds.per_molecule", "H-bonds per molecule (Wernet-Nilsson)", ""),
    ("diffusion.log_ratio", "O self-diffusion, ln(D_row / D_ref)", ""),
    ("temperature.mean", "temperature mean", "K"),
    ("temperature.std", "temperature fluctuation (std)", "K"),
    ("kinetic_vs_target.{kind}", "kinetic temperature of {label} - target", "K"),
    ("kinetic_vs_reference.{kind}", "kinetic temperature of {label}", "K"),
    ("kinetic_split.O_minus_H", "kinetic temperature of O atoms - that of H atoms (0 in equilibrium)", "K"),
    ("vacf.libration_band", "H spectrum: libration band position", "cm^-1"),
    ("vacf.bend_band", "H spectrum: H-O-H bend band position", "cm^-1"),
    ("vacf.stretch_band", "H spectrum: O-H stretch band position", "cm^-1"),
    ("thermostat.heat_per_ps", "heat the thermostat removes per ps (row value, not a difference)", "kJ/mol/ps"),
    ("forces.net_force", "mean |net force on all atoms| (row value, not a difference)", "kJ/mol/nm"),
    ("cost.speedup", "speed-up, CP2K s/step / row s/step", "x"),
    ("stability.blow_ups", "runs that blew up (the guard stopped them; the row is judged on the rest)", ""),
)


def _placeholder(entry) -> str | None:
    """"pair" or "kind" when the entry's key stands for one metric per pair or per kind."""
    return next((name for name in ("pair", "kind") if "{" + name + "}" in entry[0]), None)


def _written_out(table) -> dict:
    """{key: (label, unit)} of a table of (key, label, unit), each run of "{pair}" or
    "{kind}" entries repeated per pair or per kind."""
    fills = {"pair": [{"pair": p} for p in PAIRS], "kind": [{"kind": k, "label": KIND_LABELS[k]} for k in KINDS],
             None: [{}]}
    out = {}
    for placeholder, entries in groupby(table, key=_placeholder):
        entries = list(entries)
        for fill in fills[placeholder]:
            out.update({key.format(**fill): (label.format(**fill), unit) for key, label, unit in entries})
    return out


#: Metric key -> (label, unit). Difference metrics are row - reference.
METRICS = _written_out(_TABLE)

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
