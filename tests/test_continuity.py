"""Forces are continuous at both ends of every table, in every engine.

Outside its fitted range a term continues linearly with its end slope and a wall with zero
initial slope adds to it (losses.terms). A planted model whose every term has a steep
slope at its ends is evaluated just inside and just outside each end by the numba
kernels, OpenMM (Reference and CPU), LAMMPS tables and pair_style python. A clamped
table (slope 0 outside, the old behaviour) jumps by the whole end slope; the check must
catch that (planted failure below).
"""

import numpy as np
import openmm as mm
import pytest

from lammps_plugin.run import lammps_available, run_lammps
from lammps_plugin.writer import DeckOptions, write_deck
from openmm_learning.dynamics import Dynamics, StartFrame
from openmm_learning.io.topology import WaterSystem
from openmm_learning.losses.model import LossModel
from openmm_learning.losses.channels import CHANNEL_KEYS, RECIPROCAL_TIES, Channel
from openmm_learning.openmm.forces import create_system
from openmm_learning.openmm.integrator import agent_forces

BOX = np.array([1.5, 1.5, 1.5])
BOND, THETA = 0.1, 1.85
#: fraction of a term's end slope that a jump must stay under (a clamped table jumps by 100 %)
TOLERANCE = 0.03

#: planted functions and ranges of every kind of term: steep at both ends of each range
PLANTED = {
    ("O", "O", "inter"): (0.24, lambda r: 40.0 * np.exp(-(r - 0.24) / 0.03) - 2.0),
    ("O", "H", "inter"): (0.14, lambda r: -30.0 * np.exp(-(r - 0.14) / 0.04)),
    ("H", "H", "inter"): (0.16, lambda r: 20.0 * np.exp(-(r - 0.16) / 0.04)),
    ("O", "H", "intra"): ((0.085, 0.115), lambda r: 2.0e5 * (r - 0.099) ** 2),
    ("H", "H", "intra"): ((0.15, 0.17), lambda r: 3.0e4 * (r - 0.161) ** 2 + 800.0 * r),
    ("O", None, "angle"): ((1.6, 2.2), lambda t: 300.0 * (t - 1.87) ** 2),
}


def planted_model(r_cut=0.6, r_switch=0.5) -> LossModel:
    tied = {b: a for a, b in RECIPROCAL_TIES}
    channels = []
    for key in CHANNEL_KEYS:
        lo_or_range, fn = PLANTED[tied.get(key, key)]
        lo, hi = (lo_or_range, r_cut) if key[2] == "inter" else lo_or_range
        n = 61
        grid = np.linspace(lo, hi, n)
        channels.append(Channel(*key, float(lo), float(grid[1] - grid[0]), fn(grid)))
    return LossModel("reciprocal", channels, r_cut=r_cut, r_switch=r_switch)


def water(o, bisector_angle=0.0, theta=THETA, r1=BOND, r2=BOND):
    """One molecule at o in the xy plane: H1 at angle +theta/2, H2 at -theta/2 around the
    direction bisector_angle."""
    a1, a2 = bisector_angle + theta / 2, bisector_angle - theta / 2
    return np.array([o, o + r1 * np.array([np.cos(a1), np.sin(a1), 0]), o + r2 * np.array([np.cos(a2), np.sin(a2), 0])])


FAR = np.array([0.75, 0.75, 0.75])  # a second molecule beyond the cutoff of the first


def geometry(term: str, x: float):
    """Positions (6, 3) with the invariant of `term` at x, and {atom: d position / dx}, so
    that the sum of F[atom] . d over those atoms is -dE/dx."""
    o1 = np.array([0.3, 0.3, 0.3])
    if term.startswith("pair"):
        first = water(o1, bisector_angle=np.pi)  # Hs point to -x
        i = {"pair O-O": 0, "pair O-H": 0, "pair H-H": 1}[term]
        j = {"pair O-O": 0, "pair O-H": 1, "pair H-H": 1}[term]
        second = water(np.zeros(3), bisector_angle=0.0)  # Hs point to +x, away from the first
        direction = np.array([1.0, 0.25, 0.1]) / np.linalg.norm([1.0, 0.25, 0.1])
        second += first[i] + x * direction - second[j]
        return np.vstack([first, second]), {3: direction, 4: direction, 5: direction}  # rigid shift
    if term == "bond O-H":
        mol = water(o1, r1=x)
        return np.vstack([mol, water(o1 + FAR)]), {1: (mol[1] - mol[0]) / x}
    if term in ("bond H-H", "angle"):
        theta = x if term == "angle" else 2 * np.arcsin(x / (2 * BOND))
        mol = water(o1, bisector_angle=theta / 2, theta=theta)  # H2 on the x axis, H1 at angle theta
        dpos = BOND * np.array([-np.sin(theta), np.cos(theta), 0.0])  # d H1 / d theta
        if term == "bond H-H":
            dpos = dpos / (BOND * np.cos(theta / 2))  # H-H = 2 BOND sin(theta / 2)
        return np.vstack([mol, water(o1 + FAR)]), {1: dpos}
    raise KeyError(term)


