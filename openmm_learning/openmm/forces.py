"""The term plan of a model as OpenMM forces.

Every spline term becomes an OpenMM Continuous1DFunction with the same nodes (OpenMM
interpolates with the same natural cubic spline), so the engine reproduces the numba
reference evaluator to round-off; every Chebyshev term (a compiled model) becomes a
polynomial in Horner form, which the CPU platform evaluates vectorised where a table is
one call per pair. Outside the fitted range the Lepton expression continues the function
with its end slope and adds the wall, as every engine does (losses.terms).

* pair terms: one CustomNonbondedForce per force group over OpenMM's neighbour list, the
  species pair read from a per-particle parameter, intramolecular pairs excluded;
  OpenMM's switching function is a spline model's (a series carries its own cutoff factor);
* bond and angle terms: a CustomBondForce or CustomAngleForce per term;
* point charges (a model with charge_h): a NonbondedForce with PME, intramolecular pairs
  as exceptions, acting on every atom.

Agent mode: an OpenMM force is conservative (its energy is shared by both ends of a
pair), so the agent losses are written as a shared potential (SHARED_GROUP) and an
antisymmetric remainder (ANTISYMMETRIC_GROUP) that the integrator adds to O atoms and
subtracts from H atoms (losses.terms.split_agent_terms): two force evaluations per step,
none of them discarded. A model with an asymmetry range (LossModel.asymmetry_range)
gives the remainder's pair force that cutoff, so it runs over the nearest pairs only.
"""

from __future__ import annotations

import numpy as np
import openmm as mm
from numpy.polynomial import chebyshev

from ..io.topology import SPECIES, SPECIES_INDEX
from ..io.water_run import replicas_needed
from ..losses.model import LossModel
from ..losses.channels import Channel, ChebyshevChannel, natural_spline_matrix
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

def lepton_energy(term: Term, x: str, name: str) -> tuple[str, dict, list]:
    """Lepton text of a bond or angle term at invariant x, the tabulated functions it uses
    and the definitions it needs (by basis; every name it defines starts with `name`)."""
    emit = _LEPTON_FORMS.get(term.function.basis)
    if emit is None:
        raise ValueError(f"term {term.name}: no OpenMM form for a {term.function.basis!r} function")
    return emit(term, x, name)


def _extended(term: Term, x: str, inside: str) -> str:
    """`inside` (the function at the clamped invariant), its linear extension with the end
    slopes and the walls outside the fitted range."""
    lo, k = repr(float(term.lower)), repr(float(term.wall_stiffness))
    s_lo, s_hi = (repr(float(v)) for v in term.end_slopes())
    hi = repr(float(term.upper))
    return (f"({inside} + {s_lo}*min(0, {x}-{lo}) + {s_hi}*max(0, {x}-{hi})"
            f" + {k}*(max(0, {lo}-{x})^2 + max(0, {x}-{hi})^2))")


def _spline_lepton(term: Term, x: str, name: str) -> tuple[str, dict, list]:
    """The table at the clamped invariant (OpenMM's Continuous1DFunction is 0 outside its range)."""
    f = term.function
    tables = {name: mm.Continuous1DFunction([float(v) for v in f.values], f.x0, f.x1)}
    return _extended(term, x, f"{name}(min(max({x}, {term.lower!r}), {term.upper!r}))"), tables, []


def horner(coefficients, u: str) -> str:
    """Lepton text of sum_k coefficients[k] u^k in Horner form (coefficients: Lepton texts)."""
    text = coefficients[-1]
    for c in reversed(coefficients[:-1]):
        text = f"({c} + {u}*{text})"
    return text


def _chebyshev_lepton(term: Term, x: str, name: str) -> tuple[str, dict, list]:
    """The series as a polynomial in u in Horner form: a compiled expression, no table
    (Clenshaw's recurrence would round better, but Lepton copies each definition into
    the tree, so its two-term recurrence grows the expression exponentially)."""
    f = term.function
    u = f"{name}u"
    clamped = f"(min(max({x}, {f.x0!r}), {f.x1!r}) - {f.x0!r})"
    mono = [repr(float(c)) for c in chebyshev.cheb2poly(f.values)]
    return _extended(term, x, horner(mono, u)), {}, [f"{u} = {2.0 / (f.x1 - f.x0)!r}*{clamped} - 1"]


_LEPTON_FORMS = {Channel.basis: _spline_lepton, ChebyshevChannel.basis: _chebyshev_lepton}


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


def _by_type(values: dict) -> str:
    """Lepton text of a per-type constant as a quadratic in s = t1 + t2 (O-O 0, O-H 1,
    H-H 2) through the three types' values (0 for a type not given): two multiply-adds."""
    v0, v1, v2 = (float(values.get(k, 0.0)) for k in (("O", "O"), ("H", "O"), ("H", "H")))
    c = (v2 - 2.0 * v1 + v0) / 2.0
    return f"({v0!r} + s*({v1 - v0 - c!r} + s*{c!r}))"


