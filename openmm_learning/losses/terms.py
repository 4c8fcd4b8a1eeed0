"""The term plan: every term of a model listed once, for every engine to emit.

A term is one function of one invariant of water, with the species it involves, the
agents that descend it, and its guards:

    invariant  "pair"   distance between atoms of different molecules (switched to 0 at r_cut)
               "bond"   distance between two atoms of one molecule
               "angle"  H-O-H angle of one molecule (at O)
    species    ("O", "H") for a pair or bond, ("H", "O", "H") for the angle
    agents     the species whose atoms take this term's gradient as their force: all the
               species of the term for a potential (reciprocal), one for an agent's own view
    function   a natural cubic spline table (Channel) or a compiled Chebyshev series
               (ChebyshevChannel); each engine's emitter dispatches on function.basis

Outside its fitted range [lower, upper] every term continues linearly with its end slope
and a harmonic wall (zero slope at the end, stiffness wall_stiffness: the model's k_wall
per nm^2, scaled per rad^2 for the angle) adds to it, so forces are continuous
everywhere. The numba kernels, OpenMM forces, LAMMPS tables, the LAMMPS
`pair_style python` coefficients and the plots are all generated from this list.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import kernels
from .channels import BASIS_CODES, RECIPROCAL_TIES, ChebyshevChannel

INVARIANTS = ("pair", "bond", "angle")
#: invariant of each channel kind of the model file
INVARIANT_OF_KIND = {"inter": "pair", "intra": "bond", "angle": "angle"}
#: kernels' kind code of each invariant
KIND_CODE = {"pair": kernels.KIND_INTER, "bond": kernels.KIND_INTRA, "angle": kernels.KIND_ANGLE}


@dataclass(frozen=True)
class Term:
    invariant: str
    species: tuple
    agents: tuple
    function: object  # Channel or ChebyshevChannel: basis, x0, x1, h, n, values, second_derivatives()
    k_wall: float
    r_switch: float | None = None  # pair terms: switched off between r_switch and r_cut
    r_cut: float | None = None

    @property
    def name(self) -> str:
        who = "+".join(self.agents)
        return f"{self.invariant} {'-'.join(self.species)} ({who})"

    @property
    def is_potential(self) -> bool:
        """Every atom of the term takes its gradient: the term conserves energy by itself."""
        return set(self.agents) == set(self.species)

    @property
    def lower(self) -> float:
        return self.function.x0

    @property
    def upper(self) -> float | None:
        """Upper end of the fitted range, or None where the switch ends the term."""
        return None if self.invariant == "pair" else self.function.x1

    @property
    def wall_stiffness(self) -> float:
        """k of this term's walls, k (x0 - x)^2 (kJ/mol per nm^2, or per rad^2 for the angle)."""
        return kernels.wall_stiffness(KIND_CODE[self.invariant], self.k_wall)

    def end_slopes(self) -> np.ndarray:
        """dE/dx of the function at its lower and upper end (the slopes of its extensions;
        a pair polynomial's includes its cutoff factor)."""
        f = self.function
        values = np.asarray(f.values, float)
        if f.basis == ChebyshevChannel.basis:
            return np.array([kernels.chebyshev_series(x, f.x0, f.x1, values, 0, f.n, self.invariant == "pair")[1]
                             for x in (f.x0, f.x1)])
        return kernels.end_slopes(f.x0, f.h, f.n, values, f.second_derivatives())

    def energy(self, x):
        """E(x) and dE/dx (kJ/mol, per nm or rad) with extension, walls and switch."""
        f = self.function
        xs = np.atleast_1d(np.asarray(x, float))
        e, de = kernels.channel_curve(xs, KIND_CODE[self.invariant], BASIS_CODES[f.basis], f.x0, f.h, f.n,
                                      np.asarray(f.values, float), f.second_derivatives(), self.k_wall,
                                      self.r_switch or 0.0, self.r_cut or 0.0)
        return (e, de) if np.ndim(x) else (e[0], de[0])


def plan(model) -> list[Term]:
    """The terms of a LossModel.

    Reciprocal mode: one potential term per tied pair of channels (O-H seen from O and
    from H is one term), i.e. pairs O-O, O-H, H-H, bonds O-H, H-H and the angle.
    Agent mode: one term per channel, descended by that channel's agent only.
    """
    skip = {b for _, b in RECIPROCAL_TIES} if model.mode == "reciprocal" else set()
    terms = []
    for ch in model.channels:
        if ch.key in skip:
            continue
        invariant = INVARIANT_OF_KIND[ch.kind]
        species = ("H", "O", "H") if invariant == "angle" else (ch.agent, ch.neighbour)
        agents = tuple(dict.fromkeys(species)) if model.mode == "reciprocal" else (ch.agent,)
        pair = invariant == "pair"
        terms.append(Term(invariant, species, agents, ch, model.k_wall,
                          model.r_switch if pair else None, model.r_cut if pair else None))
    return terms


def split_agent_terms(model) -> tuple[list[Term], list[Term]]:
    """An agent model's terms as a shared potential S and an antisymmetric remainder D.

    With L_O and L_H the losses of the two agent species, S = (L_O + L_H)/2 and
    D = (L_O - L_H)/2: an O atom takes -grad(S + D) = -grad L_O, an H atom -grad(S - D) =
    -grad L_H, which is the agent dynamics exactly. S is the model's symmetric part, one
    conservative potential (an engine's ordinary force on every atom); only D needs the
    sign per species. Terms among the atoms of one species only (O-O, H-H pairs, the H-H
    bond) are all in S, so D holds just the O views of the antisymmetric part's tied
    channels (O-H pairs and bonds, the angle), each written as a potential; D's pair term
    ends at the model's asymmetry range when it has one (LossModel.antisymmetric_part).
    """
    o_views = {a for a, _ in RECIPROCAL_TIES}
    antisymmetric = [replace(t, agents=("O", "H")) for t in model.antisymmetric_part().terms()
                     if t.function.key in o_views]
    return model.symmetric_part().terms(), antisymmetric