def along(forces, moved):
    return sum(forces[atom] @ d for atom, d in moved.items())


TERM_ENDS = [("pair O-O", 0.24), ("pair O-H", 0.14), ("pair H-H", 0.16), ("bond O-H", 0.085),
             ("bond O-H", 0.115), ("bond H-H", 0.15), ("bond H-H", 0.17), ("angle", 1.6), ("angle", 2.2)]
SYSTEM = WaterSystem(np.array([0, 1, 1, 0, 1, 1]), np.arange(6).reshape(2, 3))


def _key(term):
    """("bond", "O", "H") from "bond O-H"; the angle is H-O-H."""
    if term == "angle":
        return ("angle", "H", "O", "H")
    invariant, pair = term.split()
    return (invariant, *pair.split("-"))


def end_slope(model, term, x_end):
    t = model.term(*_key(term))
    return abs(t.end_slopes()[0 if np.isclose(x_end, t.lower) else 1])


def jump(force_along, x_end, eps):
    """|F(x_end + eps) - F(x_end - eps)| of a scalar force function of the invariant."""
    return abs(force_along(x_end + eps) - force_along(x_end - eps))


def numba_force(model):
    def f(term, x):
        pos, moved = geometry(term, x)
        return along(model.forces(pos, BOX, SYSTEM.species, SYSTEM.molecules)[0], moved)
    return f


def openmm_context(model, platform):
    return mm.Context(create_system(model, SYSTEM.species, SYSTEM.molecules, BOX), mm.VerletIntegrator(0.0005),
                      mm.Platform.getPlatformByName(platform))


def openmm_force(model, platform):
    ctx = openmm_context(model, platform)

    def f(term, x):
        pos, moved = geometry(term, x)
        ctx.setPositions(pos)
        return along(agent_forces(ctx, model.mode, SYSTEM.species), moved)
    return f


@pytest.fixture(scope="module")
def model():
    return planted_model()


def test_planted_geometries_measure_minus_dE_dx(model):
    """The geometries set the invariant, and the projected force is -dE/dx of OpenMM's
    energy (else a jump could hide in a wrong projection)."""
    ctx = openmm_context(model, "Reference")
    force = openmm_force(model, "Reference")

    def energy(term, x):
        ctx.setPositions(geometry(term, x)[0])
        return ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(mm.unit.kilojoule_per_mole)

    for term, x in TERM_ENDS:
        pos, moved = geometry(term, x)
        if term.startswith("pair"):
            i, j = {"pair O-O": (0, 3), "pair O-H": (0, 4), "pair H-H": (1, 4)}[term]
            assert np.isclose(np.linalg.norm(pos[j] - pos[i]), x)
        elif term == "bond O-H":
            assert np.isclose(np.linalg.norm(pos[1] - pos[0]), x)
        elif term == "bond H-H":
            assert np.isclose(np.linalg.norm(pos[1] - pos[2]), x)
        else:
            a, b = pos[1] - pos[0], pos[2] - pos[0]
            assert np.isclose(np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), x)
        for inside in (x - 1e-3, x + 1e-3):
            h = 1e-6
            numeric = -(energy(term, inside + h) - energy(term, inside - h)) / (2 * h)
            assert np.isclose(force(term, inside), numeric, rtol=1e-4, atol=1e-2), (term, inside)


