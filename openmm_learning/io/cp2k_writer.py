"""CP2K inputs for boxes of water, generated with cp2k-input-tools (never string templates)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from .. import units
from .cp2k_input import _spec_tree

_WATER_MASS_AMU = 2 * units.MASSES_AMU["H"] + units.MASSES_AMU["O"]
_AVOGADRO = 6.02214076e23
_OH_NM = 0.0957
_HOH_DEG = 104.5
#: closest allowed approach (nm) of atoms of different molecules in a generated start
_MIN_CONTACT_NM = 0.17


def water_box_edge_nm(n_molecules: int, density_g_cm3: float) -> float:
    """Cubic box edge (nm) holding n water molecules at the given density."""
    grams = n_molecules * _WATER_MASS_AMU / _AVOGADRO
    return (grams / density_g_cm3) ** (1.0 / 3.0) * 1e7  # cm -> nm


def _lattice_sites(n: int, edge: float, rng) -> tuple[np.ndarray, float]:
    """n sites (nm) of the simple-cubic, bcc or fcc lattice with the widest spacing, and that spacing."""
    best = None
    for basis, spacing in (
        (np.zeros((1, 3)), 1.0),
        (np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), math.sqrt(3) / 2),
        (np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]), math.sqrt(0.5)),
    ):
        m = 1
        while len(basis) * m**3 < n:
            m += 1
        nearest = edge / m * spacing
        if best is None or nearest > best[0] + 1e-12:
            best = (nearest, basis, m)
    nearest, basis, m = best
    cells = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    sites = ((cells + basis[None]).reshape(-1, 3) + 0.25) * (edge / m)
    keep = np.sort(rng.choice(len(sites), size=n, replace=False))
    return sites[keep], nearest


def _random_rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def water_lattice(n_molecules: int, edge_nm: float, seed: int = 1) -> np.ndarray:
    """Positions (n_molecules * 3, 3) in nm, O H H per molecule, randomly oriented on a lattice.

    Orientations are redrawn until no two atoms of different molecules (or periodic
    images) come closer than 0.17 nm.
    """
    rng = np.random.default_rng(seed)
    sites, nearest = _lattice_sites(n_molecules, edge_nm, rng)
    if nearest < 0.25:
        raise ValueError(f"{n_molecules} molecules in a {edge_nm:.3f} nm box: lattice spacing "
                         f"{nearest:.3f} nm is too tight for a start structure; lower the density")
    half = math.radians(_HOH_DEG) / 2
    body = _OH_NM * np.array([[0, 0, 0], [math.sin(half), math.cos(half), 0],
                              [-math.sin(half), math.cos(half), 0]])
    placed = np.empty((0, 3))
    for site in sites:
        for _ in range(10000):
            mol = site + body @ _random_rotation(rng).T
            if placed.size == 0:
                break
            d = mol[:, None, :] - placed[None, :, :]
            d -= edge_nm * np.rint(d / edge_nm)
            if np.sqrt((d**2).sum(-1)).min() >= _MIN_CONTACT_NM:
                break
        else:
            raise ValueError(f"could not place {n_molecules} water molecules without overlap in a "
                             f"{edge_nm:.3f} nm box; lower the density")
        placed = np.vstack([placed, mol])
    return placed


def _generator():
    from cp2k_input_tools.generator import CP2KInputGenerator

    gen = CP2KInputGenerator.__new__(CP2KInputGenerator)
    try:
        # same trick as the parser: share the parsed spec instead of re-reading 27 MB
        CP2KInputGenerator.__init__(gen, xmlspec=io.StringIO("<CP2K_INPUT/>"))
        gen._parse_tree = _spec_tree()
    except Exception:  # pragma: no cover - other cp2k-input-tools versions
        gen = CP2KInputGenerator()
    return gen


def _natural_order(tree: dict) -> dict:
    """Reorder a tree so the generator writes sections in the order given.

    The generator writes a section's keywords first, then its subsections from a stack,
    i.e. last one first; reversing the subsections undoes that.
    """
    keywords = [(k, v) for k, v in tree.items() if not isinstance(v, dict)]
    sections = [(k, _natural_order(v)) for k, v in tree.items() if isinstance(v, dict)]
    return dict(keywords + sections[::-1])


def _choice(name: str, value, allowed: tuple[str, ...]) -> str:
    """`value` as spelled in `allowed` (case-insensitive), else a ValueError naming them."""
    for a in allowed:
        if str(value).upper() == a.upper():
            return a
    raise ValueError(f"{name} {value!r}: use one of {', '.join(repr(a) for a in allowed)}")


_ENSEMBLES = ("LANGEVIN", "NVT", "NVE")
_REGIONS = ("MASSIVE", "MOLECULE", "GLOBAL")
#: CSVR time constant (fs): a global thermostat acts on the total kinetic energy only; a
#: massive one kicks every velocity component, so a longer time keeps the dynamics
#: (O-H stretch ~9 fs, librations ~50 fs) less disturbed, still equilibrating in < 1 ps
_TIMECON_FS = {"GLOBAL": 50.0, "MOLECULE": 50.0, "MASSIVE": 100.0}


def _md_thermostat(ensemble, gamma_per_fs, region, timecon_fs) -> tuple[dict, str]:
    """The thermostat part of &MD and its description for the header comment."""
    if ensemble == "LANGEVIN":
        return {"langevin": {"gamma": float(gamma_per_fs)}}, f"LANGEVIN gamma {gamma_per_fs:g}/fs"
    if ensemble == "NVT":
        return ({"thermostat": {"type": "CSVR", "region": region, "csvr": {"timecon": float(timecon_fs)}}},
                f"NVT CSVR {region} {timecon_fs:g} fs")
    return {}, "NVE"


def _water_tree(*, project, coord_file, edge_a, method, temperature_k, steps, timestep_fs, seed,
                ensemble, thermostat, hydrogen_mass_amu, print_every) -> dict:
    # GMAX ~2 per Angstrom of edge, odd (an even grid count is not allowed)
    gmax = int(round(2 * edge_a))
    gmax += 1 - gmax % 2
    if method == "xtb":
        dft = {
            "qs": {
                "method": "xTB",
                "xtb": {
                    "do_ewald": True,
                    "check_atomic_charges": False,
                    "parameter": {"dispersion_parameter_file": "dftd3.dat",
                                  "param_file_name": "xTB_parameters"},
                },
            },
            # without ALPHA, CP2K 2023.1's xTB Ewald takes 1/bohr and is far from converged
            "poisson": {"periodic": "XYZ",
                        "ewald": {"ewald_type": "SPME", "alpha": "[angstrom^-1] 0.35",
                                  "gmax": gmax, "o_spline": 5}},
            "scf": {"scf_guess": "ATOMIC", "eps_scf": 1e-6, "max_scf": 30,
                    "ot": {"preconditioner": "FULL_SINGLE_INVERSE", "minimizer": "DIIS"},
                    "outer_scf": {"max_scf": 10, "eps_scf": 1e-6}},
        }
        kinds = None
    elif method == "dft":
        dft = {
            "basis_set_file_name": "BASIS_MOLOPT",
            "potential_file_name": "GTH_POTENTIALS",
            "mgrid": {"cutoff": 400, "rel_cutoff": 50},
            "qs": {"method": "GPW", "eps_default": 1e-12},
            "poisson": {"periodic": "XYZ"},
            "scf": {"scf_guess": "ATOMIC", "eps_scf": 1e-6, "max_scf": 30,
                    "ot": {"preconditioner": "FULL_SINGLE_INVERSE", "minimizer": "DIIS"},
                    "outer_scf": {"max_scf": 10, "eps_scf": 1e-6}},
            "xc": {
                "xc_functional": {"_": "BLYP"},
                "vdw_potential": {
                    "potential_type": "PAIR_POTENTIAL",
                    "pair_potential": {"type": "DFTD3", "parameter_file_name": "dftd3.dat",
                                       "reference_functional": "BLYP"},
                },
            },
        }
        kinds = {"O": {"basis_set": "DZVP-MOLOPT-SR-GTH", "potential": "GTH-BLYP-q6"},
                 "H": {"basis_set": "DZVP-MOLOPT-SR-GTH", "potential": "GTH-BLYP-q1"}}
    else:
        raise ValueError(f"method {method!r}: use 'xtb' or 'dft'")

    subsys = {
        "cell": {"abc": [edge_a] * 3, "periodic": "XYZ"},
        "topology": {"coord_file_name": coord_file, "coord_file_format": "XYZ"},
    }
    if hydrogen_mass_amu is not None:
        kinds = kinds or {}
        kinds.setdefault("H", {}).update(element="H", mass=float(hydrogen_mass_amu))
    if kinds:
        subsys["kind"] = kinds
    md = {"ensemble": ensemble, "steps": int(steps), "timestep": float(timestep_fs),
          "temperature": float(temperature_k), **thermostat}
    each = {"each": {"md": int(print_every)}}
    return {
        "global": {"project_name": project, "run_type": "MD", "print_level": "LOW", "seed": int(seed)},
        "force_eval": {"method": "QS", "dft": dft, "subsys": subsys},
        "motion": {
            "md": md,
            "print": {
                "trajectory": dict(each),
                "forces": dict(each),
                "velocities": dict(each),
                "restart": {"backup_copies": 0, "each": {"md": 100}},
            },
        },
    }


def write_water_input(directory, *, n_molecules=8, density_g_cm3=0.997, method="xtb",
                      temperature_k=300.0, steps=10, timestep_fs=0.5, seed=1, ensemble="LANGEVIN",
                      langevin_gamma_per_fs=0.002, thermostat_region="massive", thermostat_timecon_fs=None,
                      hydrogen_mass_amu=None, project=None, print_every=1, threads=None) -> Path:
    """Write a CP2K MD input for a cubic box of water, and its start coordinates.

    Parameters
    ----------
    directory : where the input and ``<project>-start.xyz`` go (created if needed)
    method : "xtb" (GFN1-xTB, SPME Ewald alpha 0.35/A) or "dft" (BLYP-D3,
        DZVP-MOLOPT-SR-GTH, GTH pseudopotentials, 400 Ry)
    ensemble : "LANGEVIN" (default; friction `langevin_gamma_per_fs`, 1/fs), "NVT" (CSVR
        thermostat) or "NVE". A thermostat must be local (LANGEVIN, or NVT with region
        "massive"): a global one scales all velocities by one factor, so flexible water
        keeps translation, rotation and vibration at different temperatures for tens of ps.
    thermostat_region : NVT only: "massive" (one thermostat per degree of freedom, default),
        "molecule" or "global"
    thermostat_timecon_fs : NVT only: CSVR time constant; default 100 fs massive, else 50 fs
    hydrogen_mass_amu : when given, &KIND H gets this MASS (e.g. 2 for a longer step in a
        structure-only reference: classical structure does not depend on the masses)
    seed : drives the start orientations and CP2K's initial velocities (&GLOBAL SEED)
    threads : OMP threads named in the input's header comment (the command to run it)

    Returns
    -------
    Path of the ``.inp`` file.
    """
    method = _choice("method", method, ("xtb", "dft"))
    ensemble = _choice("ensemble", ensemble, _ENSEMBLES)
    region = _choice("thermostat_region", thermostat_region, _REGIONS)
    timecon_fs = _TIMECON_FS[region] if thermostat_timecon_fs is None else thermostat_timecon_fs
    if n_molecules < 1 or steps < 1 or print_every < 1 or timestep_fs <= 0 or density_g_cm3 <= 0:
        raise ValueError("n_molecules, steps, print_every, timestep_fs and density_g_cm3 must be positive")
    if min(langevin_gamma_per_fs, timecon_fs, 1 if hydrogen_mass_amu is None else hydrogen_mass_amu) <= 0:
        raise ValueError("langevin_gamma_per_fs, thermostat_timecon_fs and hydrogen_mass_amu must be positive")
    thermostat, described = _md_thermostat(ensemble, langevin_gamma_per_fs, region, timecon_fs)
    if hydrogen_mass_amu is not None:
        described += f", H mass {hydrogen_mass_amu:g} amu"
    if project is None:
        project = f"water{n_molecules}-{method}-{ensemble.lower()}-{temperature_k:g}K"
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    edge_nm = water_box_edge_nm(n_molecules, density_g_cm3)
    edge_a = round(edge_nm / units.ANGSTROM_NM, 6)
    xyz = water_lattice(n_molecules, edge_nm, seed) / units.ANGSTROM_NM
    coord_file = f"{project}-start.xyz"
    lines = [str(len(xyz)),
             f"{n_molecules} H2O, cubic {edge_a} A, {density_g_cm3} g/cm3, lattice start seed {seed}"]
    lines += [f"{el}  {x:14.8f} {y:14.8f} {z:14.8f}"
              for el, (x, y, z) in zip(["O", "H", "H"] * n_molecules, xyz)]
    (directory / coord_file).write_text("\n".join(lines) + "\n")

    tree = _water_tree(project=project, coord_file=coord_file, edge_a=edge_a, method=method,
                       temperature_k=temperature_k, steps=steps, timestep_fs=timestep_fs,
                       seed=seed, ensemble=ensemble, thermostat=thermostat,
                       hydrogen_mass_amu=hydrogen_mass_amu, print_every=print_every)
    inp = directory / f"{project}.inp"
    header = [
        f"# {n_molecules} water molecules, {method}, {described}, {temperature_k:g} K, "
        f"{steps} steps of {timestep_fs:g} fs; written by openmm_learning.io.write_water_input",
        f"# run: OMP_NUM_THREADS={threads or 2} cp2k.psmp -i {inp.name} -o {project}.out",
        "# beside other work: OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE (CP2K's threads spin-wait)",
    ]
    inp.write_text("\n".join(header + list(_generator().line_iter(_natural_order(tree)))) + "\n")
    return inp


# --------------------------------------------------------------------------- running CP2K


def write_single_points(run_input, positions_nm, elements, box_nm, directory, project) -> Path:
    """A CP2K input that computes energies and forces of given frames with the method and
    settings of an existing run: the run's own input, its &MOTION replaced by an MD of
    ENSEMBLE REFTRAJ over the frames (CP2K's own way to evaluate a trajectory), printing
    positions and forces of every frame in the usual MD files.

    positions_nm (n_frames, n_atoms, 3), elements per atom, box_nm (3,): one cubic or
    orthorhombic cell for all frames. Writes ``<project>.inp``, ``<project>-frames.xyz``
    and ``<project>-start.xyz`` (the first frame) into directory; returns the input's path.
    """
    from .cp2k_input import _parse_input

    positions = np.asarray(positions_nm, float)
    if positions.ndim != 3 or positions.shape[1] != len(elements) or len(positions) == 0:
        raise ValueError(f"single points: positions must be (frames, {len(elements)}, 3), got {positions.shape}")
    tree = _parse_input(Path(run_input))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    angstrom = positions / units.ANGSTROM_NM

    def xyz(frames, path):
        lines = []
        for k, frame in enumerate(frames):
            lines += [str(len(elements)), f" i = {k + 1}, single point of {project}"]
            lines += [f"{el}  {x:16.10f} {y:16.10f} {z:16.10f}" for el, (x, y, z) in zip(elements, frame)]
        path.write_text("\n".join(lines) + "\n")

    xyz(angstrom[:1], directory / f"{project}-start.xyz")
    xyz(angstrom, directory / f"{project}-frames.xyz")
    tree["global"] = {k: v for k, v in tree["global"].items() if k != "walltime"}
    tree["global"].update(project_name=project, run_type="md")
    subsys = tree["force_eval"]["subsys"]
    subsys["cell"] = {"abc": [float(b) / units.ANGSTROM_NM for b in np.asarray(box_nm, float)],
                      "periodic": "xyz"}
    subsys["topology"] = {"coord_file_name": f"{project}-start.xyz", "coord_file_format": "xyz"}
    each = {"each": {"md": 1}}
    md = {k: v for k, v in tree.get("motion", {}).get("md", {}).items() if k in ("timestep",)}
    tree["motion"] = {
        "md": {**md, "ensemble": "reftraj", "steps": len(positions),
               "reftraj": {"traj_file_name": f"{project}-frames.xyz", "eval_energy_forces": True,
                           "eval_forces": True, "first_snapshot": 1, "last_snapshot": len(positions)}},
        "print": {"trajectory": dict(each), "forces": dict(each)},
    }
    inp = directory / f"{project}.inp"
    header = [f"# energies and forces of {len(positions)} frames with the settings of {Path(run_input).name}; "
              "written by openmm_learning.io.write_single_points",
              f"# run: OMP_NUM_THREADS=2 cp2k.psmp -i {inp.name} -o {project}.out"]
    inp.write_text("\n".join(header + list(_generator().line_iter(_natural_order(tree)))) + "\n")
    return inp
