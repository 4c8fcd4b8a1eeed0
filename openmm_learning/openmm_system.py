"""The fitted losses as an OpenMM System, and the learning-dynamics integrator.

Every spline channel becomes an OpenMM Continuous1DFunction with the same nodes (OpenMM
interpolates with the same natural cubic spline), so the engine reproduces the numba
reference evaluator to round-off.

* intermolecular pairs: one CustomNonbondedForce per species pair (an interaction
  group), intramolecular pairs excluded, OpenMM's switching function is the model's;
* intramolecular O-H, H-H and the H-O-H angle: one CustomCompoundBondForce over each
  (O, H1, H2).

Agent mode: all custom forces are conservative (an OpenMM force's energy is shared by
both ends of a pair), so the non-reciprocal agent forces are assembled in the
integrator. Force group GROUP[a] holds the terms of agent species a; the integrator
takes group a's force for the atoms of species a only.
"""

from __future__ import annotations

import numpy as np
import openmm as mm
from openmm import unit

from .model import LossModel
from .topology import SPECIES, SPECIES_INDEX
from .units import KB_KJMOL_K, MASSES_AMU

#: Force group of each agent species in agent mode (reciprocal mode uses group 0 only).
GROUP = {"O": 0, "H": 1}


def _guarded(table: str, x: str, lo: float, hi: float | None, k_wall: float) -> str:
    """Lepton text of a channel: the table at the clamped invariant plus harmonic walls."""
    if hi is None:
        return f"({table}(max({x}, {lo!r})) + {k_wall!r}*max(0, {lo!r}-{x})^2)"
    return (f"({table}(min(max({x}, {lo!r}), {hi!r}))"
            f" + {k_wall!r}*(max(0, {lo!r}-{x})^2 + max(0, {x}-{hi!r})^2))")


def _table(channel):
    return mm.Continuous1DFunction(list(map(float, channel.values)), channel.x0, channel.x1)


def _nonbonded(model: LossModel, n_atoms, molecules, channel, atoms_a, atoms_b, group):
    """CustomNonbondedForce of one channel over the pairs (atoms_a x atoms_b).

    One force per species pair with an interaction group evaluates a single table per
    pair; measured 1.7x faster on the CPU platform than one force choosing among three
    tables by a per-particle type (benchmarks/openmm_speed.py).
    """
    force = mm.CustomNonbondedForce(_guarded("pair", "r", channel.x0, None, model.k_wall))
    force.addTabulatedFunction("pair", _table(channel))
    for _ in range(n_atoms):
        force.addParticle([])
    for o, h1, h2 in molecules:
        force.addExclusion(int(o), int(h1))
        force.addExclusion(int(o), int(h2))
        force.addExclusion(int(h1), int(h2))
    force.setNonbondedMethod(mm.CustomNonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(model.r_cut)
    force.setUseSwitchingFunction(True)
    force.setSwitchingDistance(model.r_switch)
    force.setUseLongRangeCorrection(False)
    force.addInteractionGroup([int(i) for i in atoms_a], [int(i) for i in atoms_b])
    force.setForceGroup(group)
    force.setName(f"learned {channel.name} pairs")
    return force


def _molecular(model: LossModel, molecules, oh, hh, angle, group):
    """CustomCompoundBondForce over (O, H1, H2): O-H channel on both bonds, H-H, angle."""
    terms, tables = [], []
    if oh is not None:
        tables.append(("intraOH", _table(oh)))
        for d in ("distance(p1,p2)", "distance(p1,p3)"):
            terms.append(_guarded("intraOH", d, oh.x0, oh.x1, model.k_wall))
    if hh is not None:
        tables.append(("intraHH", _table(hh)))
        terms.append(_guarded("intraHH", "distance(p2,p3)", hh.x0, hh.x1, model.k_wall))
    if angle is not None:
        tables.append(("bend", _table(angle)))
        terms.append(_guarded("bend", "angle(p2,p1,p3)", angle.x0, angle.x1, model.k_wall))
    force = mm.CustomCompoundBondForce(3, " + ".join(terms))
    for name, tab in tables:
        force.addTabulatedFunction(name, tab)
    for o, h1, h2 in molecules:
        force.addBond([int(o), int(h1), int(h2)], [])
    force.setUsesPeriodicBoundaryConditions(True)
    force.setForceGroup(group)
    force.setName(f"learned molecules (group {group})")
    return force


def create_system(model: LossModel, species_codes, molecules, box_nm) -> mm.System:
    """An openmm.System executing `model` for a water box.

    species_codes: per atom (O = 0, H = 1); molecules: (n, 3) atom indices (O, H1, H2);
    box_nm: orthorhombic box lengths. In reciprocal mode every force is in group 0
    and any integrator can run it; in agent mode use `LearningIntegrator`.
    """
    species_codes = np.asarray(species_codes)
    box_nm = np.asarray(box_nm, dtype=float)
    if np.any(box_nm < 2 * model.r_cut):
        raise ValueError(f"box {box_nm} nm is smaller than twice the model cutoff {model.r_cut} nm")
    system = mm.System()
    for s in species_codes:
        system.addParticle(MASSES_AMU[SPECIES[s]])
    system.setDefaultPeriodicBoxVectors(mm.Vec3(box_nm[0], 0, 0), mm.Vec3(0, box_nm[1], 0),
                                        mm.Vec3(0, 0, box_nm[2]))
    ch = model.channel
    atoms = {a: np.flatnonzero(species_codes == SPECIES_INDEX[a]) for a in SPECIES}
    n = len(species_codes)
    if model.mode == "reciprocal":
        for a, b in (("O", "O"), ("O", "H"), ("H", "H")):
            system.addForce(_nonbonded(model, n, molecules, ch(a, b, "inter"), atoms[a], atoms[b], 0))
        system.addForce(_molecular(model, molecules, ch("O", "H", "intra"), ch("H", "H", "intra"),
                                   ch("O", None, "angle"), 0))
        return system
    for a in SPECIES:
        for b in SPECIES:
            system.addForce(_nonbonded(model, n, molecules, ch(a, b, "inter"), atoms[a], atoms[b], GROUP[a]))
        other = "H" if a == "O" else "O"
        system.addForce(_molecular(model, molecules, ch(a, other, "intra"),
                                   ch("H", "H", "intra") if a == "H" else None,
                                   ch(a, None, "angle"), GROUP[a]))
    return system


def agent_forces(context: mm.Context, mode: str, species_codes) -> np.ndarray:
    """The forces the learning dynamics applies (kJ/mol/nm): in agent mode group a's
    force on the atoms of species a, in reciprocal mode the total force."""
    if mode == "reciprocal":
        return context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer)
    species_codes = np.asarray(species_codes)
    forces = np.zeros((len(species_codes), 3))
    for code, name in enumerate(SPECIES):
        f = context.getState(getForces=True, groups={GROUP[name]}).getForces(asNumpy=True)
        mask = species_codes == code
        forces[mask] = f.value_in_unit(unit.kilojoule_per_mole / unit.nanometer)[mask]
    return forces


