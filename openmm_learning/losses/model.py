"""The fitted agent losses: one versioned JSON model file, the single source of truth.

A model holds, for each agent species, one natural-cubic-spline channel per invariant:

    agent O: O-O inter, O-H inter, O-H intra, H-O-H angle
    agent H: H-O inter, H-H inter, H-O intra, H-H intra, H-O-H angle

In "agent" mode the O and H channels are independent (the paper's non-reciprocal
learning dynamics); in "reciprocal" mode the channels seen from both ends are equal
(O-H inter, O-H intra, angle), which makes the forces derive from one potential.

Optionally the model holds point charges (charge_h: q_H in e, q_O = -2 q_H,
intramolecular pairs excluded), summed by Ewald/PME over the whole periodic box. They act
on every atom alike in both modes (a potential, reciprocal by construction).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..io.atomic import write_json_atomic
from ..io.topology import SPECIES, SPECIES_INDEX, molecule_ids
from . import ewald, kernels
from .channels import BASIS_CODES, CHANNEL_KEYS, KIND_CODES, RECIPROCAL_TIES, Channel, ChebyshevChannel, channel_name
from .terms import plan

SCHEMA_VERSION = 1
FORMAT_NAME = "openmm-learning-model"
MODES = ("agent", "reciprocal")

#: Width (nm) of the switch that ends an agent model's asymmetry (LossModel.asymmetry_range)
ASYMMETRY_SWITCH_NM = 0.05
#: The default asymmetry range of agent fits (losses.fit.FitSettings.asymmetry_range)
ASYMMETRY_RANGE_NM = 0.35


def asymmetry_range_fits(r_a: float, r_switch: float) -> bool:
    """Whether r_a can end an agent model's asymmetry: wider than its switch, and within
    r_switch, where the model's own switch is still 1 (LossModel.antisymmetric_part)."""
    return ASYMMETRY_SWITCH_NM < r_a <= r_switch

class ModelFileError(ValueError):
    """A model file that cannot be used: says which file and which field."""


