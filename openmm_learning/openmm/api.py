"""The fitted losses for OpenMM scripts, in the style of openmm-ml's MLPotential.

    import openmm.app as app, openmm.unit as unit
    from openmm_learning import LearnedWater

    pdb = app.PDBFile("water.pdb")                        # any periodic box of water
    water = LearnedWater("output/fit/agent.json")
    system = water.createSystem(pdb.topology)
    integrator = water.createIntegrator(pdb.topology, 300 * unit.kelvin, 0.5 * unit.femtosecond)
    simulation = app.Simulation(pdb.topology, system, integrator)

Molecules are found from the topology (each residue one O and two H), so any atom order
works. Agent mode needs the learning integrator (each species descends its own loss);
reporters of openmm_learning.openmm.reporters refuse to run an agent System under another.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openmm as mm
from openmm import app, unit

from ..io.topology import SPECIES, TopologyError
from ..losses.model import LossModel
from .forces import add_forces, create_system
from .integrator import LearningIntegrator
from .reporters import BlowUpGuard, ExtrapolationReporter, StateLogReporter


def _value(quantity, in_unit):
    """A plain number in in_unit from an openmm.unit Quantity (plain numbers pass through)."""
    return quantity.value_in_unit(in_unit) if unit.is_quantity(quantity) else float(quantity)


def water_of(topology: app.Topology):
    """Species code of every atom (O = 0, H = 1) and the (O, H1, H2) indices of every
    molecule, from an openmm.app.Topology whose residues are water molecules."""
    species = -np.ones(topology.getNumAtoms(), np.int64)
    molecules = []
    for res in topology.residues():
        atoms = {"O": [], "H": []}
        for atom in res.atoms():
            symbol = atom.element.symbol if atom.element is not None else atom.name[:1]
            if symbol not in atoms:
                raise TopologyError(f"residue {res.name} {res.id} (index {res.index}) holds a {symbol} atom "
                                    f"({atom.name}): the learned losses describe water only")
            atoms[symbol].append(atom.index)
        if len(atoms["O"]) != 1 or len(atoms["H"]) != 2:
            raise TopologyError(f"residue {res.name} {res.id} (index {res.index}) has {len(atoms['O'])} O and "
                                f"{len(atoms['H'])} H atoms: each residue must be one water molecule")
        molecules.append([atoms["O"][0], *sorted(atoms["H"])])
        for symbol, idx in atoms.items():
            species[idx] = SPECIES.index(symbol)
    if not molecules:
        raise TopologyError("the topology has no residues")
    return species, np.array(molecules, np.int64)


def box_of(topology: app.Topology) -> np.ndarray:
    """Orthorhombic box lengths (nm) of a topology; says what is missing otherwise."""
    vectors = topology.getPeriodicBoxVectors()
    if vectors is None:
        raise ValueError("the topology has no periodic box: learned water runs in a periodic box "
                         "(set it with topology.setPeriodicBoxVectors or a CRYST1 record in the PDB)")
    v = np.array([[x.value_in_unit(unit.nanometer) for x in vec] for vec in vectors])
    if np.any(np.abs(v - np.diag(np.diag(v))) > 1e-9):
        raise ValueError("the box is not orthorhombic; learned water supports rectangular boxes only")
    return np.diag(v).copy()


def replicate(topology: app.Topology, positions, n: int):
    """The n x n x n periodic replica of a water box: (topology, positions in nm), image after
    image. For boxes under twice the model's cutoff (CP2K's usual 27-32 waters)."""
    box = box_of(topology)
    pos = np.asarray(positions.value_in_unit(unit.nanometer) if unit.is_quantity(positions) else positions, float)
    out = app.Topology()
    chain = out.addChain()
    shifts = [np.array([i, j, k]) * box for i in range(n) for j in range(n) for k in range(n)]
    for _ in shifts:
        for res in topology.residues():
            r = out.addResidue(res.name, chain)
            for atom in res.atoms():
                out.addAtom(atom.name, atom.element, r)
    out.setPeriodicBoxVectors([mm.Vec3(*row) for row in np.diag(box * n)] * unit.nanometer)
    return out, np.concatenate([pos + s for s in shifts]) * unit.nanometer


class LearnedWater:
    """A fitted model (LossModel or model file) as forces and an integrator for any water topology."""

    def __init__(self, model):
        self.model = model if isinstance(model, LossModel) else LossModel.load(Path(model))

    @property
    def mode(self) -> str:
        return self.model.mode

    def createSystem(self, topology: app.Topology, removeCMMotion: bool = True) -> mm.System:
        """A System of the topology's water with the learned forces (masses as in CP2K's runs)."""
        species, molecules = water_of(topology)
        # agent mode needs the CMMotionRemover: its forces do not sum to zero
        return create_system(self.model, species, molecules, box_of(topology), remove_cm_motion=removeCMMotion)

    def addForces(self, topology: app.Topology, system: mm.System, forceGroup: int = 0) -> mm.System:
        """Add the learned forces to a System holding the topology's atoms (reciprocal mode
        puts them in forceGroup; agent mode uses groups 0 and 1, as the learning integrator expects).
        In agent mode the System also needs a CMMotionRemover(1): the agent forces do not sum
        to zero, and the integrator leaves the centre of mass to it (createSystem adds one)."""
        if system.getNumParticles() != topology.getNumAtoms():
            raise ValueError(f"the System has {system.getNumParticles()} particles, the topology "
                             f"{topology.getNumAtoms()} atoms")
        species, molecules = water_of(topology)
        return add_forces(self.model, system, species, molecules, box_of(topology), force_group=forceGroup)

    def createIntegrator(self, topology: app.Topology, temperature, timestep, collisionTime=None,
                         chainLength=None, friction=None, randomSeed=0, thermostat="csvr") -> LearningIntegrator:
        """The learning integrator: velocity Verlet with CP2K's stochastic velocity rescaling
        (CSVR, collisionTime default 50 fs), thermostat="nose-hoover" (a chain, defaults by
        mode: losses.model.NOSE_HOOVER) or, with friction (1/ps), Langevin. Accepts openmm.unit
        quantities or plain numbers in K, ps."""
        species, _ = water_of(topology)
        return LearningIntegrator(
            _value(temperature, unit.kelvin), _value(timestep, unit.picosecond),
            None if collisionTime is None else _value(collisionTime, unit.picosecond), chainLength,
            agent_species=species if self.mode == "agent" else None, n_atoms=len(species),
            friction_per_ps=None if friction is None else _value(friction, unit.picosecond**-1), seed=randomSeed,
            thermostat=thermostat)

    def reporters(self, topology: app.Topology, log_path, reportInterval: int, temperature,
                  last_good_path="last_good.pdb"):
        """The run's guards and log for an app.Simulation: blow-up guard, extrapolation check,
        state log (CSV with temperatures by kind of motion)."""
        species, molecules = water_of(topology)
        extrapolation = ExtrapolationReporter(reportInterval, self.model, species, molecules)
        return [BlowUpGuard(reportInterval, _value(temperature, unit.kelvin), last_good_path), extrapolation,
                StateLogReporter(log_path, reportInterval, extrapolation, conservative=self.mode == "reciprocal",
                                 order=molecules.reshape(-1))]
