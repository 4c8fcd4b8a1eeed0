"""Ewald sum of water's point charges: the long-range design column and reference forces.

A model with charges gives every H the charge q_H and every O -2 q_H (the box stays
neutral), intramolecular pairs excluded as in SPC/Fw. Coulomb forces scale with q_H^2, so
the forces of unit charges (q_H = 1 e) are one column of the force-matching design and the
fitted coefficient is q_H^2. Engines run the same term with PME (OpenMM NonbondedForce,
LAMMPS coul/long + pppm); this module is the exact reference they are checked against.

Units: nm, kJ/mol, e; Coulomb's constant COULOMB = 1 / (4 pi eps0).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import kernels

#: 1 / (4 pi eps0) in kJ/mol nm / e^2 (OpenMM's ONE_4PI_EPS0)
COULOMB = 138.935456
#: relative size of the neglected real-space and reciprocal-space terms
DEFAULT_TOLERANCE = 1e-8
#: unit charges per species code (O = 0, H = 1): q_O = -2 q_H
UNIT_CHARGES = np.array([-2.0, 1.0])


def parameters(box, r_cut, tolerance=DEFAULT_TOLERANCE):
    """Splitting alpha (1/nm) and the largest reciprocal index per axis for a real-space
    cutoff r_cut (nm): erfc(alpha r_cut) = tolerance, exp(-k^2 / 4 alpha^2) < tolerance."""
    lo, hi = 0.0, 20.0
    for _ in range(100):  # bisection on erfc(x) = tolerance (erfc is decreasing)
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if math.erfc(mid) > tolerance else (lo, mid)
    alpha = hi / r_cut
    k_max = 2.0 * alpha * math.sqrt(-math.log(tolerance))
    n_max = np.ceil(k_max * np.asarray(box, float) / (2 * np.pi)).astype(np.int64)
    return alpha, k_max, n_max


def unit_charge_forces(pos, box, species, molecules, molecule_id, r_cut, tolerance=DEFAULT_TOLERANCE):
    """Forces (n, 3) kJ/mol/nm and per-atom energies (n,) kJ/mol of unit water charges
    (q_H = 1, q_O = -2), intramolecular pairs excluded, by an Ewald sum."""
    box = np.asarray(box, float)
    if np.any(box < 2 * r_cut):
        raise ValueError(f"Ewald real-space cutoff {r_cut} nm needs a box of at least twice it, got {box}")
    alpha, k_max, n_max = parameters(box, r_cut, tolerance)
    q = UNIT_CHARGES[np.asarray(species, np.int64)]
    pos = np.ascontiguousarray(pos, float)
    pi, pj, _ = kernels.neighbour_pairs(pos, box, r_cut, molecule_id)
    return _ewald(pos, box, q, pi, pj, np.asarray(molecules, np.int64), alpha, k_max, n_max)


@njit(cache=True)
def _pair(f, e, pos, box, q, i, j, alpha, excluded):
    """Real-space erfc term of a pair, or (excluded) minus the erf term the reciprocal sum
    included for it."""
    d = pos[i] - pos[j]
    for k in range(3):
        d[k] -= box[k] * np.rint(d[k] / box[k])
    r = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
    qq = COULOMB * q[i] * q[j]
    gauss = 2.0 * alpha / np.sqrt(np.pi) * np.exp(-(alpha * r) ** 2)
    if excluded:
        energy = -qq * math.erf(alpha * r) / r
        scale = -qq * (math.erf(alpha * r) / r - gauss) / (r * r)
    else:
        energy = qq * math.erfc(alpha * r) / r
        scale = qq * (math.erfc(alpha * r) / r + gauss) / (r * r)
    for k in range(3):
        f[i, k] += scale * d[k]
        f[j, k] -= scale * d[k]
    e[i] += 0.5 * energy
    e[j] += 0.5 * energy


@njit(cache=True)
def _ewald(pos, box, q, pi, pj, molecules, alpha, k_max, n_max):
    n = pos.shape[0]
    f = np.zeros((n, 3))
    e = np.zeros(n)
    for t in range(pi.shape[0]):
        _pair(f, e, pos, box, q, pi[t], pj[t], alpha, False)
    for m in range(molecules.shape[0]):
        o, h1, h2 = molecules[m, 0], molecules[m, 1], molecules[m, 2]
        _pair(f, e, pos, box, q, o, h1, alpha, True)
        _pair(f, e, pos, box, q, o, h2, alpha, True)
        _pair(f, e, pos, box, q, h1, h2, alpha, True)
    for i in range(n):
        e[i] -= COULOMB * alpha / np.sqrt(np.pi) * q[i] * q[i]
    # reciprocal space over half of the k vectors (k and -k contribute alike)
    volume = box[0] * box[1] * box[2]
    phase = np.empty((3, n, 2 * n_max.max() + 1), np.complex128)
    for k in range(3):
        for i in range(n):
            step = np.exp(1j * 2.0 * np.pi * pos[i, k] / box[k])
            back = 1.0 / step
            phase[k, i, n_max[k]] = 1.0
            for m in range(1, n_max[k] + 1):
                phase[k, i, n_max[k] + m] = phase[k, i, n_max[k] + m - 1] * step
                phase[k, i, n_max[k] - m] = phase[k, i, n_max[k] - m + 1] * back
    eik = np.empty(n, np.complex128)
    for a in range(0, n_max[0] + 1):
        for b in range(-n_max[1], n_max[1] + 1):
            for c in range(-n_max[2], n_max[2] + 1):
                if a == 0 and (b < 0 or (b == 0 and c <= 0)):
                    continue
                kx, ky, kz = 2 * np.pi * a / box[0], 2 * np.pi * b / box[1], 2 * np.pi * c / box[2]
                k2 = kx * kx + ky * ky + kz * kz
                if k2 > k_max * k_max:
                    continue
                g = 8.0 * np.pi / volume * COULOMB * np.exp(-k2 / (4 * alpha * alpha)) / k2
                s = 0.0j
                for i in range(n):
                    eik[i] = phase[0, i, n_max[0] + a] * phase[1, i, n_max[1] + b] * phase[2, i, n_max[2] + c]
                    s += q[i] * eik[i]
                for i in range(n):
                    w = np.conj(s) * eik[i]
                    e[i] += 0.5 * g * q[i] * w.real
                    fi = g * q[i] * w.imag
                    f[i, 0] += fi * kx
                    f[i, 1] += fi * ky
                    f[i, 2] += fi * kz
    return f, e