def _per_type(terms: list[Term], value) -> dict:
    """{species pair: value(term)} of the pair terms of one force."""
    return {tuple(sorted(t.species)): value(t) for t in terms}


def _spline_pair_energy(terms: list[Term]) -> tuple[str, dict, bool]:
    """Every type reads the joined table (_joined_table) with its extension and wall below it;
    OpenMM's switching function is the model's."""
    table, placement = _joined_table(terms)
    lo = _per_type(terms, lambda t: float(t.lower))
    hi = _per_type(terms, lambda t: float(t.function.x1))
    slope = _per_type(terms, lambda t: float(t.end_slopes()[0]))
    wall = _per_type(terms, lambda t: float(t.k_wall))
    weight = _mixed({k: 1.0 for k in lo}) if len(lo) < 3 else None
    energy = "pair(min(max(r, lo), hi)*sc + off) + slo*min(0, r-lo) + kw*max(0, lo-r)^2"
    text = "; ".join([f"({weight})*({energy})" if weight else energy, f"lo = {_mixed(lo)}", f"hi = {_mixed(hi)}",
                      f"sc = {_mixed({k: p[0] for k, p in placement.items()})}",
                      f"off = {_mixed({k: p[1] for k, p in placement.items()})}", f"slo = {_mixed(slope)}",
                      f"kw = {_mixed(wall)}"])
    return text, {"pair": table}, True


def _chebyshev_pair_energy(terms: list[Term]) -> tuple[str, dict, bool]:
    """Every type's series (in 1/r, kernels.chebyshev_series) as one polynomial in u whose
    coefficients are quadratics in the type (_by_type), times its cutoff factor (1 - w)^3,
    which replaces OpenMM's switching function (measured: the switch alone costs about as
    much as the polynomial)."""
    if len({(t.function.n, t.function.x1) for t in terms}) != 1:
        raise ValueError("the pair series of one force must share their degree and upper end")
    n = terms[0].function.n
    # cheb2poly drops trailing zero coefficients (an all-zero series, e.g. a remainder that
    # vanishes, becomes one): pad back to the degree
    mono = _per_type(terms, lambda t: np.pad(chebyshev.cheb2poly(t.function.values), (0, n))[:n])
    coefficients = [_by_type({k: m[i] for k, m in mono.items()}) for i in range(n)]
    # a type without a term weighs 0 (zero coefficients, slope and wall) on a neighbour's range
    lo = _per_type(terms, lambda t: float(t.lower))
    lo_all = {k: lo.get(k, float(terms[0].lower)) for k in _PAIR_WEIGHT}
    # the series' variable: w = (1/lo - 1/r) / (1/lo - 1/x1), 0 at lo and 1 at the cutoff
    inverse_span = {k: 1.0 / (1.0 / v - 1.0 / terms[0].function.x1) for k, v in lo_all.items()}
    slope = _per_type(terms, lambda t: float(t.end_slopes()[0]))
    wall = _per_type(terms, lambda t: float(t.k_wall))
    text = "; ".join([f"(1 - w)^3*{horner(coefficients, 'u')} + slo*min(0, r-lo) + kw*max(0, lo-r)^2",
                      "u = 2*w - 1", "w = (1/lo - 1/max(r, lo))*isp", f"lo = {_by_type(lo_all)}",
                      f"isp = {_by_type(inverse_span)}", f"slo = {_by_type(slope)}", f"kw = {_by_type(wall)}",
                      "s = t1 + t2"])
    return text, {}, False


_PAIR_FORMS = {Channel.basis: _spline_pair_energy, ChebyshevChannel.basis: _chebyshev_pair_energy}