class LearningIntegrator(mm.CustomIntegrator):
    """Velocity Verlet with a Nose-Hoover chain: heavy-ball learning with adaptive momentum.

    agent_species: per-atom species codes for agent mode (group a's force acts on the
    atoms of species a only); None for reciprocal mode (the total force). The centre
    of mass velocity is removed every step (agent forces need not sum to zero), so the
    thermostat sees 3N - 3 degrees of freedom. chain_length and collision_time_ps of the
    Nose-Hoover chain default to 1 and 10 fs in agent mode (see below), 3 and 50 fs (CP2K's
    CSVR time constant in the bundled runs) in reciprocal mode.

    Global variables a reporter can read: "heat" (kJ/mol removed by the thermostat,
    cumulative), "fnet_x/y/z" (net force of the last step, kJ/mol/nm), "ke2" (twice the
    kinetic energy). After setting positions by hand call `invalidate()`.

    friction_per_ps: Langevin friction on every degree of freedom instead of the Nose-Hoover
    chain (a local thermostat for equilibration; seed sets its random numbers).
    """

    def __init__(self, temperature_k, timestep_ps, collision_time_ps=None, chain_length=None,
                 agent_species=None, n_atoms=None, friction_per_ps=None, seed=0):
        super().__init__(timestep_ps)
        kT = KB_KJMOL_K * temperature_k
        n = len(agent_species) if agent_species is not None else n_atoms
        if n is None:
            raise ValueError("give agent_species (agent mode) or n_atoms (reciprocal mode)")
        n_dof = 3 * n - 3
        self.temperature_k = temperature_k
        self.n_dof = n_dof
        self.agent = agent_species is not None
        # Agent forces pump heat in steadily (~2 kJ/mol per fs for the bundled model). A
        # single Nose-Hoover variable is an integral controller that brings the mean
        # temperature back to the target; with a 10 fs time constant the bundled agent
        # model runs at 302 +- 18 K (canonical spread for 192 atoms: 17.7 K). A chain with
        # CP2K's 50 fs left it ~20 K hot. Reciprocal mode: a chain of 3 with 50 fs.
        M = chain_length or (1 if self.agent else 3)
        collision_time_ps = collision_time_ps or (0.01 if self.agent else 0.05)
        self.chain_length = M
        self.collision_time_ps = collision_time_ps
        self.addGlobalVariable("kT", kT)
        self.addGlobalVariable("ndf", n_dof)
        self.addGlobalVariable("ke2", 0.0)
        self.addGlobalVariable("scale", 1.0)
        self.addGlobalVariable("heat", 0.0)
        self.addGlobalVariable("ready", 0.0)
        self.addGlobalVariable("mtot", 0.0)
        for k in range(M):
            q = kT * collision_time_ps**2 * (n_dof if k == 0 else 1)
            self.addGlobalVariable(f"Q{k}", q)
            self.addGlobalVariable(f"vxi{k}", 0.0)
            self.addGlobalVariable(f"G{k}", 0.0)
        for c in "xyz":
            self.addGlobalVariable(f"p{c}", 0.0)
            self.addGlobalVariable(f"fnet_{c}", 0.0)
            self.addPerDofVariable(f"e{c}", 0.0)
        self.addPerDofVariable("fa", 0.0)
        if self.agent:
            self.addPerDofVariable("isO", 0.0)
            self.addPerDofVariable("isH", 0.0)
        self.addUpdateContextState()
        self.beginIfBlock("ready < 0.5")
        self._compute_force()
        self.addComputeSum("mtot", "m*ex")
        self.addComputeGlobal("ready", "1")
        self.endBlock()
        thermostat = self._thermostat_half if friction_per_ps is None else self._langevin_half
        self.friction_per_ps = friction_per_ps
        if friction_per_ps is not None:
            self.addGlobalVariable("fric", float(friction_per_ps))
            self.addGlobalVariable("ke2old", 0.0)
            self.setRandomNumberSeed(int(seed))
        thermostat(M)
        self.addComputePerDof("v", "v + 0.5*dt*fa/m")
        self.addComputePerDof("x", "x + dt*v")
        self._compute_force()
        self.addComputePerDof("v", "v + 0.5*dt*fa/m")
        self._remove_com()
        thermostat(M)
        for c in "xyz":
            self.addComputeSum(f"fnet_{c}", f"fa*e{c}")
        units = np.zeros((n, 3))
        for k, c in enumerate("xyz"):
            u = units.copy()
            u[:, k] = 1.0
            self.setPerDofVariableByName(f"e{c}", [mm.Vec3(*row) for row in u])
        if self.agent:
            species = np.asarray(agent_species)
            for name, code in (("isO", 0), ("isH", 1)):
                mask = np.repeat((species == code).astype(float)[:, None], 3, axis=1)
                self.setPerDofVariableByName(name, [mm.Vec3(*row) for row in mask])

    def _compute_force(self):
        if self.agent:
            # one force group per computation step: OpenMM evaluates groups separately
            self.addComputePerDof("fa", f"f{GROUP['O']}*isO")
            self.addComputePerDof("fa", f"fa + f{GROUP['H']}*isH")
        else:
            self.addComputePerDof("fa", "f")

    def _remove_com(self):
        for c in "xyz":
            self.addComputeSum(f"p{c}", f"m*v*e{c}")
        self.addComputePerDof("v", "v - (px*ex + py*ey + pz*ez)/mtot")

    def _thermostat_half(self, M):
        """Half a step of the Nose-Hoover chain (Martyna-Tuckerman-Klein), then v scaling."""
        def G(k):
            if k == 0:
                self.addComputeGlobal("G0", "(ke2 - ndf*kT)/Q0")
            else:
                self.addComputeGlobal(f"G{k}", f"(Q{k-1}*vxi{k-1}^2 - kT)/Q{k}")

        def update(k):
            if k < M - 1:
                self.addComputeGlobal(f"vxi{k}", f"vxi{k}*exp(-0.125*dt*vxi{k+1})")
            G(k)
            self.addComputeGlobal(f"vxi{k}", f"vxi{k} + 0.25*dt*G{k}")
            if k < M - 1:
                self.addComputeGlobal(f"vxi{k}", f"vxi{k}*exp(-0.125*dt*vxi{k+1})")

        self.addComputeSum("ke2", "m*v*v")
        for k in reversed(range(M)):
            update(k)
        self.addComputeGlobal("scale", "exp(-0.5*dt*vxi0)")
        self.addComputeGlobal("heat", "heat + 0.5*ke2*(1 - scale^2)")
        self.addComputePerDof("v", "v*scale")
        self.addComputeGlobal("ke2", "ke2*scale^2")
        for k in range(M):
            update(k)

    def _langevin_half(self, _M):
        """Half a step of Langevin friction and noise on every degree of freedom (OBABO).

        A local thermostat: unlike a Nose-Hoover variable, which scales every velocity by
        one factor, it brings each kind of motion to the target temperature by itself.
        """
        self.addComputeSum("ke2old", "m*v*v")
        self.addComputePerDof("v", "v*exp(-0.5*dt*fric) + sqrt(kT*(1 - exp(-dt*fric))/m)*gaussian")
        self._remove_com()
        self.addComputeSum("ke2", "m*v*v")
        self.addComputeGlobal("heat", "heat + 0.5*(ke2old - ke2)")

    def invalidate(self):
        """Forces cached in the integrator are stale (positions were set by hand)."""
        self.setGlobalVariableByName("ready", 0.0)
