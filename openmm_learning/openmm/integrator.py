"""The learning-dynamics integrator: velocity Verlet with CSVR (or a Nose-Hoover chain, or Langevin),
applying in agent mode each species' own loss gradient to that species' atoms only."""

from __future__ import annotations

import numpy as np
import openmm as mm
from openmm import unit

from ..dynamics import Dynamics, check_thermostat, thermostat_constants
from ..units import KB_KJMOL_K
from .forces import ANTISYMMETRIC_GROUP, SHARED_GROUP


def agent_forces(context: mm.Context, mode: str, species_codes) -> np.ndarray:
    """The forces the learning dynamics applies (kJ/mol/nm): in agent mode the shared
    group's force plus the antisymmetric group's on O atoms and minus it on H atoms, in
    reciprocal mode the total force."""
    def group_forces(groups):
        state = context.getState(getForces=True, groups=groups)
        return state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)

    if mode == "reciprocal":
        return group_forces(-1)
    return group_forces({SHARED_GROUP}) + _signs(species_codes)[:, None] * group_forces({ANTISYMMETRIC_GROUP})


def _signs(species_codes) -> np.ndarray:
    """+1 on O atoms, -1 on H atoms: the sign each takes the antisymmetric remainder with."""
    return 1.0 - 2.0 * np.asarray(species_codes, float)


#: Park-Miller generator of the CSVR thermostat (multiplier, modulus)
_LCG_A, _LCG_M = 48271, 2147483647


