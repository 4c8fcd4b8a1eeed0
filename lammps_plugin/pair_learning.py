"""An openmm-learning model as a LAMMPS `pair_style python` class.

Standalone on purpose: LAMMPS embeds its own Python interpreter, which may lack numpy,
numba and this package, so this file uses the standard library only. The deck writer
copies it next to the model file; in the deck:

    pair_style python 6.0
    pair_coeff * * learned_pair.LearnedPair O H      # LAMMPS type 1 is O, type 2 is H

and run LAMMPS with that folder on PYTHONPATH. The model file is `model.json` beside
this module (or the file named by the environment variable OPENMM_LEARNING_MODEL).

It evaluates the intermolecular pair channels of the model: in reciprocal mode the
model's own, in agent mode their symmetric part (the mean of the O and H agents' views
of O-H); the antisymmetric remainder of an agent model is applied by `fix external`
(see lammps_plugin.agent). Intramolecular pairs must be excluded (special_bonds 0 0 0).
"""

import json
import math
import os

#: kJ/mol -> the energy unit of each supported LAMMPS unit style (distances in A).
ENERGY_FROM_KJMOL = {"real": 1.0 / 4.184, "metal": 1.0 / 96.48533212331}


def natural_spline_second_derivatives(values, h):
    """Second derivatives of the natural cubic spline through equally spaced values.

    The same interpolation as OpenMM's Continuous1DFunction and the package's numba
    kernels (Thomas algorithm; pure Python so it runs in any embedded interpreter).
    """
    n = len(values)
    z = [0.0] * n
    if n < 3:
        return z
    c = [0.0] * n  # modified super-diagonal
    d = [0.0] * n  # modified right-hand side
    for i in range(1, n - 1):
        rhs = 6.0 * (values[i + 1] - 2.0 * values[i] + values[i - 1]) / (h * h)
        denom = 4.0 - c[i - 1]
        c[i] = 1.0 / denom
        d[i] = (rhs - d[i - 1]) / denom
    for i in range(n - 2, 0, -1):
        z[i] = d[i] - c[i] * z[i + 1]
    return z


class PairChannel:
    """One intermolecular channel: switched, clamped spline plus the wall below its grid."""

    def __init__(self, x0, h, values, r_switch, r_cut, k_wall):
        self.x0, self.h, self.y = x0, h, list(values)
        self.z = natural_spline_second_derivatives(self.y, h)
        self.n = len(self.y)
        self.r_switch, self.r_cut, self.k_wall = r_switch, r_cut, k_wall

    def energy_and_derivative(self, r):
        """E(r) and dE/dr in kJ/mol and kJ/mol/nm, r in nm (0 beyond the cutoff)."""
        if r >= self.r_cut:
            return 0.0, 0.0
        x = max(r, self.x0)
        j = min(int((x - self.x0) / self.h), self.n - 2)
        b = (x - (self.x0 + j * self.h)) / self.h
        a = 1.0 - b
        h = self.h
        y, z = self.y, self.z
        e = a * y[j] + b * y[j + 1] + ((a**3 - a) * z[j] + (b**3 - b) * z[j + 1]) * h * h / 6.0
        de = 0.0
        if r >= self.x0:
            de = (y[j + 1] - y[j]) / h + (-(3 * a * a - 1) * z[j] + (3 * b * b - 1) * z[j + 1]) * h / 6.0
        else:
            e += self.k_wall * (self.x0 - r) ** 2
            de = -2.0 * self.k_wall * (self.x0 - r)
        if r <= self.r_switch:
            return e, de
        w = self.r_cut - self.r_switch
        t = (r - self.r_switch) / w
        s = 1.0 + t**3 * (-10.0 + t * (15.0 - 6.0 * t))
        ds = t * t * (-30.0 + t * (60.0 - 30.0 * t)) / w
        return s * e, ds * e + s * de


def symmetric_pair_channels(model: dict) -> dict:
    """{(species, species): PairChannel} of a model file's intermolecular channels."""
    chans = {(c["agent"], c["neighbour"]): c for c in model["channels"] if c["kind"] == "inter"}
    out = {}
    for a, b in (("O", "O"), ("O", "H"), ("H", "H")):
        ab, ba = chans[(a, b)], chans[(b, a)]
        if (ab["x0"], ab["h"], len(ab["values"])) != (ba["x0"], ba["h"], len(ba["values"])):
            raise ValueError(f"channels {a}-{b} and {b}-{a} have different grids")
        values = [0.5 * (u + v) for u, v in zip(ab["values"], ba["values"])]
        ch = PairChannel(ab["x0"], ab["h"], values, model["r_switch"], model["r_cut"], model["k_wall"])
        out[(a, b)] = out[(b, a)] = ch
    return out


class LearnedPair:
    """The interface `pair_style python` calls: map_coeff, check_units, compute_force/energy."""

    model_file = "model.json"

    def __init__(self):
        path = os.environ.get("OPENMM_LEARNING_MODEL") or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), self.model_file)
        with open(path) as fh:
            model = json.load(fh)
        if model.get("format") != "openmm-learning-model":
            raise ValueError(f"{path} is not an openmm-learning model file")
        self.mode = model["mode"]
        self.r_cut_angstrom = 10.0 * model["r_cut"]
        self.channels = symmetric_pair_channels(model)
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

    def _channel(self, itype, jtype):
        return self.channels[(self.pmap[itype], self.pmap[jtype])]

    def compute_force(self, rsq, itype, jtype):
        """Force divided by r (energy/A^2), as pair_style python expects."""
        r = math.sqrt(rsq)
        _, de = self._channel(itype, jtype).energy_and_derivative(0.1 * r)
        return -de * 0.1 * self.scale / r

    def compute_energy(self, rsq, itype, jtype):
        e, _ = self._channel(itype, jtype).energy_and_derivative(0.1 * math.sqrt(rsq))
        return e * self.scale
