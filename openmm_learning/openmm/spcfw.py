"""SPC/Fw flexible water as an openmm.System: the classical baseline row of the validation.

Parameters of Wu, Tepper & Voth, J. Chem. Phys. 124, 024503 (2006): charges O -0.82 /
H +0.41; O-O Lennard-Jones sigma 3.165492 A, epsilon 0.1554253 kcal/mol; harmonic O-H
bond k = 1059.162 kcal/mol/A^2 (E = k/2 (r - r0)^2), r0 1.012 A; harmonic H-O-H angle
k = 75.90 kcal/mol/rad^2, theta0 113.24 deg; intramolecular nonbonded pairs excluded.
Long-range electrostatics by PME with a 0.6 nm real-space cutoff (the bundled CP2K SPC/Fw
run cuts Lennard-Jones at 6 A and uses SPME; OpenMM's forces on its frames agree to 1e-3).
"""

from __future__ import annotations

import numpy as np
import openmm as mm

from ..units import KCAL_KJ, MASSES_AMU

CHARGES = {"O": -0.82, "H": 0.41}
SIGMA_OO_NM = 0.3165492
EPSILON_OO_KJMOL = 0.1554253 * KCAL_KJ
R0_OH_NM = 0.1012
K_OH_KJMOL_NM2 = 1059.162 * KCAL_KJ * 100.0  # OpenMM's HarmonicBondForce is k/2 (r - r0)^2, as SPC/Fw
THETA0_RAD = float(np.radians(113.24))
K_HOH_KJMOL_RAD2 = 75.90 * KCAL_KJ


def spcfw_system(n_molecules: int, box_nm, cutoff_nm: float = 0.6) -> mm.System:
    """SPC/Fw water for atoms in O H H order per molecule, orthorhombic box (nm), PME."""
    box_nm = np.asarray(box_nm, float) * np.ones(3)
    system = mm.System()
    system.setDefaultPeriodicBoxVectors(*(mm.Vec3(*(box_nm * e)) for e in np.eye(3)))
    nb = mm.NonbondedForce()
    nb.setNonbondedMethod(mm.NonbondedForce.PME)
    nb.setCutoffDistance(cutoff_nm)
    bonds, angles = mm.HarmonicBondForce(), mm.HarmonicAngleForce()
    for _ in range(n_molecules):
        o = system.addParticle(MASSES_AMU["O"])
        h1, h2 = system.addParticle(MASSES_AMU["H"]), system.addParticle(MASSES_AMU["H"])
        nb.addParticle(CHARGES["O"], SIGMA_OO_NM, EPSILON_OO_KJMOL)
        nb.addParticle(CHARGES["H"], 1.0, 0.0)
        nb.addParticle(CHARGES["H"], 1.0, 0.0)
        for h in (h1, h2):
            bonds.addBond(o, h, R0_OH_NM, K_OH_KJMOL_NM2)
            nb.addException(o, h, 0.0, 1.0, 0.0)
        nb.addException(h1, h2, 0.0, 1.0, 0.0)
        angles.addAngle(h1, o, h2, THETA0_RAD, K_HOH_KJMOL_RAD2)
    for f in (nb, bonds, angles):
        system.addForce(f)
    return system
