"""The term plan of a model as OpenMM forces.

Every spline term becomes an OpenMM Continuous1DFunction with the same nodes (OpenMM
interpolates with the same natural cubic spline), so the engine reproduces the numba
reference evaluator to round-off; outside the table the Lepton expression continues it
with its end slope and adds the wall, as every engine does (losses.terms).

* pair terms: one CustomNonbondedForce per force group over OpenMM's neighbour list, the
  species pair read from a per-particle parameter, intramolecular pairs excluded,
  OpenMM's switching function is the model's;
* bond and angle terms: one CustomCompoundBondForce over each (O, H1, H2) per force group;
* point charges (a model with charge_h): a NonbondedForce with PME, intramolecular pairs
  as exceptions, acting on every atom.

Agent mode: an OpenMM force is conservative (its energy is shared by both ends of a
pair), so the agent losses are written as a shared potential (SHARED_GROUP) and an
antisymmetric remainder (ANTISYMMETRIC_GROUP) that the integrator adds to O atoms and
subtracts from H atoms (losses.terms.split_agent_terms): two force evaluations per step,
none of them discarded.
"""

from __future__ import annotations

import numpy as np
import openmm as mm

from ..io.topology import SPECIES, SPECIES_INDEX
from ..io.water_run import replicas_needed
from ..losses.model import LossModel
from ..losses.terms import Term, split_agent_terms
from ..units import MASSES_AMU

#: Agent mode's force groups: the shared potential every atom takes (point charges
#: included), and the antisymmetric remainder that O atoms take as it is and H atoms with
#: the opposite sign (reciprocal mode uses one group, 0 by default)
SHARED_GROUP = 0
ANTISYMMETRIC_GROUP = 1
#: OpenMM's PME error tolerance for the model's charges: OpenMM's default, as for its own
#: water models (1e-5 costs 5-6x more at 4096 waters; tests ask for tighter ones)
EWALD_TOLERANCE = 5e-4

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


#: Intervals of the gap between two pair functions in the joined table (at least 3 let
#: the gap's spline meet both neighbours with zero curvature; see _joined_table)
_GAP_INTERVALS = 8
#: Lepton weights that pick the species pair from the per-particle parameter t (O 0, H 1):
#: exactly 1 for the pair's own type and 0 for the others, so no pair pays for a choice
_PAIR_WEIGHT = {("O", "O"): "(1-t1)*(1-t2)", ("H", "O"): "(t1+t2-2*t1*t2)", ("H", "H"): "t1*t2"}


def _joined_table(terms: list[Term]):
    """One natural-cubic-spline table holding the pair functions of `terms` side by side.

    OpenMM's tabulated functions cost a call per pair on the CPU platform, so one force
    reads one table, at r * scale + offset of the pair's type (scale 1 when the functions
    share the first one's node spacing, as fitted models do; a spline stays the same
    spline under an affine change of its variable). Between two functions the gap's node
    values are chosen so that the joined spline has zero curvature at both ends of every
    function: the natural spline through all nodes is then each function's own natural
    spline on its interval, exactly (a C2 cubic spline is fixed by its values and the end
    curvatures). Returns (Continuous1DFunction, {species pair: (scale, offset)}).
    """
    from ..losses.model import natural_spline_matrix

    for t in terms:
        if t.function.basis != "natural cubic spline":
            raise ValueError(f"term {t.name}: no OpenMM pair form for a {t.function.basis!r} function")
    h = terms[0].function.h
    values, known, ends, offsets = [], [], [], {}
    for k, t in enumerate(terms):
        if k:
            values += [0.0] * (_GAP_INTERVALS - 1)
            known += [False] * (_GAP_INTERVALS - 1)
        start = len(values)
        scale = h / t.function.h
        offsets[tuple(sorted(t.species))] = (scale, start * h - t.function.x0 * scale)
        values += [float(v) for v in t.function.values]
        known += [True] * t.function.n
        ends += [start, len(values) - 1]
    y, known = np.array(values), np.array(known)
    if not known.all():
        m = natural_spline_matrix(len(y), h)[ends]  # curvature at every function's ends, linear in y
        y[~known] = np.linalg.lstsq(m[:, ~known], -m[:, known] @ y[known], rcond=None)[0]
    return mm.Continuous1DFunction([float(v) for v in y], 0.0, (len(y) - 1) * h), offsets


def _mixed(values: dict) -> str:
    """Lepton text of a per-type constant: the sum of value times the type's weight."""
    parts = [f"{v!r}*{_PAIR_WEIGHT[p]}" for p, v in values.items() if v != 0.0]
    return " + ".join(parts) if parts else "0"


