"""Water molecules from geometry, and the matching OpenMM / mdtraj topologies.

Species are coded as integers everywhere in the numerical code: O = 0, H = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from ..units import KB_KJMOL_K

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


def openmm_topology(n_molecules: int, box_nm=None):
    """An openmm.app.Topology of n water molecules in O H H order (residue HOH)."""
    from openmm import Vec3, app, unit

    top = app.Topology()
    chain = top.addChain()
    oxygen, hydrogen = app.element.oxygen, app.element.hydrogen
    for _ in range(n_molecules):
        res = top.addResidue("HOH", chain)
        o = top.addAtom("O", oxygen, res)
        h1 = top.addAtom("H1", hydrogen, res)
        h2 = top.addAtom("H2", hydrogen, res)
        top.addBond(o, h1)
        top.addBond(o, h2)
    if box_nm is not None:
        top.setPeriodicBoxVectors(
            [Vec3(box_nm[0], 0, 0), Vec3(0, box_nm[1], 0), Vec3(0, 0, box_nm[2])] * unit.nanometer
        )
    return top


def mdtraj_topology(n_molecules: int):
    import mdtraj

    return mdtraj.Topology.from_openmm(openmm_topology(n_molecules))


def molecule_ids(molecules: np.ndarray, n_atoms: int) -> np.ndarray:
    mol_id = -np.ones(n_atoms, np.int64)
    for k in range(3):
        mol_id[molecules[:, k]] = np.arange(len(molecules))
    if np.any(mol_id < 0):
        raise ValueError("some atoms belong to no molecule")
    return mol_id


@dataclass
class WaterSystem:
    """What the kernels need about a water box: species codes and molecules."""

    species: np.ndarray
    molecules: np.ndarray
    #: each atom's 0-based index in the CP2K files (a periodic replica repeats the
    #: original's); None when the atoms did not come from a CP2K run
    cp2k_index: np.ndarray | None = None

    @classmethod
    def from_frame(cls, elements, positions, box):
        return cls(species_codes(elements), find_water_molecules(positions, elements, box))

    @property
    def molecule_id(self):
        return molecule_ids(self.molecules, len(self.species))


# --------------------------------------------------------------- motion of the molecules

def temperature(velocities, masses, dof: int | None = None) -> np.ndarray:
    """Instantaneous temperature (K) per frame from velocities (nm/ps) and masses (amu).

    dof defaults to 3N - 3 (centre-of-mass momentum removed), as CP2K and OpenMM count it.
    """
    v = np.asarray(velocities, float)
    if v.ndim == 2:
        v = v[None]
    m = np.asarray(masses, float)
    if dof is None:
        dof = 3 * v.shape[1] - 3
    kinetic2 = np.einsum("i,fij,fij->f", m, v, v)  # 2 * kinetic energy, kJ/mol
    return kinetic2 / (dof * KB_KJMOL_K)


#: Kinds of motion of kinetic_temperatures, in report order.
KINETIC_KINDS = ("O", "H", "translation", "rotation", "vibration")


def motion_parts(positions, velocities, masses, box) -> dict:
    """Velocities split into molecular translation, rigid rotation and internal vibration.

    positions, velocities: (n_frames, 3 n_mol, 3) or one frame, atoms in O H H order per
    molecule, nm and nm/ps; masses (amu) per atom; box: edges (3,) or (n_frames, 3) nm.
    The whole box's centre-of-mass velocity is removed first. Each molecule's velocities
    are its centre-of-mass velocity, plus w x r with w from its angular momentum and its
    instantaneous inertia tensor, plus the rest: an orthogonal split in the mass metric,
    so the kinetic energies add up. Returns {"translation", "rotation", "vibration"} ->
    arrays shaped like velocities (always with a frame axis). Vectorised, no loops.
    """
    x = np.asarray(positions, float)
    v = np.asarray(velocities, float)
    if x.ndim == 2:
        x, v = x[None], v[None]
    m = np.asarray(masses, float)
    n_frames, n_atoms = x.shape[:2]
    if n_atoms % 3 or v.shape != x.shape or m.shape != (n_atoms,):
        raise ValueError("positions, velocities (n_frames, 3 n_mol, 3) and masses (3 n_mol,) must match")
    n_mol = n_atoms // 3
    box = np.broadcast_to(np.asarray(box, float).reshape(-1, 3), (n_frames, 3))[:, None, None, :]
    v = v - np.einsum("i,fij->fj", m, v)[:, None, :] / m.sum()
    xm, vm, mm = x.reshape(n_frames, n_mol, 3, 3), v.reshape(n_frames, n_mol, 3, 3), m.reshape(n_mol, 3)
    rel = xm - xm[:, :, :1]  # whole molecules: each H at the minimum image of its own O
    rel -= box * np.rint(rel / box)
    mol_mass = mm.sum(axis=1)[None, :, None]
    r = rel - (np.einsum("ma,fmak->fmk", mm, rel) / mol_mass)[:, :, None]
    vcom = np.einsum("ma,fmak->fmk", mm, vm) / mol_mass
    u = vm - vcom[:, :, None]
    ang = np.einsum("ma,fmak->fmk", mm, np.cross(r, u))
    inertia = (np.einsum("ma,fmak,fmak->fm", mm, r, r)[..., None, None] * np.eye(3)
               - np.einsum("ma,fmak,fmal->fmkl", mm, r, r))
    omega = np.linalg.solve(inertia, ang[..., None])[..., 0]
    rot = np.cross(omega[:, :, None], r)
    shape = (n_frames, n_atoms, 3)
    return {"translation": np.broadcast_to(vcom[:, :, None], vm.shape).reshape(shape),
            "rotation": rot.reshape(shape), "vibration": (u - rot).reshape(shape)}


def kinetic_temperatures(positions, velocities, masses, box) -> dict:
    """Kinetic temperature (K) per frame of each species and of each kind of molecular motion.

    Arguments as motion_parts. Velocities are taken in the frame of the whole box's
    centre of mass (its 3 degrees of freedom are removed, shared among species by
    mass); translation, rotation and vibration have 3 degrees of freedom per molecule
    each and all sit at T in equilibrium. Returns {"O", "H", "translation", "rotation",
    "vibration", "total"} -> (n_frames,) arrays.
    """
    parts = motion_parts(positions, velocities, masses, box)
    m = np.asarray(masses, float)
    n_atoms = len(m)
    v = sum(parts.values())
    kinetic = {k: np.einsum("i,fik->f", m, p**2) for k, p in parts.items()}  # twice the energy
    kinetic["total"] = np.einsum("i,fik->f", m, v**2)
    dof = {"translation": n_atoms - 3, "rotation": n_atoms, "vibration": n_atoms, "total": 3 * n_atoms - 3}
    for name, sel in (("O", np.arange(n_atoms) % 3 == 0), ("H", np.arange(n_atoms) % 3 != 0)):
        kinetic[name] = np.einsum("i,fik->f", m[sel], v[:, sel] ** 2)
        dof[name] = 3 * sel.sum() - 3 * m[sel].sum() / m.sum()
    return {k: kinetic[k] / (dof[k] * KB_KJMOL_K) for k in KINETIC_KINDS + ("total",)}


# --------------------------------------------------------------------------- uncertainty
