"""An openmm-learning model as a LAMMPS `pair_style python` class.

Standalone on purpose: LAMMPS embeds its own Python interpreter, which may lack numpy,
numba and this package, so this file uses the standard library only. It fits and derives
nothing: the deck writer (lammps_plugin.writer.write_pair_coefficients) writes the pair
terms of the model's symmetric part as `pair_coefficients.json` beside this module,
with the spline's second derivatives and end slope already computed by the package.
In the deck:

    pair_style python 6.0
    pair_coeff * * learned_pair.LearnedPair O H      # LAMMPS type 1 is O, type 2 is H

and run LAMMPS with that folder on PYTHONPATH (or name the coefficients file with the
environment variable OPENMM_LEARNING_PAIR_COEFFICIENTS). In agent mode the
antisymmetric remainder is applied by `fix external` (see lammps_plugin.agent).
Intramolecular pairs must be excluded (special_bonds 0 0 0).
"""

import json
import math
import os

FORMAT = "openmm-learning-pair-coefficients"
VERSION = 1
#: kJ/mol -> the energy unit of each supported LAMMPS unit style (distances in A). LAMMPS
#: loads this file by itself, without the package: openmm_learning.units' factors, written
#: out (tests/test_lammps.py checks they are the same)
ENERGY_FROM_KJMOL = {"real": 1.0 / 4.184, "metal": 1.0 / 96.48533212331}


class PairTerm:
    """One pair term: spline table, its linear extension and wall below, the switch."""

    def __init__(self, x0, h, y, z, slope_lo, r_switch, r_cut, k_wall):
        self.x0, self.h, self.y, self.z, self.slope_lo = x0, h, y, z, slope_lo
        self.n = len(y)
        self.r_switch, self.r_cut, self.k_wall = r_switch, r_cut, k_wall

    def energy_and_derivative(self, r):
        """E(r) and dE/dr in kJ/mol and kJ/mol/nm, r in nm (0 beyond the cutoff)."""
        if r >= self.r_cut:
            return 0.0, 0.0
        x = max(r, self.x0)
        j = min(int((x - self.x0) / self.h), self.n - 2)
        b = (x - (self.x0 + j * self.h)) / self.h
        a = 1.0 - b
        h, y, z = self.h, self.y, self.z
        e = a * y[j] + b * y[j + 1] + ((a**3 - a) * z[j] + (b**3 - b) * z[j + 1]) * h * h / 6.0
        de = (y[j + 1] - y[j]) / h + (-(3 * a * a - 1) * z[j] + (3 * b * b - 1) * z[j + 1]) * h / 6.0
        if r < self.x0:  # linear extension with the end slope, plus the wall
            e += self.slope_lo * (r - self.x0) + self.k_wall * (self.x0 - r) ** 2
            de = self.slope_lo - 2.0 * self.k_wall * (self.x0 - r)
        if r <= self.r_switch:
            return e, de
        w = self.r_cut - self.r_switch
        t = (r - self.r_switch) / w
        s = 1.0 + t**3 * (-10.0 + t * (15.0 - 6.0 * t))
        ds = t * t * (-30.0 + t * (60.0 - 30.0 * t)) / w
        return s * e, ds * e + s * de


def read_pair_terms(path) -> dict:
    """{(species, species): PairTerm} from a coefficients file; says what is wrong and where."""
    with open(path) as fh:
        doc = json.load(fh)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise ValueError(f"{path}: not an {FORMAT} file of version {VERSION}; "
                         "write it with lammps_plugin.writer.write_pair_coefficients")
    terms = {}
    for a, b in (("O", "O"), ("O", "H"), ("H", "H")):
        c = doc["pairs"][a + b]
        if len(c["y"]) != len(c["z"]) or len(c["y"]) < 4:
            raise ValueError(f"{path}: pair {a + b} needs equal y and z lists of >= 4 numbers")
        term = PairTerm(c["x0"], c["h"], c["y"], c["z"], c["slope_lo"], doc["r_switch"], doc["r_cut"],
                        doc["k_wall"])
        terms[(a, b)] = terms[(b, a)] = term
    return terms


class LearnedPair:
    """The interface `pair_style python` calls: map_coeff, check_units, compute_force/energy."""

    coefficients_file = "pair_coefficients.json"

    def __init__(self):
        path = os.environ.get("OPENMM_LEARNING_PAIR_COEFFICIENTS") or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), self.coefficients_file)
        self.terms = read_pair_terms(path)
        self.pmap = {}
        self.units = None
        self.scale = None

    def map_coeff(self, name, ltype):
        if name not in ("O", "H"):
            raise ValueError(f"pair_coeff maps LAMMPS type {ltype} to {name!r}: use O or H")
        self.pmap[ltype] = name

    def check_units(self, units):
        if units not in ENERGY_FROM_KJMOL:
            raise ValueError(f"units {units!r} are not supported: use 'units real' or 'units metal'")
        self.units = units
        self.scale = ENERGY_FROM_KJMOL[units]

    def _term(self, itype, jtype):
        return self.terms[(self.pmap[itype], self.pmap[jtype])]

    def compute_force(self, rsq, itype, jtype):
        """Force divided by r (energy/A^2), as pair_style python expects."""
        r = math.sqrt(rsq)
        _, de = self._term(itype, jtype).energy_and_derivative(0.1 * r)
        return -de * 0.1 * self.scale / r

    def compute_energy(self, rsq, itype, jtype):
        e, _ = self._term(itype, jtype).energy_and_derivative(0.1 * math.sqrt(rsq))
        return e * self.scale