def _pair_force(model: LossModel, terms: list[Term], species_codes, molecules, group, name):
    """One CustomNonbondedForce for all pair terms (O-O, O-H, H-H), over OpenMM's neighbour
    list: the type of each pair comes from the per-particle parameter t, and every type
    reads the joined table (_joined_table) with the model's extension and wall below it.

    Pairs of a type without a term weigh 0. One force with per-particle types costs O(N)
    on every platform; interaction groups loop over all pairs of the two groups on the CPU.
    """
    table, placement = _joined_table(terms)
    keys = [tuple(sorted(t.species)) for t in terms]
    lo = {k: float(t.lower) for k, t in zip(keys, terms)}
    hi = {k: float(t.function.x1) for k, t in zip(keys, terms)}
    slope = {k: float(t.end_slopes()[0]) for k, t in zip(keys, terms)}
    wall = {k: float(t.k_wall) for k, t in zip(keys, terms)}
    weight = _mixed({k: 1.0 for k in keys}) if len(keys) < 3 else None
    energy = "pair(min(max(r, lo), hi)*sc + off) + slo*min(0, r-lo) + kw*max(0, lo-r)^2"
    text = "; ".join([f"({weight})*({energy})" if weight else energy, f"lo = {_mixed(lo)}", f"hi = {_mixed(hi)}",
                      f"sc = {_mixed({k: p[0] for k, p in placement.items()})}",
                      f"off = {_mixed({k: p[1] for k, p in placement.items()})}", f"slo = {_mixed(slope)}",
                      f"kw = {_mixed(wall)}"])
    force = mm.CustomNonbondedForce(text)
    force.addTabulatedFunction("pair", table)
    force.addPerParticleParameter("t")
    for s in species_codes:
        force.addParticle([float(SPECIES_INDEX["H"] == s)])
    for o, h1, h2 in molecules:
        force.addExclusion(int(o), int(h1))
        force.addExclusion(int(o), int(h2))
        force.addExclusion(int(h1), int(h2))
    force.setNonbondedMethod(mm.CustomNonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(model.r_cut)
    force.setUseSwitchingFunction(True)
    force.setSwitchingDistance(model.r_switch)
    force.setUseLongRangeCorrection(False)
    force.setForceGroup(group)
    force.setName(_force_name(model.mode, name))
    return force


def _force_name(mode, what):
    """Names mark agent-mode forces, so a Simulation can be checked for the right integrator."""
    return f"learned {what}" if mode == "reciprocal" else f"{AGENT_PREFIX}{what}"


#: name prefix of every force of an agent-mode System
AGENT_PREFIX = "learned agent-mode "


def is_agent_system(system: mm.System) -> bool:
    """Whether a System holds agent-mode learned forces (they need the LearningIntegrator)."""
    return any(system.getForce(k).getName().startswith(AGENT_PREFIX) for k in range(system.getNumForces()))


def _molecule_force(mode, terms: list[Term], molecules, group, name):
    """CustomCompoundBondForce over each (O, H1, H2) with the bond and angle terms given."""
    texts, tables = [], {}
    for k, term in enumerate(terms):
        for x in _MOLECULE_VARIABLES[(term.invariant, term.species)]:
            text, t = lepton_energy(term, x, f"{term.invariant}{k}")
            texts.append(text)
            tables.update(t)
    force = mm.CustomCompoundBondForce(3, " + ".join(texts))
    for table_name, table in tables.items():
        force.addTabulatedFunction(table_name, table)
    for o, h1, h2 in molecules:
        force.addBond([int(o), int(h1), int(h2)], [])
    force.setUsesPeriodicBoundaryConditions(True)
    force.setForceGroup(group)
    force.setName(_force_name(mode, name))
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
    Reciprocal mode puts every force in force_group. Agent mode puts the shared potential
    in SHARED_GROUP and the antisymmetric remainder in ANTISYMMETRIC_GROUP
    (losses.terms.split_agent_terms), which the LearningIntegrator reads.
    """
    species_codes = np.asarray(species_codes)
    check_box(model, box_nm)
    if model.mode == "reciprocal":
        parts = {force_group: (model.terms(), "")}
    else:
        shared, antisymmetric = split_agent_terms(model)
        parts = {SHARED_GROUP: (shared, "shared "), ANTISYMMETRIC_GROUP: (antisymmetric, "antisymmetric ")}
    for group, (terms, what) in parts.items():
        pairs = [t for t in terms if t.invariant == "pair"]
        if pairs:
            system.addForce(_pair_force(model, pairs, species_codes, molecules, group, f"{what}pair terms"))
        own = [t for t in terms if t.invariant != "pair"]
        if own:
            system.addForce(_molecule_force(model.mode, own, molecules, group, f"{what}own-molecule terms"))
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
