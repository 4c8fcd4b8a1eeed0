"""The term plan of a model as OpenMM forces.

Every spline term becomes an OpenMM Continuous1DFunction with the same nodes (OpenMM
interpolates with the same natural cubic spline), so the engine reproduces the numba
reference evaluator to round-off; outside the table the Lepton expression continues it
with its end slope and adds the wall, as every engine does (losses.terms).

* pair terms: one CustomNonbondedForce per species pair (an interaction group),
  intramolecular pairs excluded, OpenMM's switching function is the model's;
* bond and angle terms: one CustomCompoundBondForce over each (O, H1, H2) per force group;
* point charges (a model with charge_h): a NonbondedForce with PME, intramolecular pairs
  as exceptions, acting on every atom (group SHARED_GROUP in agent mode).

Agent mode: all custom forces are conservative (an OpenMM force's energy is shared by
both ends of a pair), so the non-reciprocal agent forces are assembled in the
integrator. Force group GROUP[a] holds the terms of agent species a; the integrator
takes group a's force for the atoms of species a only.
"""

from __future__ import annotations

import numpy as np
import openmm as mm

from ..io.topology import SPECIES, SPECIES_INDEX
from ..io.water_run import replicas_needed
from ..losses.model import LossModel
from ..losses.terms import Term
from ..units import MASSES_AMU

#: Force group of each agent species in agent mode (reciprocal mode uses group 0 only).
GROUP = {"O": 0, "H": 1}
#: Agent mode's force group of the terms every atom takes alike (the point charges)
SHARED_GROUP = 2
#: OpenMM's PME error tolerance for the model's charges: relative force error ~1e-5
EWALD_TOLERANCE = 1e-5

#: Lepton variable of each bond and angle term inside a CustomCompoundBondForce over (O, H1, H2)
_MOLECULE_VARIABLES = {("bond", ("O", "H")): ("distance(p1,p2)", "distance(p1,p3)"),
                       ("bond", ("H", "O")): ("distance(p1,p2)", "distance(p1,p3)"),
                       ("bond", ("H", "H")): ("distance(p2,p3)",),
                       ("angle", ("H", "O", "H")): ("angle(p2,p1,p3)",)}


def lepton_energy(term: Term, x: str, name: str) -> tuple[str, dict]:
    """Lepton text of a term at invariant x, and the tabulated functions it uses (by basis)."""
    emit = _LEPTON_FORMS.get(term.function.basis)
    if emit is None:
        raise ValueError(f"term {term.name}: no OpenMM form for a {term.function.basis!r} function")
    return emit(term, x, name)


def _spline_lepton(term: Term, x: str, name: str) -> tuple[str, dict]:
    """The table at the clamped invariant, its linear extension with the end slope, and the
    wall outside the fitted range (OpenMM's Continuous1DFunction is 0 outside its range)."""
    f = term.function
    lo, k = repr(float(term.lower)), repr(float(term.k_wall))
    s_lo, s_hi = (repr(float(v)) for v in term.end_slopes())
    tables = {name: mm.Continuous1DFunction([float(v) for v in f.values], f.x0, f.x1)}
    if term.upper is None:
        return f"({name}(max({x}, {lo})) + {s_lo}*min(0, {x}-{lo}) + {k}*max(0, {lo}-{x})^2)", tables
    hi = repr(float(term.upper))
    return (f"({name}(min(max({x}, {lo}), {hi})) + {s_lo}*min(0, {x}-{lo}) + {s_hi}*max(0, {x}-{hi})"
            f" + {k}*(max(0, {lo}-{x})^2 + max(0, {x}-{hi})^2))"), tables


_LEPTON_FORMS = {"natural cubic spline": _spline_lepton}


def _pair_force(model: LossModel, term: Term, n_atoms, molecules, atoms_a, atoms_b, group):
    """CustomNonbondedForce of one pair term over the pairs (atoms_a x atoms_b).

    One force per species pair with an interaction group evaluates a single table per
    pair; measured 1.7x faster on the CPU platform at 64 waters than one force choosing
    among three tables by a per-particle type (benchmarks/openmm_speed.py).
    """
    text, tables = lepton_energy(term, "r", "pair")
    force = mm.CustomNonbondedForce(text)
    for name, table in tables.items():
        force.addTabulatedFunction(name, table)
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
    force.setName(_force_name(model.mode, term.name))
    return force


def _force_name(mode, what):
    """Names mark agent-mode forces, so a Simulation can be checked for the right integrator."""
    return f"learned {what}" if mode == "reciprocal" else f"{AGENT_PREFIX}{what}"


#: name prefix of every force of an agent-mode System
AGENT_PREFIX = "learned agent-mode "


def is_agent_system(system: mm.System) -> bool:
    """Whether a System holds agent-mode learned forces (they need the LearningIntegrator)."""
    return any(system.getForce(k).getName().startswith(AGENT_PREFIX) for k in range(system.getNumForces()))