@pytest.mark.parametrize("engine", ["numba", "Reference", "CPU"])
def test_forces_continuous_at_every_table_end(model, engine):
    evaluate = numba_force(model) if engine == "numba" else openmm_force(model, engine)
    for term, x_end in TERM_ENDS:
        slope = end_slope(model, term, x_end)
        assert slope > 100.0, f"planted {term} is not steep at {x_end}"
        gap = jump(lambda x: evaluate(term, x), x_end, 1e-6)
        assert gap < TOLERANCE * slope, f"{engine}: force of {term} jumps by {gap:.1f} at {x_end} (slope {slope:.0f})"


def test_the_check_catches_a_clamped_table(model):
    """Planted failure: a table clamped outside its range (slope 0 there) jumps at its ends."""
    t = model.term("bond", "O", "H")

    def clamped_force(x):
        return -t.energy(np.clip(x, t.lower, t.upper))[1] if t.lower <= x <= t.upper else 0.0

    gap = jump(clamped_force, t.lower, 1e-6)
    assert gap > TOLERANCE * abs(t.end_slopes()[0])


def lammps_curves(tmp_path, model, pair, points):
    """E and F (kJ/mol, kJ/mol/nm) of LAMMPS's own pair and bond styles at the given
    distances (nm), written by LAMMPS's pair_write and bond_write."""
    path = model.save(tmp_path / "model.json")
    pos, _ = geometry("bond O-H", 0.1)
    deck = write_deck(tmp_path / pair, path, StartFrame(pos, None, BOX, SYSTEM.species, SYSTEM.molecules),
                      Dynamics(300.0, 0.0005, 0, "nose-hoover"), DeckOptions(pair=pair))
    lines = []
    for key, (i, j) in {"OO": (1, 1), "OH": (1, 2), "HH": (2, 2)}.items():
        for k, r in enumerate(points[key]):
            lines.append(f"pair_write {i} {j} 2 r {10 * r - 1e-4:.8f} {10 * r + 1e-4:.8f} curves.txt P{key}{k}")
    for key, btype in {"OH": 1, "HH": 2}.items():
        for k, r in enumerate(points["bond" + key]):
            lines.append(f"bond_write {btype} 2 {10 * r - 1e-4:.8f} {10 * r + 1e-4:.8f} curves.txt B{key}{k}")
    deck.deck.write_text(deck.deck.read_text() + "\n".join(lines) + "\n")
    run_lammps(deck.deck, package="PYTHON" if pair == "python" else None)
    return read_written_curves(deck.folder / "curves.txt")


def read_written_curves(path):
    """{keyword: (r nm, E kJ/mol, F kJ/mol/nm)} from a pair_write/bond_write file in units real."""
    rows = {}
    key = None
    for line in path.read_text().splitlines():
        words = line.split()
        if len(words) == 1:
            key = words[0]
            rows[key] = []
        elif len(words) == 4 and key and words[0].isdigit():
            rows[key].append([float(v) for v in words[1:]])
    return {k: (np.array(v)[:, 0] / 10, np.array(v)[:, 1] * 4.184, np.array(v)[:, 2] * 41.84)
            for k, v in rows.items()}


@pytest.mark.parametrize("pair", ["table", "python"])
def test_lammps_forces_continuous_at_table_ends(tmp_path, model, pair):
    if not lammps_available("PYTHON" if pair == "python" else None):
        pytest.skip("no LAMMPS with the PYTHON package (apt-get install lammps)")
    points = {"OO": [0.24], "OH": [0.14], "HH": [0.16], "bondOH": [0.085, 0.115], "bondHH": [0.15, 0.17]}
    curves = lammps_curves(tmp_path, model, pair, points)
    checked = 0
    for key, xs in points.items():
        invariant = "bond" if key.startswith("bond") else "pair"
        species = tuple(key.removeprefix("bond"))
        term = model.term(invariant, *species)
        for k, x_end in enumerate(xs):
            r, e, f = curves[("B" if invariant == "bond" else "P") + key.removeprefix("bond") + str(k)]
            assert np.allclose(r, [x_end - 1e-5, x_end + 1e-5], atol=1e-9)
            slope = abs(term.end_slopes()[0 if np.isclose(x_end, term.lower) else 1])
            # within 1e-5 nm of the end the force changes by the curvature times 2e-5 nm only
            assert abs(f[1] - f[0]) < TOLERANCE * slope, f"LAMMPS {pair}: {key} jumps at {x_end}: {f}"
            np.testing.assert_allclose(f, -term.energy(r)[1], rtol=1e-3, atol=0.02 * slope)
            checked += 1
    assert checked == 7
