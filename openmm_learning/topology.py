"""Water molecules from geometry, and the matching OpenMM / mdtraj topologies.

Species are coded as integers everywhere in the numerical code: O = 0, H = 1.
"""

from __future__ import annotations

import numpy as np
from numba import njit

SPECIES = ("O", "H")
SPECIES_INDEX = {name: i for i, name in enumerate(SPECIES)}

#: Longest O-H distance (nm) still accepted as a covalent bond.
MAX_BOND_NM = 0.13


class TopologyError(ValueError):
    """The geometry is not a box of intact water molecules."""


def species_codes(elements) -> np.ndarray:
    """Element symbols -> species codes (O = 0, H = 1); anything else is an error."""
    codes = np.empty(len(elements), dtype=np.int64)
    for i, el in enumerate(elements):
        key = el.strip().capitalize()
        if key not in SPECIES_INDEX:
            raise TopologyError(f"atom {i} is {el!r}: only water (O and H) is supported")
        codes[i] = SPECIES_INDEX[key]
    return codes


@njit(cache=True)
def _nearest_two_h(pos, box, o_idx, h_idx):
    n_o = o_idx.shape[0]
    nearest = np.empty((n_o, 2), dtype=np.int64)
    dist = np.empty((n_o, 2))
    for a in range(n_o):
        best0, best1 = -1, -1
        d0, d1 = 1e30, 1e30
        po = pos[o_idx[a]]
        for b in range(h_idx.shape[0]):
            d2 = 0.0
            for k in range(3):
                dx = pos[h_idx[b], k] - po[k]
                dx -= box[k] * np.rint(dx / box[k])
                d2 += dx * dx
            if d2 < d0:
                best1, d1 = best0, d0
                best0, d0 = b, d2
            elif d2 < d1:
                best1, d1 = b, d2
        nearest[a, 0] = h_idx[best0]
        nearest[a, 1] = h_idx[best1]
        dist[a, 0] = np.sqrt(d0)
        dist[a, 1] = np.sqrt(d1)
    return nearest, dist


def find_water_molecules(positions: np.ndarray, elements, box: np.ndarray) -> np.ndarray:
    """Return an (n_molecules, 3) array of atom indices (O, H1, H2).

    Each O takes its two nearest H under periodic boundaries (positions and box in nm).
    A hydrogen claimed by two oxygens, one claimed by none, or a bond longer than
    MAX_BOND_NM is a broken molecule and raises TopologyError.
    """
    codes = species_codes(elements)
    o_idx = np.flatnonzero(codes == 0)
    h_idx = np.flatnonzero(codes == 1)
    if len(h_idx) != 2 * len(o_idx):
        raise TopologyError(f"{len(o_idx)} O and {len(h_idx)} H atoms: not a water box (need 2 H per O)")
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    nearest, dist = _nearest_two_h(pos, np.asarray(box, dtype=np.float64), o_idx, h_idx)
    long = np.argwhere(dist > MAX_BOND_NM)
    if len(long):
        a, k = long[0]
        raise TopologyError(
            f"broken molecule: O atom {o_idx[a]} has its nearest H {nearest[a, k]} at "
            f"{dist[a, k]:.4f} nm (> {MAX_BOND_NM} nm)")
    claimed, counts = np.unique(nearest, return_counts=True)
    if np.any(counts > 1):
        h = claimed[counts > 1][0]
        owners = o_idx[np.any(nearest == h, axis=1)]
        raise TopologyError(f"broken molecule: H atom {h} is the nearest H of O atoms {list(owners)}")
    return np.column_stack([o_idx, np.sort(nearest, axis=1)]).astype(np.int64)


def water_order(molecules: np.ndarray) -> np.ndarray:
    """Atom permutation that puts the atoms in O H H order, molecule by molecule."""
    return molecules.reshape(-1)


def openmm_topology(n_molecules: int, box_nm=None):
    """An openmm.app.Topology of n water molecules in O H H order (residue HOH)."""
    from openmm import app, unit, Vec3

    top = app.Topology()
    chain = top.addChain()
    O, H = app.element.oxygen, app.element.hydrogen
    for _ in range(n_molecules):
        res = top.addResidue("HOH", chain)
        o = top.addAtom("O", O, res)
        h1 = top.addAtom("H1", H, res)
        h2 = top.addAtom("H2", H, res)
        top.addBond(o, h1)
        top.addBond(o, h2)
    if box_nm is not None:
        top.setPeriodicBoxVectors([Vec3(box_nm[0], 0, 0), Vec3(0, box_nm[1], 0), Vec3(0, 0, box_nm[2])] * unit.nanometer)
    return top


def mdtraj_topology(n_molecules: int):
    import mdtraj

    return mdtraj.Topology.from_openmm(openmm_topology(n_molecules))