class LearningIntegrator(mm.CustomIntegrator):
    """Velocity Verlet with a thermostat: heavy-ball learning with adaptive momentum.

    agent_species: per-atom species codes for agent mode (the shared force group on
    every atom, the antisymmetric group added on O and subtracted on H atoms: each
    species descends its own loss); None for reciprocal mode (the total force). The
    thermostat sees 3N - 3 degrees of freedom: the System's CMMotionRemover (create_system
    and LearnedWater.createSystem add one) removes the centre-of-mass velocity every step,
    which agent forces, whose sum is not zero, would otherwise build up.

    thermostat="csvr" (default): the stochastic velocity rescaling of Bussi, Donadio and
    Parrinello (CP2K's CSVR) with time constant collision_time_ps (default
    dynamics.CSVR_TIME_PS, CP2K's 50 fs): canonical, global like CP2K's, seeded by seed;
    applied once per step, at its start, its factor folded into the first half kick (two
    half steps of it are the same law and cost a second sum over all atoms; scaling the
    velocities by themselves costs a pass over the atoms the kick already makes).
    thermostat="none": plain velocity Verlet (NVE; in agent mode the energy is not conserved,
    only, for a constant asymmetry, a pseudo-Hamiltonian: tests/test_agent_known_truth.py).
    thermostat="nose-hoover": a Nose-Hoover chain whose chain_length and collision_time_ps
    default to dynamics.NOSE_HOOVER of the mode (1 and 10 fs in agent mode, 3 and 50 fs
    in reciprocal mode).

    Global variables a reporter can read: "heat" (kJ/mol removed by the thermostat,
    cumulative), "ke2" (twice the kinetic energy); `net_force(context)` sums the forces the
    dynamics applies (kJ/mol/nm). After setting positions by hand call `invalidate()`.

    friction_per_ps: Langevin friction on every degree of freedom instead of `thermostat`
    (a local thermostat: for equilibration, or a Langevin reference's protocol; seed sets
    its random numbers; thermostat="langevin" asks for it explicitly).
    """

    def __init__(self, temperature_k, timestep_ps, collision_time_ps=None, chain_length=None,
                 agent_species=None, n_atoms=None, friction_per_ps=None, seed=0, thermostat="csvr"):
        super().__init__(timestep_ps)
        n = len(agent_species) if agent_species is not None else n_atoms
        if n is None:
            raise ValueError("give agent_species (agent mode) or n_atoms (reciprocal mode)")
        check_thermostat(thermostat, friction_per_ps)
        self.temperature_k = temperature_k
        self.n_dof = 3 * n - 3
        self.agent = agent_species is not None
        self.species = None if agent_species is None else np.asarray(agent_species)
        self.collision_time_ps, self.chain_length = thermostat_constants(
            thermostat, "agent" if self.agent else "reciprocal", collision_time_ps, chain_length)
        self.thermostat = "langevin" if friction_per_ps is not None else thermostat
        self.friction_per_ps = friction_per_ps
        self._declare_variables(KB_KJMOL_K * temperature_k)
        self.addUpdateContextState()
        self.beginIfBlock("ready < 0.5")
        self._compute_force()
        self.addComputeSum("mtot", "m*ex")
        self.addComputeGlobal("ready", "1")
        self.endBlock()
        self._declare_thermostat(seed)
        self._velocity_verlet()
        units = np.zeros((n, 3))
        for k, c in enumerate("xyz"):
            u = units.copy()
            u[:, k] = 1.0
            self.setPerDofVariableByName(f"e{c}", [mm.Vec3(*row) for row in u])
        if self.agent:
            self.setPerDofVariableByName("sign", [mm.Vec3(s, s, s) for s in _signs(agent_species)])

    def _declare_variables(self, kT):
        """The global and per-dof variables every thermostat uses (and the chain's Q, vxi, G)."""
        for name, value in (("kT", kT), ("ndf", self.n_dof), ("ke2", 0.0), ("scale", 1.0), ("heat", 0.0),
                            ("ready", 0.0), ("mtot", 0.0)):
            self.addGlobalVariable(name, value)
        for k in range(self.chain_length):
            q = kT * self.collision_time_ps**2 * (self.n_dof if k == 0 else 1)
            self.addGlobalVariable(f"Q{k}", q)
            self.addGlobalVariable(f"vxi{k}", 0.0)
            self.addGlobalVariable(f"G{k}", 0.0)
        for c in "xyz":
            self.addGlobalVariable(f"p{c}", 0.0)
            self.addPerDofVariable(f"e{c}", 0.0)
        self.addPerDofVariable("fa", 0.0)
        if self.agent:
            self.addPerDofVariable("sign", 0.0)

    def _declare_thermostat(self, seed):
        """CSVR's and Langevin's own variables and random numbers."""
        if self.thermostat == "csvr":
            self.addGlobalVariable("tau", float(self.collision_time_ps))
            for name in ("r1", "r2", "chisq", "alpha2", "u1", "u2"):
                self.addGlobalVariable(name, 0.0)
            # CSVR's own generator (_csvr_step): its state is a global variable, which OpenMM
            # checkpoints, so a resumed run draws the same numbers (CustomIntegrator's
            # "gaussian" is not restored by a checkpoint)
            self.addGlobalVariable("rng", float((int(seed) * 2654435761) % (_LCG_M - 1) + 1))
        if self.friction_per_ps is not None:
            self.addGlobalVariable("fric", float(self.friction_per_ps))
            self.addGlobalVariable("ke2old", 0.0)
            self.setRandomNumberSeed(int(seed))

    def _velocity_verlet(self):
        """One step: velocity Verlet between the thermostat's halves. Reciprocal mode kicks
        with the total force itself, agent mode with its combination. CSVR draws its factor
        at the start of the step and the first half kick applies it: one pass over the atoms
        fewer than scaling the velocities by themselves."""
        force = "fa" if self.agent else "f"
        thermostat = {"nose-hoover": self._thermostat_half, "csvr": self._csvr_step,
                      "langevin": self._langevin_half, "none": lambda _M: None}[self.thermostat]
        thermostat(self.chain_length)
        scaled = "v*scale" if self.thermostat == "csvr" else "v"
        self.addComputePerDof("v", f"{scaled} + 0.5*dt*{force}/m")
        self.addComputePerDof("x", "x + dt*v")
        self._compute_force()
        self.addComputePerDof("v", f"v + 0.5*dt*{force}/m")
        if self.thermostat != "csvr":
            thermostat(self.chain_length)

    def _compute_force(self):
        if self.agent:
            # one force group per computation step (OpenMM's rule); kept in fa, since the
            # next step's first kick would otherwise recompute both groups
            self.addComputePerDof("fa", f"f{SHARED_GROUP}")
            self.addComputePerDof("fa", f"fa + sign*f{ANTISYMMETRIC_GROUP}")

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

    def _csvr_step(self, _M):
        """One step of CSVR: the kinetic energy K is redrawn towards its canonical law,
        K'/K = c + (1-c) (kT/2K)(R1^2 + S) + 2 R1 sqrt(c (1-c) kT/2K), c = exp(-dt/tau),
        S a chi-square draw with k = n_dof - 1 degrees of freedom (Bussi, Donadio and
        Parrinello 2007), all velocities scaled alike. S is drawn by the Wilson-Hilferty
        transform of one gaussian, k (1 - 2/9k + R2 sqrt(2/9k))^3, whose quantiles are off by
        O(k^-3/2) (1e-4 at 64 waters), instead of k squared gaussians per step
        (which cost as much as the forces at 32768 waters)."""
        k = self.n_dof - 1
        self.addComputeSum("ke2", "m*v*v")
        # two gaussians (Box-Muller) from two draws of the Park-Miller generator (48271 mod
        # 2^31 - 1: exact in double precision, period 2^31 - 2, i.e. 1e9 steps)
        for u in ("u1", "u2"):
            self.addComputeGlobal("rng", f"rng*{_LCG_A} - {_LCG_M}*floor(rng*{_LCG_A}/{_LCG_M})")
            self.addComputeGlobal(u, f"rng/{_LCG_M}")
        self.addComputeGlobal("r1", "sqrt(-2*log(u1))*cos(6.283185307179586*u2)")
        self.addComputeGlobal("r2", "sqrt(-2*log(u1))*sin(6.283185307179586*u2)")
        self.addComputeGlobal("chisq", f"{k}*max(0, 1 - {2 / (9 * k)!r} + r2*{float(np.sqrt(2 / (9 * k)))!r})^3")
        c = "exp(-dt/tau)"
        self.addComputeGlobal("alpha2", f"{c} + (1-{c})*(kT/ke2)*(r1^2 + chisq) + 2*r1*sqrt({c}*(1-{c})*kT/ke2)")
        self.addComputeGlobal("scale", f"sqrt(alpha2)*(2*step(r1 + sqrt({c}*ke2/((1-{c})*kT))) - 1)")
        self.addComputeGlobal("heat", "heat + 0.5*ke2*(1 - scale^2)")
        self.addComputeGlobal("ke2", "ke2*scale^2")  # the first half kick scales the velocities

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

    @classmethod
    def of(cls, dynamics: Dynamics, species) -> "LearningIntegrator":
        """The integrator of a dynamics specification for atoms of these species codes."""
        return cls(dynamics.temperature_k, dynamics.timestep_ps, dynamics.collision_time_ps, dynamics.chain_length,
                   agent_species=species if dynamics.mode == "agent" else None, n_atoms=len(species),
                   friction_per_ps=dynamics.friction_per_ps, seed=dynamics.seed, thermostat=dynamics.thermostat)

    def net_force(self, context: mm.Context) -> np.ndarray:
        """Sum of the forces the dynamics applies (kJ/mol/nm): zero for a potential, not for
        agent forces (their momentum is removed every step)."""
        mode = "agent" if self.agent else "reciprocal"
        return agent_forces(context, mode, self.species).sum(axis=0)

    def invalidate(self):
        """Forces cached in the integrator are stale (positions were set by hand)."""
        self.setGlobalVariableByName("ready", 0.0)