def _molecule_force(mode, terms: list[Term], molecules, group):
    """CustomCompoundBondForce over each (O, H1, H2) with the bond and angle terms given."""
    texts, tables = [], {}
    for k, term in enumerate(terms):
        for x in _MOLECULE_VARIABLES[(term.invariant, term.species)]:
            text, t = lepton_energy(term, x, f"{term.invariant}{k}")
            texts.append(text)
            tables.update(t)
    force = mm.CustomCompoundBondForce(3, " + ".join(texts))
    for name, table in tables.items():
        force.addTabulatedFunction(name, table)
    for o, h1, h2 in molecules:
        force.addBond([int(o), int(h1), int(h2)], [])
    force.setUsesPeriodicBoundaryConditions(True)
    force.setForceGroup(group)
    force.setName(_force_name(mode, f"own-molecule terms (group {group})"))
    return force


def _coulomb_force(model: LossModel, species_codes, molecules, group, ewald_tolerance):
    """The model's point charges with PME: q_H on H, -2 q_H on O, own-molecule pairs excluded."""
    force = mm.NonbondedForce()
    for s in species_codes:
        force.addParticle(model.charge_h * (-2.0 if SPECIES[s] == "O" else 1.0), 1.0, 0.0)
    for o, h1, h2 in molecules:
        for i, j in ((o, h1), (o, h2), (h1, h2)):
            force.addException(int(i), int(j), 0.0, 1.0, 0.0)
    force.setNonbondedMethod(mm.NonbondedForce.PME)
    force.setCutoffDistance(model.r_cut)
    force.setEwaldErrorTolerance(ewald_tolerance)
    force.setUseDispersionCorrection(False)
    force.setForceGroup(group)
    force.setName(_force_name(model.mode, "point charges (PME)"))
    return force


def check_box(model: LossModel, box_nm):
    """Minimum-image pairs need a box of at least twice the cutoff on every side."""
    box_nm = np.asarray(box_nm, dtype=float)
    if np.any(box_nm < 2 * model.r_cut):
        need = replicas_needed(box_nm, model.r_cut)
        raise ValueError(f"box {np.round(box_nm, 4).tolist()} nm is smaller than twice the model cutoff "
                         f"{model.r_cut} nm: run its periodic replica ({need} x {need} x {need}: "
                         "openmm_learning.openmm.api.replicate; the command line does it by itself)")
    return box_nm


def add_forces(model: LossModel, system: mm.System, species_codes, molecules, box_nm, force_group=0,
               ewald_tolerance=EWALD_TOLERANCE):
    """Add the model's forces to a System that already holds the water's particles.

    species_codes: per atom (O = 0, H = 1); molecules: (n, 3) atom indices (O, H1, H2).
    Reciprocal mode puts every force in force_group; agent mode uses GROUP (O: 0, H: 1)
    and SHARED_GROUP (point charges), which the LearningIntegrator reads.
    """
    species_codes = np.asarray(species_codes)
    check_box(model, box_nm)
    atoms = {a: np.flatnonzero(species_codes == SPECIES_INDEX[a]) for a in SPECIES}
    own_molecule = {}
    for term in model.terms():
        group = force_group if model.mode == "reciprocal" else GROUP[term.agents[0]]
        if term.invariant == "pair":
            a, b = term.species
            system.addForce(_pair_force(model, term, len(species_codes), molecules, atoms[a], atoms[b], group))
        else:
            own_molecule.setdefault(group, []).append(term)
    for group, terms in own_molecule.items():
        system.addForce(_molecule_force(model.mode, terms, molecules, group))
    if model.charge_h:
        group = force_group if model.mode == "reciprocal" else SHARED_GROUP
        system.addForce(_coulomb_force(model, species_codes, molecules, group, ewald_tolerance))
    return system


def create_system(model: LossModel, species_codes, molecules, box_nm,
                  ewald_tolerance=EWALD_TOLERANCE) -> mm.System:
    """An openmm.System executing `model` for a water box (arrays in nm; see
    openmm.api.LearnedWater for the same from an openmm.app.Topology).

    In reciprocal mode every force is in group 0 and any integrator can run it; in agent
    mode use `LearningIntegrator`.
    """
    box_nm = check_box(model, box_nm)
    system = mm.System()
    for s in np.asarray(species_codes):
        system.addParticle(MASSES_AMU[SPECIES[s]])
    system.setDefaultPeriodicBoxVectors(mm.Vec3(box_nm[0], 0, 0), mm.Vec3(0, box_nm[1], 0),
                                        mm.Vec3(0, 0, box_nm[2]))
    return add_forces(model, system, species_codes, molecules, box_nm, ewald_tolerance=ewald_tolerance)