def _pair_force(model: LossModel, terms: list[Term], species_codes, molecules, group, name):
    """One CustomNonbondedForce for all pair terms (O-O, O-H, H-H), over OpenMM's neighbour
    list: the type of each pair comes from the per-particle parameter t (O 0, H 1), and the
    energy of every type is written by the terms' basis (_PAIR_FORMS).

    Pairs of a type without a term weigh 0. One force with per-particle types costs O(N)
    on every platform; interaction groups loop over all pairs of the two groups on the CPU.
    """
    bases = {t.function.basis for t in terms}
    emit = _PAIR_FORMS.get(bases.pop()) if len(bases) == 1 else None
    if emit is None:
        raise ValueError(f"pair terms {[t.name for t in terms]}: no OpenMM pair form for their bases")
    text, tables, switched = emit(terms)
    force = mm.CustomNonbondedForce(text)
    for table_name, table in tables.items():
        force.addTabulatedFunction(table_name, table)
    force.addPerParticleParameter("t")
    for s in species_codes:
        force.addParticle([float(SPECIES_INDEX["H"] == s)])
    for o, h1, h2 in molecules:
        force.addExclusion(int(o), int(h1))
        force.addExclusion(int(o), int(h2))
        force.addExclusion(int(h1), int(h2))
    # the terms' own cutoff: an agent model's antisymmetric remainder may end before the
    # model's (LossModel.asymmetry_range), switched off like a spline
    r_cut, r_switch = terms[0].r_cut, terms[0].r_switch
    if {(t.r_cut, t.r_switch) for t in terms} != {(r_cut, r_switch)}:
        raise ValueError(f"pair terms {[t.name for t in terms]}: one force needs one cutoff and switch")
    switched = switched or r_cut < model.r_cut
    force.setNonbondedMethod(mm.CustomNonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(r_cut)
    force.setUseSwitchingFunction(switched)
    if switched:
        force.setSwitchingDistance(r_switch)
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


def _molecule_force(mode, term: Term, molecules, group, name):
    """The term's bonds (O-H1 and O-H2, or H1-H2) or angles (H1-O-H2) of every molecule, one
    force per term: a CustomBondForce or CustomAngleForce for a compiled expression (one
    invariant per force measures 8x cheaper on the CPU platform than a CustomCompoundBondForce
    over (O, H1, H2)); a CustomCompoundBondForce for a table, the only bonded force that
    holds tabulated functions."""
    angle = term.invariant == "angle"
    text, tables, definitions = lepton_energy(term, "x", f"{term.invariant}_term")  # not angle(), a function
    members = ((1, 0, 2),) if angle else ((0, 1), (0, 2)) if set(term.species) == {"O", "H"} else ((1, 2),)
    if tables:
        variable = "angle(p1,p2,p3)" if angle else "distance(p1,p2)"
        force = mm.CustomCompoundBondForce(len(members[0]), "; ".join([text] + definitions + [f"x = {variable}"]))
        for table_name, table in tables.items():
            force.addTabulatedFunction(table_name, table)
        add = lambda atoms: force.addBond(atoms, [])  # noqa: E731
    elif angle:
        force = mm.CustomAngleForce("; ".join([text] + definitions + ["x = theta"]))
        add = lambda atoms: force.addAngle(*atoms, [])  # noqa: E731
    else:
        force = mm.CustomBondForce("; ".join([text] + definitions + ["x = r"]))
        add = lambda atoms: force.addBond(*atoms, [])  # noqa: E731
    for molecule in molecules:
        for m in members:
            add([int(molecule[i]) for i in m])
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
    """The box's three edge lengths (nm), given as lengths or as a diagonal 3x3 matrix of
    box vectors; minimum-image pairs need at least twice the cutoff on every side."""
    box_nm = np.asarray(box_nm, dtype=float)
    if box_nm.shape == (3, 3) and not np.any(box_nm - np.diag(np.diag(box_nm))):
        box_nm = np.diag(box_nm).copy()
    if box_nm.shape != (3,) or not np.all(np.isfinite(box_nm)) or np.any(box_nm <= 0):
        raise ValueError(f"box {box_nm.tolist()}: give the three edge lengths in nm of an orthorhombic "
                         "box (or its diagonal box vectors); triclinic boxes are not supported")
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
        for t in terms:
            if t.invariant != "pair":
                system.addForce(_molecule_force(model.mode, t, molecules, group,
                                                f"{what}{t.invariant} {'-'.join(t.species)} terms"))
    if model.charge_h:
        group = force_group if model.mode == "reciprocal" else SHARED_GROUP
        system.addForce(_coulomb_force(model, species_codes, molecules, group, ewald_tolerance))
    return system


def set_masses(system: mm.System, species_codes, masses_amu: dict | None) -> mm.System:
    """Give every particle the mass of its element in masses_amu (amu; e.g. a CP2K run's
    &KIND MASS, heavy hydrogen for a long step); None keeps the System's masses."""
    if masses_amu:
        for i, s in enumerate(np.asarray(species_codes)):
            system.setParticleMass(i, float(masses_amu[SPECIES[s]]))
    return system


def create_system(model: LossModel, species_codes, molecules, box_nm, ewald_tolerance=EWALD_TOLERANCE,
                  remove_cm_motion: bool = True) -> mm.System:
    """An openmm.System executing `model` for a water box (arrays in nm): the one System
    builder (openmm.api.LearnedWater.createSystem builds through it from a Topology).

    In reciprocal mode every force is in group 0 and any integrator can run it; in agent
    mode use `LearningIntegrator`. A CMMotionRemover removes the centre-of-mass velocity
    every step (agent forces do not sum to zero; OpenMM's own systems carry one too).
    """
    box_nm = check_box(model, box_nm)
    system = mm.System()
    for s in np.asarray(species_codes):
        system.addParticle(MASSES_AMU[SPECIES[s]])
    system.setDefaultPeriodicBoxVectors(mm.Vec3(box_nm[0], 0, 0), mm.Vec3(0, box_nm[1], 0),
                                        mm.Vec3(0, 0, box_nm[2]))
    if remove_cm_motion:
        system.addForce(mm.CMMotionRemover(1))
    return add_forces(model, system, species_codes, molecules, box_nm, ewald_tolerance=ewald_tolerance)