@dataclass
class LossModel:
    """Agent losses of water: channels, cutoff and switching, walls, and metadata."""

    mode: str
    channels: list[Channel]
    r_cut: float = 0.5
    r_switch: float = 0.4
    k_wall: float = 1.0e5
    fit_metrics: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    #: point charge of H in e (O carries -2 charge_h), None for a model without charges
    charge_h: float | None = None
    #: {channel name: [smallest, largest]} invariant of the training frames (the fitted
    #: range; a grid reaches a margin beyond it), None when unknown
    seen: dict | None = None
    #: agent mode: r_a (nm) beyond which the O and H views of an intermolecular pair are
    #: their mean. The antisymmetric remainder D = (view_O - view_H)/2 of a pair is
    #: multiplied by OpenMM's switching function from r_a - ASYMMETRY_SWITCH_NM to r_a, so
    #: engines evaluate it over the pairs within r_a only; None: over the whole cutoff
    asymmetry_range: float | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ModelFileError(f"mode {self.mode!r} is not one of {MODES}")
        r_a = self.asymmetry_range
        if r_a is not None and (self.mode != "agent" or not asymmetry_range_fits(r_a, self.r_switch)):
            raise ModelFileError(f"asymmetry_range {r_a}: an agent model's, above {ASYMMETRY_SWITCH_NM} nm "
                                 f"and at most r_switch = {self.r_switch} nm")
        keys = [c.key for c in self.channels]
        if tuple(keys) != CHANNEL_KEYS:
            raise ModelFileError(f"channels must be {[channel_name(k) for k in CHANNEL_KEYS]}, got "
                                 f"{[channel_name(k) for k in keys]}")

    def channel(self, agent, neighbour, kind) -> Channel:
        return self.channels[CHANNEL_KEYS.index((agent, neighbour, kind))]

    def basis_text(self) -> str:
        """The model file's description of its functions."""
        texts = {Channel.basis: "natural cubic spline on a uniform grid (OpenMM Continuous1DFunction)",
                 ChebyshevChannel.basis: "Chebyshev series on [x0, x1] (intermolecular pairs in 1/r, times "
                                         "(1 - w)^3; OpenMM compiled expression)"}
        return "; ".join(texts[b] for b in dict.fromkeys(c.basis for c in self.channels))

    # ------------------------------------------------------------ numerical form

    def terms(self) -> list:
        """The term plan (losses.terms): every term once, for every engine to emit."""
        return plan(self)

    def term(self, invariant: str, *species: str, agent: str | None = None):
        """The plan's term of an invariant ("pair", "bond", "angle") between species, e.g.
        term("pair", "O", "H"); in agent mode the angle term needs agent=."""
        found = [t for t in self.terms() if t.invariant == invariant and t.species == species
                 and (agent is None or agent in t.agents)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} terms {invariant} {'-'.join(species)} (agent {agent}) "
                           f"in this {self.mode} model")
        return found[0]

    def packed(self):
        """Arrays for the numba kernels (see kernels.model_forces), built from the term plan:
        each term's function serves every agent that descends it."""
        pair_channel, angle_channel = -np.ones((2, 2, 2), np.int64), -np.ones(2, np.int64)
        functions = []
        for term in self.terms():
            c = len(functions)
            functions.append(term.function)
            for agent in term.agents:
                a = SPECIES_INDEX[agent]
                if term.invariant == "angle":
                    angle_channel[a] = c
                    continue
                i = term.species.index(agent)
                other = term.species[1 - i]
                pair_channel[a, SPECIES_INDEX[other], int(term.invariant == "bond")] = c
        ch_kind = np.array([KIND_CODES[f.kind] for f in functions], np.int64)
        ch_basis = np.array([BASIS_CODES[f.basis] for f in functions], np.int64)
        ch_x0 = np.array([f.x0 for f in functions])
        ch_h = np.array([f.h for f in functions])
        ch_n = np.array([f.n for f in functions], np.int64)
        ch_off = np.concatenate([[0], np.cumsum(ch_n)[:-1]]).astype(np.int64)
        y = np.concatenate([f.values for f in functions]).astype(float)
        z = np.concatenate([f.second_derivatives() for f in functions])
        return dict(pair_channel=pair_channel, angle_channel=angle_channel,
                    ch_kind=ch_kind, ch_basis=ch_basis, ch_x0=ch_x0, ch_h=ch_h, ch_n=ch_n, ch_off=ch_off, y=y, z=z)

    def forces(self, positions, box, species, molecules):
        """Agent forces (kJ/mol/nm) and per-agent losses (kJ/mol) of one frame (nm)."""
        if self.asymmetry_range is not None:  # the two parts the engines evaluate, each exact
            (f, loss), (fd, loss_d) = (part.forces(positions, box, species, molecules) for part in self._parts())
            return f + fd, loss + loss_d
        p = self.packed()
        pos = np.ascontiguousarray(positions, dtype=float)
        mol_id = molecule_ids(molecules, len(pos))
        f, loss = kernels.model_forces(
            pos, np.asarray(box, float), np.asarray(species, np.int64), molecules, mol_id,
            p["pair_channel"], p["angle_channel"], p["ch_kind"], p["ch_basis"], p["ch_x0"], p["ch_h"],
            p["ch_n"], p["ch_off"], p["y"], p["z"], self.k_wall, self.r_switch, self.r_cut, len(pos))
        if self.charge_h:
            fq, eq = ewald.unit_charge_forces(pos, box, species, molecules, mol_id, self.r_cut)
            f, loss = f + self.charge_h**2 * fq, loss + self.charge_h**2 * eq
        return f, loss

    def channels_outside(self, positions, box, species, molecules, training: bool = True) -> int:
        """How many channels see an invariant of one frame (nm) outside the range of the
        training frames (training=False, or when that is unknown: outside the function's
        domain, where the linear extension and the walls take over); a pair beyond the
        cutoff has no force, so only a pair closer than any seen counts."""
        pos = np.ascontiguousarray(positions, dtype=float)
        molecules = np.asarray(molecules, np.int64)
        lo, hi = kernels.invariant_ranges(pos[None], np.asarray(box, float)[None], np.asarray(species, np.int64),
                                          molecules, molecule_ids(molecules, len(pos)), self.r_cut,
                                          pair_channel_table(), angle_channel_table(), len(self.channels))
        ranges = [self.seen[ch.name] if self.seen and training else (ch.x0, ch.x1) for ch in self.channels]
        return sum(1 for c, (ch, (a, b)) in enumerate(zip(self.channels, ranges))
                   if lo[c] < a or (ch.kind != "inter" and hi[c] > b))

    def is_reciprocal(self, rtol=1e-12) -> bool:
        for a, b in RECIPROCAL_TIES:
            ca, cb = self.channel(*a), self.channel(*b)
            if not ca.same_form(cb):
                return False
            if not np.allclose(ca.values, cb.values, rtol=rtol, atol=0.0):
                return False
        return True

    def symmetric_part(self) -> "LossModel":
        """The reciprocal model whose tied channels are the average of the two agents' views.

        An agent model equals this conservative part plus an antisymmetric remainder
        (half the difference of the two views), which engines apply separately.
        """
        channels = [replace(c, values=c.values.copy()) for c in self.channels]
        keys = [c.key for c in channels]
        for a, b in RECIPROCAL_TIES:
            ca, cb = channels[keys.index(a)], channels[keys.index(b)]
            if not ca.same_form(cb):
                raise ValueError(f"{ca.name} and {cb.name}: the two views of one invariant must share one basis "
                                 "and grid to be split into symmetric and antisymmetric parts")
            mean = 0.5 * (ca.values + cb.values)
            ca.values, cb.values = mean, mean.copy()
        return LossModel("reciprocal", channels, self.r_cut, self.r_switch, self.k_wall,
                         dict(self.fit_metrics), dict(self.provenance, symmetric_part_of=self.mode),
                         self.charge_h, self.seen)

    def antisymmetric_part(self) -> "LossModel":
        """The agent model minus its symmetric part, without walls (they cancel): on each tied
        channel half the difference of the two views (+ in the O view, - in the H view),
        zero elsewhere. Forces are linear in the spline values, so this model's forces are
        exactly the remainder, in one pass. With an asymmetry range r_a its cutoff is r_a,
        switched from r_a - ASYMMETRY_SWITCH_NM (within r_switch, where the model's own
        switch is 1, so the pair remainder is exactly the one switch)."""
        return self._parts()[1]

    def _parts(self) -> tuple["LossModel", "LossModel"]:
        """(symmetric_part, antisymmetric_part), the first computed once for both."""
        sym = self.symmetric_part()
        channels = [replace(a, values=a.values - b.values) for a, b in zip(self.channels, sym.channels)]
        if self.asymmetry_range is None:
            return sym, LossModel("agent", channels, self.r_cut, self.r_switch, k_wall=0.0)
        return sym, LossModel("agent", channels, self.asymmetry_range, self.asymmetry_range - ASYMMETRY_SWITCH_NM,
                              k_wall=0.0)

    # ------------------------------------------------------------ file

    def to_dict(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "mode": self.mode,
            "species": list(SPECIES),
            "units": {"length": "nm", "angle": "rad", "energy": "kJ/mol", "force": "kJ/mol/nm"},
            "basis": self.basis_text(),
            "outside_range": "linear extension with the end slope, plus k_wall * (distance from the end)^2 "
                            f"(angle: k_wall * ({kernels.ANGLE_WALL_ARM_NM} nm)^2 * (radians from the end)^2)",
            "r_cut": self.r_cut,
            "r_switch": self.r_switch,
            "asymmetry_range": self.asymmetry_range,
            "charges": None if self.charge_h is None else {
                "H": self.charge_h, "O": -2.0 * self.charge_h, "unit": "e",
                "electrostatics": "Ewald/PME over the periodic box, real-space cutoff r_cut, "
                                  "intramolecular pairs excluded"},
            "k_wall": self.k_wall,
            "seen_range": self.seen,
            "channels": [c.to_dict() for c in self.channels],
            "fit_metrics": self.fit_metrics,
            "provenance": self.provenance,
        }

    def save(self, path) -> Path:
        return write_json_atomic(path, self.to_dict())  # never leave a half-written model behind

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "LossModel":
        def need(obj, key, where, types):
            if key not in obj:
                raise ModelFileError(f"{source}: missing field {where}{key!r}")
            val = obj[key]
            if not isinstance(val, types) or isinstance(val, bool) and types is not bool:
                raise ModelFileError(f"{source}: field {where}{key!r} has type {type(val).__name__}")
            return val

        if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
            raise ModelFileError(f"{source}: not an {FORMAT_NAME} file (field 'format')")
        version = need(d, "schema_version", "", int)
        if version != SCHEMA_VERSION:
            raise ModelFileError(f"{source}: schema_version {version} is not supported "
                                 f"(this version reads {SCHEMA_VERSION})")
        if d.get("species") != list(SPECIES):
            raise ModelFileError(f"{source}: species must be {list(SPECIES)}")
        units = need(d, "units", "", dict)
        if units.get("length") != "nm" or units.get("energy") != "kJ/mol":
            raise ModelFileError(f"{source}: units must be nm and kJ/mol, got {units}")
        channels = []
        for k, c in enumerate(need(d, "channels", "", list)):
            where = f"channels[{k}]."
            values = np.asarray(need(c, "values", where, list), dtype=float)
            if values.ndim != 1 or len(values) < 4 or not np.all(np.isfinite(values)):
                raise ModelFileError(f"{source}: {where}values must be >= 4 finite numbers")
            basis = c.get("basis", Channel.basis)
            head = (need(c, "agent", where, str), c.get("neighbour"), need(c, "kind", where, str),
                    float(need(c, "x0", where, (int, float))))
            if basis == ChebyshevChannel.basis:
                x1 = float(need(c, "x1", where, (int, float)))
                if not x1 > head[3]:
                    raise ModelFileError(f"{source}: {where}x1 must be above x0")
                channels.append(ChebyshevChannel(*head, x1, values))
                continue
            if basis != Channel.basis:
                raise ModelFileError(f"{source}: {where}basis {basis!r} is not one of "
                                     f"{[Channel.basis, ChebyshevChannel.basis]}")
            h = float(need(c, "h", where, (int, float)))
            if not h > 0:
                raise ModelFileError(f"{source}: {where}h must be positive")
            channels.append(Channel(*head, h, values))
        r_cut = float(need(d, "r_cut", "", (int, float)))
        r_switch = float(need(d, "r_switch", "", (int, float)))
        if not 0 < r_switch < r_cut:
            raise ModelFileError(f"{source}: need 0 < r_switch < r_cut")
        charges = d.get("charges")
        charge_h = None
        if charges is not None:
            charge_h = float(need(charges, "H", "charges.", (int, float)))
            if not math.isclose(float(need(charges, "O", "charges.", (int, float))), -2.0 * charge_h,
                                rel_tol=1e-9) or charges.get("unit") != "e":
                raise ModelFileError(f"{source}: charges must be in e with O = -2 H (a neutral water)")
        r_a = d.get("asymmetry_range")
        if r_a is not None and (isinstance(r_a, bool) or not isinstance(r_a, (int, float)) or not math.isfinite(r_a)):
            raise ModelFileError(f"{source}: asymmetry_range must be a number (nm) or null")
        seen = d.get("seen_range")
        if seen is not None:
            names = {c.name for c in channels}
            if not isinstance(seen, dict) or set(seen) != names or not all(
                    isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) and math.isfinite(x)
                                                               and not isinstance(x, bool) for x in v) and v[0] <= v[1]
                    for v in seen.values()):
                raise ModelFileError(f"{source}: seen_range must give [smallest, largest] for every channel")
            seen = {k: [float(a), float(b)] for k, (a, b) in seen.items()}
        try:
            model = cls(mode=need(d, "mode", "", str), channels=channels, r_cut=r_cut,
                        r_switch=r_switch, k_wall=float(need(d, "k_wall", "", (int, float))),
                        fit_metrics=d.get("fit_metrics", {}), provenance=d.get("provenance", {}),
                        charge_h=charge_h, seen=seen, asymmetry_range=None if r_a is None else float(r_a))
        except ModelFileError as e:
            raise ModelFileError(f"{source}: {e}") from None
        for c in channels:
            if c.kind == "inter" and not math.isclose(c.x1, r_cut, rel_tol=1e-9):
                raise ModelFileError(f"{source}: channel {c.name} must end at r_cut = {r_cut}")
        if model.mode == "reciprocal" and not model.is_reciprocal(rtol=1e-9):
            raise ModelFileError(f"{source}: mode is reciprocal but tied channels differ")
        return model

    @classmethod
    def load(cls, path) -> "LossModel":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelFileError(f"{path}: no such model file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelFileError(f"{path}: not a JSON model file ({e})") from None
        except OSError as e:
            raise ModelFileError(f"{path}: cannot be read ({e.strerror or e})") from None
        try:
            return cls.from_dict(d, source=str(path))
        except ModelFileError:
            raise
        except (TypeError, ValueError, AttributeError, KeyError) as e:
            raise ModelFileError(f"{path}: {type(e).__name__} {e}") from None


def model_deviation(forces) -> float:
    """DP-GEN's force deviation of a committee's forces (k, n_atoms, 3): the largest over
    atoms of sqrt(mean over members of |F_k - mean F|^2), kJ/mol/nm."""
    forces = np.asarray(forces, float)
    return float(np.sqrt(((forces - forces.mean(axis=0)) ** 2).sum(axis=2).mean(axis=0)).max())


def pair_channel_table() -> np.ndarray:
    """pair_channel[agent species, neighbour species, intra] -> channel index or -1."""
    t = -np.ones((2, 2, 2), np.int64)
    for c, (a, b, kind) in enumerate(CHANNEL_KEYS):
        if kind != "angle":
            t[SPECIES_INDEX[a], SPECIES_INDEX[b], int(kind == "intra")] = c
    return t


def angle_channel_table() -> np.ndarray:
    t = -np.ones(2, np.int64)
    for c, (a, _, kind) in enumerate(CHANNEL_KEYS):
        if kind == "angle":
            t[SPECIES_INDEX[a]] = c
    return t
