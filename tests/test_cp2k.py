"""Reading CP2K runs (bundled real files and damaged copies of them), writing and running inputs."""

import gzip
import lzma
import warnings
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

from openmm_learning import units
from openmm_learning.io import (
    Cp2kFormatError,
    Cp2kRunError,
    find_cp2k_executable,
    read_cp2k_run,
    read_cp2k_settings,
    run_cp2k,
    write_water_input,
)
from openmm_learning.io.cp2k_input import _parse_input
from openmm_learning.io.cp2k_writer import water_box_edge_nm, water_lattice
from openmm_learning.io.topology import find_water_molecules

DATA = Path(str(files("openmm_learning") / "data" / "cp2k"))
XTB = "water64-xtb-300K"
SPCFW = "water64-spcfw-300K"
N_ATOMS = 192
FRAME_LINES = N_ATOMS + 2


@pytest.fixture(scope="module")
def xtb():
    return read_cp2k_run(DATA / XTB)


@pytest.fixture(scope="module")
def spcfw():
    return read_cp2k_run(DATA / SPCFW)


@lru_cache(maxsize=None)
def raw_lines(name, role):
    """Lines of a bundled file, decompressed (role: pos, frc, vel, ener)."""
    fname = f"{name}-1.ener.xz" if role == "ener" else f"{name}-{role}-1.xyz.xz"
    with lzma.open(DATA / name / fname, "rt") as f:
        return tuple(f.read().split("\n")[:-1])


def real_frame(role, k, step=None):
    """Lines of frame k of the bundled xTB file, optionally relabelled to another step."""
    lines = list(raw_lines(XTB, role)[k * FRAME_LINES:(k + 1) * FRAME_LINES])
    if step is not None:
        e = lines[1].split("E =")[1]
        lines[1] = f" i = {step:8d}, time = {0.5 * step:12.3f}, E = {e}"
    return lines


def write(path, lines, newline=True):
    path.write_text("\n".join(lines) + ("\n" if newline else ""))
    return path


def make_run(tmp_path, pos, frc=None, vel=None, inp=True):
    """A run directory of real xTB frames; pos/frc/vel are lists of frames (lists of lines)."""
    for role, frames in (("pos", pos), ("frc", frc), ("vel", vel)):
        if frames is not None:
            write(tmp_path / f"{XTB}-{role}-1.xyz", [line for fr in frames for line in fr])
    if inp:
        (tmp_path / f"{XTB}.inp").write_text((DATA / XTB / f"{XTB}.inp").read_text())
    return tmp_path


def frames(role, n):
    return [real_frame(role, k) for k in range(n)]


# ----------------------------------------------------------------------------- bundled runs


def test_xtb_frames_and_shapes(xtb):
    assert xtb.n_frames == 620
    np.testing.assert_array_equal(xtb.steps, np.arange(0, 3100, 5))
    assert xtb.steps.dtype == np.int64
    np.testing.assert_allclose(xtb.times_ps, xtb.steps * 0.0005)
    assert xtb.elements == ["O", "H", "H"] * 64
    for a in (xtb.positions, xtb.forces, xtb.velocities):
        assert a.shape == (620, N_ATOMS, 3) and a.dtype == np.float64
    np.testing.assert_allclose(xtb.box_nm, np.full((620, 3), 1.24138))
    assert set(xtb.files) == {"pos", "frc", "vel", "ener", "inp"}
    assert xtb.project == XTB


def test_xtb_units_against_raw_file(xtb):
    # first atom of frame 3 (step 15) in each file, and one .ener line
    for role, arr, factor in (("pos", xtb.positions, units.ANGSTROM_NM),
                              ("frc", xtb.forces, units.HARTREE_PER_BOHR_KJMOL_NM),
                              ("vel", xtb.velocities, units.BOHR_PER_AU_TIME_NM_PS)):
        line = raw_lines(XTB, role)[3 * FRAME_LINES + 2].split()
        assert line[0] == "O"
        np.testing.assert_allclose(arr[3, 0], np.array(line[1:], float) * factor, rtol=1e-12)
    assert units.HARTREE_PER_BOHR_KJMOL_NM == pytest.approx(49614.75, rel=1e-6)
    assert units.BOHR_PER_AU_TIME_NM_PS == pytest.approx(2187.691, rel=1e-6)
    # the raw xTB files: O at 1.7860774834 A, force -0.0191037518 Ha/Bohr at step 0
    assert xtb.positions[0, 0, 0] == pytest.approx(0.17860774834)
    assert xtb.forces[0, 0, 0] == pytest.approx(-0.0191037518 * 49614.75, rel=1e-6)

    e = xtb.energies
    assert len(e["step"]) == 3096 and e["step"][-1] == 3095
    row = raw_lines(XTB, "ener")[3].split()  # step 2
    assert e["step"][2] == int(row[0]) == 2
    assert e["time_ps"][2] == pytest.approx(float(row[1]) * 1e-3)
    assert e["kinetic"][2] == pytest.approx(float(row[2]) * units.HARTREE_KJMOL)
    assert e["temperature"][2] == pytest.approx(float(row[3]))
    assert e["potential"][2] == pytest.approx(float(row[4]) * units.HARTREE_KJMOL)
    assert e["conserved"][2] == pytest.approx(float(row[5]) * units.HARTREE_KJMOL)
    assert e["used_time"][2] == pytest.approx(float(row[6]))


def test_spcfw_run(spcfw):
    assert spcfw.n_frames == 251
    np.testing.assert_array_equal(spcfw.steps, np.arange(0, 50001, 200))
    assert spcfw.positions.shape == (251, N_ATOMS, 3)
    assert len(spcfw.energies["step"]) == 2501
    assert spcfw.settings.method == "FIST"


@pytest.mark.parametrize("name, method, steps", [(XTB, "QS/xTB", 100000), (SPCFW, "FIST", 50000)])
def test_settings(name, method, steps):
    s = read_cp2k_settings(DATA / name / f"{name}.inp")
    assert s.project == name and s.run_type == "MD" and s.method == method
    assert s.ensemble == "NVT" and s.thermostat == "CSVR" and s.thermostat_region == "GLOBAL"
    assert s.langevin_gamma_per_ps is None and s.masses_amu == units.MASSES_AMU
    assert s.timestep_ps == pytest.approx(0.0005)
    assert s.temperature_k == pytest.approx(300.0)
    assert s.steps == steps
    np.testing.assert_allclose(s.cell_nm, [1.24138] * 3)


def test_seconds_per_step(xtb, spcfw):
    assert 1.5 < xtb.seconds_per_step() < 3.0
    assert 0.002 < spcfw.seconds_per_step() < 0.01


def test_select_copies(xtb):
    late = xtb.select(xtb.steps >= 1500)
    assert late.steps[0] == 1500 and late.n_frames == 320
    assert late.positions.shape == (320, N_ATOMS, 3)
    late.positions[0, 0, 0] = 99.0
    assert xtb.positions[300, 0, 0] != 99.0
    part = xtb.select(slice(0, 10, 2))
    np.testing.assert_array_equal(part.steps, [0, 10, 20, 30, 40])
    np.testing.assert_array_equal(part.forces, xtb.forces[:10:2])
    with pytest.raises(ValueError):
        xtb.select(xtb.steps < 0)


@pytest.mark.slow
def test_explicit_files_and_gzip(tmp_path):
    write(tmp_path / "a.xyz", [line for fr in frames("pos", 4) for line in fr])
    with gzip.open(tmp_path / "f.xyz.gz", "wt") as f:
        f.write("\n".join(line for fr in frames("frc", 4) for line in fr) + "\n")
    run = read_cp2k_run(pos=tmp_path / "a.xyz", frc=tmp_path / "f.xyz.gz",
                        inp=DATA / XTB / f"{XTB}.inp")
    np.testing.assert_array_equal(run.steps, [0, 5, 10, 15])
    assert run.velocities is None and run.energies is None
    np.testing.assert_allclose(run.box_nm, np.full((4, 3), 1.24138))


# ----------------------------------------------------------------------------- damaged files


def test_truncated_last_frame(tmp_path):
    pos = frames("pos", 5)
    text = "\n".join(line for fr in pos for line in fr)
    make_run(tmp_path, None, frames("frc", 5))
    (tmp_path / f"{XTB}-pos-1.xyz").write_text(text[:-30])  # cut mid-line, as a killed run
    with pytest.raises(Cp2kFormatError, match=r"pos-1\.xyz, line 777, frame 4 \(step 20\).*allow_truncated"):
        read_cp2k_run(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = read_cp2k_run(tmp_path, allow_truncated=True)
    messages = [str(w.message) for w in caught]
    assert any("pos-1.xyz, line 777, frame 4 (step 20): the last frame is incomplete" in m for m in messages)
    assert any("frc-1.xyz: 1 of its 5 steps are not in pos" in m for m in messages)
    np.testing.assert_array_equal(run.steps, [0, 5, 10, 15])

    # cut at a line boundary: atom lines missing
    write(tmp_path / f"{XTB}-pos-1.xyz", [line for fr in pos for line in fr][:-50])
    with pytest.raises(Cp2kFormatError, match="expected 192 atom lines, found 142"):
        read_cp2k_run(tmp_path)


def test_element_order_differs_between_frames(tmp_path):
    pos = frames("pos", 4)
    o, h = pos[3][2].split(None, 1), pos[3][3].split(None, 1)
    pos[3][2], pos[3][3] = f"  H {o[1]}", f"  O {h[1]}"
    make_run(tmp_path, pos, frames("frc", 4))
    with pytest.raises(Cp2kFormatError, match=r"line 585, frame 3 \(step 15\).*atom 0 is 'H'"):
        read_cp2k_run(tmp_path)


def test_element_order_differs_between_files(tmp_path):
    frc = frames("frc", 4)
    for fr in frc:
        fr[2] = "  H" + fr[2].split("O", 1)[1]
    make_run(tmp_path, frames("pos", 4), frc)
    with pytest.raises(Cp2kFormatError, match="frc-1.xyz.*atom 0 is 'H'.*different runs"):
        read_cp2k_run(tmp_path)


def test_atom_count_differs(tmp_path):
    pos = frames("pos", 4)
    pos[2] = ["   191"] + pos[2][1:-1]
    make_run(tmp_path, pos, frames("frc", 4))
    with pytest.raises(Cp2kFormatError, match=r"line 389, frame 2 \(step 10\): 191 atoms"):
        read_cp2k_run(tmp_path)

    frc = [["   189"] + fr[1:-3] for fr in frames("frc", 4)]
    make_run(tmp_path, frames("pos", 4), frc)
    with pytest.raises(Cp2kFormatError, match="189 atoms, but .*pos-1.xyz has 192"):
        read_cp2k_run(tmp_path)


@pytest.mark.parametrize("bad, message", [("abc", "non-numeric value 'abc'"),
                                          ("NaN", "non-finite value 'NaN'"),
                                          ("-inf", "non-finite value '-inf'")])
def test_bad_number(tmp_path, bad, message):
    frc = frames("frc", 4)
    parts = frc[2][7].split()  # frame 2 (step 10), atom 5, file line 2*194 + 8
    frc[2][7] = f"  {parts[0]}  {parts[1]}  {bad}  {parts[3]}"
    make_run(tmp_path, frames("pos", 4), frc)
    with pytest.raises(Cp2kFormatError, match=rf"frc-1\.xyz, line 396, frame 2 \(step 10\): {message}"):
        read_cp2k_run(tmp_path)


def test_missing_forces(tmp_path):
    make_run(tmp_path, frames("pos", 3))
    with pytest.raises(Cp2kFormatError, match="no forces file"):
        read_cp2k_run(tmp_path)
    run = read_cp2k_run(tmp_path, require_forces=False)
    assert run.forces is None and run.n_frames == 3


def test_empty_file(tmp_path):
    make_run(tmp_path, frames("pos", 2), frames("frc", 2))
    (tmp_path / f"{XTB}-pos-1.xyz").write_text("")
    with pytest.raises(Cp2kFormatError, match="pos-1.xyz: the file is empty: no frames"):
        read_cp2k_run(tmp_path)


def test_comment_without_step(tmp_path):
    pos = frames("pos", 2)
    pos[1][1] = "written by some other program"
    make_run(tmp_path, pos, frames("frc", 2))
    with pytest.raises(Cp2kFormatError, match=r"line 196, frame 1: the comment line has no 'i = <step>'"):
        read_cp2k_run(tmp_path)


@pytest.mark.slow
def test_restarted_run_matched_by_step(tmp_path):
    # first run: steps 0..9 from real frames 0..9; the restart repeats steps 6..9 and goes
    # on to 14, from real frames 16..24 (so a repeated step holds different data).
    # The forces file skips steps 3 and 12, the velocities file skips 13.
    source = {s: s for s in range(10)}
    restart = {s: s + 10 for s in range(6, 15)}
    seq = list(source.items()) + list(restart.items())

    def build(role, skip):
        return [real_frame(role, k, step=s) for s, k in seq if s not in skip]

    make_run(tmp_path, build("pos", ()), build("frc", (3, 12)), build("vel", (13,)))
    with pytest.warns(UserWarning, match="not in"):
        run = read_cp2k_run(tmp_path)
    np.testing.assert_array_equal(run.steps, [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 14])
    truth = {**source, **restart}  # the last occurrence wins
    pos_all = read_cp2k_run(DATA / XTB)
    for i, s in enumerate(run.steps):
        k = truth[s]
        np.testing.assert_array_equal(run.positions[i], pos_all.positions[k])
        np.testing.assert_array_equal(run.forces[i], pos_all.forces[k])
        np.testing.assert_array_equal(run.velocities[i], pos_all.velocities[k])
    # step 8: written twice, the restart's copy (real frame 18) is kept
    i8 = int(np.flatnonzero(run.steps == 8)[0])
    np.testing.assert_array_equal(run.forces[i8], pos_all.forces[18])
    assert run.times_ps[i8] == pytest.approx(0.004)


def test_steps_never_match(tmp_path):
    frc = [real_frame("frc", k, step=1000 + k) for k in range(3)]
    make_run(tmp_path, frames("pos", 3), frc)
    with pytest.raises(Cp2kFormatError, match="no MD step is present in all"):
        read_cp2k_run(tmp_path)


def test_several_candidates(tmp_path):
    make_run(tmp_path, frames("pos", 3), frames("frc", 3))
    write(tmp_path / "other-pos-1.xyz", [line for fr in frames("pos", 2) for line in fr])
    run = read_cp2k_run(tmp_path)  # the input's PROJECT picks the right one
    assert run.n_frames == 3 and run.files["pos"].endswith(f"{XTB}-pos-1.xyz")
    (tmp_path / f"{XTB}.inp").unlink()
    with pytest.raises(Cp2kFormatError, match=f"several pos files .*other-pos-1.xyz.*{XTB}-pos-1.xyz"):
        read_cp2k_run(tmp_path)


def test_cell_file(tmp_path):
    make_run(tmp_path, frames("pos", 4), frames("frc", 4))
    head = "#   Step   Time [fs]       Ax [Angstrom]       Ay [Angstrom]       Az [Angstrom]" \
           "       Bx [Angstrom]       By [Angstrom]       Bz [Angstrom]       Cx [Angstrom]" \
           "       Cy [Angstrom]       Cz [Angstrom]      Volume [Angstrom^3]"
    rows = [f"{s:8d} {0.5 * s:12.3f} {L:.6f} 0 0 0 {L:.6f} 0 0 0 {L:.6f} {L**3:.3f}"
            for s, L in ((0, 12.4), (10, 12.5))]
    write(tmp_path / f"{XTB}-1.cell", [head] + rows)
    run = read_cp2k_run(tmp_path)
    np.testing.assert_allclose(run.box_nm[:, 0], [1.24, 1.24, 1.25, 1.25])
    write(tmp_path / f"{XTB}-1.cell", [head, rows[0].replace(" 0 0 0 ", " 0.5 0 0 ", 1)])
    with pytest.raises(Cp2kFormatError, match="not orthorhombic"):
        read_cp2k_run(tmp_path)


# ----------------------------------------------------------------------------- inputs


def edited_input(tmp_path, old, new):
    text = (DATA / XTB / f"{XTB}.inp").read_text()
    assert old in text
    path = tmp_path / "edited.inp"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize("cell", [
    "ABC 12.4138 12.4138 12.4138\n      ALPHA_BETA_GAMMA 90 90 100",
    "A 12.4138 0 0\n      B 1.0 12.4138 0\n      C 0 0 12.4138",
])
def test_non_orthorhombic_input(tmp_path, cell):
    path = edited_input(tmp_path, "ABC 12.4138 12.4138 12.4138", cell)
    with pytest.raises(Cp2kFormatError, match=r"edited.inp, line 4[67]: .*not orthorhombic.*unsupported"):
        read_cp2k_settings(path)
    make_run(tmp_path, frames("pos", 2), frames("frc", 2), inp=False)
    with pytest.raises(Cp2kFormatError, match="orthorhombic"):
        read_cp2k_run(tmp_path, inp=path)


@pytest.mark.parametrize("old, new, field, value", [
    ("ABC 12.4138 12.4138 12.4138", "ABC [nm] 1.3 1.3 1.3", "cell_nm", [1.3] * 3),
    ("ABC 12.4138 12.4138 12.4138", "A 12 0 0\n B 0 13 0\n C 0 0 14\n ALPHA_BETA_GAMMA 90 90 90",
     "cell_nm", [1.2, 1.3, 1.4]),
    ("TIMESTEP 0.5", "TIMESTEP [ps] 0.001", "timestep_ps", 0.001),
    ("TEMPERATURE 300", "TEMPERATURE [K] 350", "temperature_k", 350.0),
    ("    TIMESTEP 0.5\n", "", "timestep_ps", 0.0005),  # CP2K's default
])
def test_input_units_and_defaults(tmp_path, old, new, field, value):
    s = read_cp2k_settings(edited_input(tmp_path, old, new))
    np.testing.assert_allclose(getattr(s, field), value)


def test_kind_mass(tmp_path):
    # kinds named by element or not (ELEMENT), a name clashing with a keyword, a unit
    kinds = ("&KIND Hd\n ELEMENT H\n MASS [amu] 2.014\n &END KIND\n"
             "&KIND mass\n ELEMENT O\n MASS 17\n &END KIND\n")
    s = read_cp2k_settings(edited_input(tmp_path, "  &END SUBSYS", kinds + "  &END SUBSYS"))
    assert s.masses_amu == pytest.approx({"H": 2.014, "O": 17.0})
    s = read_cp2k_settings(edited_input(tmp_path, "  &END SUBSYS", "&KIND H1\n MASS 3\n &END KIND\n&END SUBSYS"))
    assert s.masses_amu == pytest.approx({"H": 3.0, "O": units.MASSES_AMU["O"]})


def test_invalid_input(tmp_path):
    path = edited_input(tmp_path, "TIMESTEP 0.5", "TIMESTEP fast")
    with pytest.raises(Cp2kFormatError, match="edited.inp, line 59: invalid value .*'fast'.*TIMESTEP fast"):
        read_cp2k_settings(path)


# ----------------------------------------------------------------------------- writing and running


@pytest.mark.parametrize("n", [1, 2, 4, 8, 27, 64])
def test_water_lattice(n):
    edge = water_box_edge_nm(n, 0.997)
    xyz = water_lattice(n, edge, seed=3)
    assert xyz.shape == (3 * n, 3)
    np.testing.assert_array_equal(xyz, water_lattice(n, edge, seed=3))
    mol = xyz.reshape(n, 3, 3)
    oh = np.linalg.norm(mol[:, 1:] - mol[:, :1], axis=-1)
    np.testing.assert_allclose(oh, 0.0957, atol=1e-9)
    v1, v2 = mol[:, 1] - mol[:, 0], mol[:, 2] - mol[:, 0]
    angle = np.degrees(np.arccos((v1 * v2).sum(-1) / (oh[:, 0] * oh[:, 1])))
    np.testing.assert_allclose(angle, 104.5, atol=1e-6)
    d = xyz[:, None] - xyz[None]
    d -= edge * np.rint(d / edge)
    dist = np.linalg.norm(d, axis=-1)
    other = np.repeat(np.arange(n), 3)
    assert dist[other[:, None] != other[None]].min() >= 0.17 if n > 1 else True
    np.testing.assert_array_equal(find_water_molecules(xyz, ["O", "H", "H"] * n, np.full(3, edge)),
                                  np.arange(3 * n).reshape(n, 3))


def test_box_edge_from_density():
    edge = water_box_edge_nm(64, 0.997)
    grams = 64 * 18.01528 / 6.02214076e23
    assert grams / (edge * 1e-7) ** 3 == pytest.approx(0.997, rel=1e-9)
    assert edge == pytest.approx(1.2430, abs=1e-4)


def test_write_xtb_input(tmp_path):
    inp = write_water_input(tmp_path, n_molecules=8, steps=20, seed=5, print_every=2, ensemble="NVT",
                            thermostat_region="global")
    s = read_cp2k_settings(inp)
    assert (s.method, s.ensemble, s.thermostat, s.steps) == ("QS/xTB", "NVT", "CSVR", 20)
    assert s.thermostat_region == "GLOBAL" and s.masses_amu == units.MASSES_AMU
    assert s.timestep_ps == pytest.approx(0.0005) and s.temperature_k == 300.0
    np.testing.assert_allclose(s.cell_nm, [water_box_edge_nm(8, 0.997)] * 3, atol=1e-6)
    tree = _parse_input(inp)
    ewald = tree["force_eval"]["dft"]["poisson"]["ewald"]
    assert ewald["ewald_type"] == "spme" and ewald["o_spline"] == 5
    assert ewald["alpha"] == pytest.approx(0.35)  # parsed back from [angstrom^-1]
    assert ewald["gmax"] % 2 == 1 and abs(ewald["gmax"] - 2 * 10 * s.cell_nm[0]) <= 1.5
    assert "ALPHA [angstrom^-1] 0.35" in inp.read_text()
    assert tree["force_eval"]["dft"]["qs"]["xtb"]["do_ewald"] is True
    assert tree["global"]["seed"] == 5
    assert tree["motion"]["md"]["thermostat"]["csvr"]["timecon"] == pytest.approx(50.0)
    assert tree["motion"]["print"]["forces"]["each"]["md"] == 2
    assert tree["motion"]["print"]["restart"]["each"]["md"] == 100
    coords = tree["force_eval"]["subsys"]["topology"]["coord_file_name"]
    lines = (tmp_path / coords).read_text().split("\n")
    assert lines[0] == "24" and [ln.split()[0] for ln in lines[2:5]] == ["O", "H", "H"]


@pytest.mark.parametrize("kwargs, ensemble, thermostat, region, gamma_ps, timecon, header", [
    ({}, "LANGEVIN", "LANGEVIN", None, 2.0, None, "LANGEVIN gamma 0.002/fs"),  # the default
    ({"langevin_gamma_per_fs": 0.01}, "LANGEVIN", "LANGEVIN", None, 10.0, None, "gamma 0.01/fs"),
    ({"ensemble": "nvt"}, "NVT", "CSVR", "MASSIVE", None, 100.0, "NVT CSVR MASSIVE 100 fs"),
    ({"ensemble": "NVT", "thermostat_region": "molecule", "thermostat_timecon_fs": 30},
     "NVT", "CSVR", "MOLECULE", None, 30.0, "NVT CSVR MOLECULE 30 fs"),
    ({"ensemble": "NVE"}, "NVE", None, None, None, None, "xtb, NVE, 300 K"),
])
def test_write_thermostats(tmp_path, kwargs, ensemble, thermostat, region, gamma_ps, timecon, header):
    inp = write_water_input(tmp_path, n_molecules=2, **kwargs)
    s = read_cp2k_settings(inp)
    assert (s.ensemble, s.thermostat, s.thermostat_region) == (ensemble, thermostat, region)
    assert s.langevin_gamma_per_ps == (None if gamma_ps is None else pytest.approx(gamma_ps))
    md = _parse_input(inp)["motion"]["md"]
    assert ("thermostat" in md) == (timecon is not None) and ("langevin" in md) == (gamma_ps is not None)
    if timecon is not None:
        assert md["thermostat"]["csvr"]["timecon"] == pytest.approx(timecon)
    assert header in inp.read_text().split("\n")[0]


@pytest.mark.parametrize("method", ["xtb", "dft"])
def test_write_hydrogen_mass(tmp_path, method):
    inp = write_water_input(tmp_path, n_molecules=2, method=method, hydrogen_mass_amu=2.0)
    s = read_cp2k_settings(inp)
    assert s.masses_amu == {"H": 2.0, "O": units.MASSES_AMU["O"]}
    kind_h = _parse_input(inp)["force_eval"]["subsys"]["kind"]["H"]
    assert kind_h["element"] == "H" and kind_h["mass"] == 2.0
    assert ("basis_set" in kind_h) == (method == "dft")  # merged into the DFT kind
    assert "H mass 2 amu" in inp.read_text().split("\n")[0]


def test_write_dft_input(tmp_path):
    inp = write_water_input(tmp_path, n_molecules=8, method="dft", ensemble="NVE", project="w8dft")
    assert inp.name == "w8dft.inp"
    s = read_cp2k_settings(inp)
    assert (s.project, s.method, s.ensemble, s.thermostat) == ("w8dft", "QS/DFT", "NVE", None)
    dft = _parse_input(inp)["force_eval"]["dft"]
    assert dft["xc"]["xc_functional"]["_"].upper() == "BLYP"
    assert dft["xc"]["vdw_potential"]["pair_potential"]["type"] == "dftd3"
    assert dft["mgrid"]["cutoff"] == pytest.approx(400)
    kinds = _parse_input(inp)["force_eval"]["subsys"]["kind"]
    assert kinds["O"]["basis_set"] == "DZVP-MOLOPT-SR-GTH" and kinds["O"]["potential"].startswith("GTH-BLYP")


def test_write_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="ensemble 'NPT_I': use one of 'LANGEVIN', 'NVT', 'NVE'"):
        write_water_input(tmp_path, ensemble="NPT_I")
    with pytest.raises(ValueError, match="method 'mp2': use one of 'xtb', 'dft'"):
        write_water_input(tmp_path, method="mp2")
    with pytest.raises(ValueError, match="region 'local': use one of 'MASSIVE', 'MOLECULE', 'GLOBAL'"):
        write_water_input(tmp_path, ensemble="NVT", thermostat_region="local")
    for bad in ({"langevin_gamma_per_fs": 0}, {"thermostat_timecon_fs": -1}, {"hydrogen_mass_amu": 0}):
        with pytest.raises(ValueError, match="must be positive"):
            write_water_input(tmp_path, **bad)
    with pytest.raises(ValueError, match="density"):
        write_water_input(tmp_path, n_molecules=8, density_g_cm3=5.0)


def test_run_cp2k_without_executable(tmp_path):
    inp = write_water_input(tmp_path, n_molecules=2, steps=1)
    with pytest.raises(Cp2kRunError, match="apt-get install cp2k"):
        run_cp2k(inp, executable="no-such-cp2k-binary")


@pytest.mark.slow
@pytest.mark.skipif(find_cp2k_executable() is None, reason="CP2K is not installed (apt-get install cp2k)")
def test_run_cp2k_xtb_nve(tmp_path):
    steps = 10
    inp = write_water_input(tmp_path, n_molecules=4, method="xtb", ensemble="NVE", steps=steps, seed=2)
    run = run_cp2k(inp, threads=1, timeout=300)  # 12 atoms: threads do not pay, and the CPU may be shared
    n = 12
    np.testing.assert_array_equal(run.steps, np.arange(steps + 1))
    assert run.positions.shape == run.forces.shape == run.velocities.shape == (steps + 1, n, 3)
    assert run.elements == ["O", "H", "H"] * 4
    assert run.settings.ensemble == "NVE" and run.settings.thermostat is None
    np.testing.assert_allclose(run.box_nm, np.tile(run.settings.cell_nm, (steps + 1, 1)))
    start = np.loadtxt(tmp_path / f"{run.project}-start.xyz", skiprows=2, usecols=(1, 2, 3))
    np.testing.assert_allclose(run.positions[0], start * units.ANGSTROM_NM, atol=1e-9)
    e = run.energies
    assert e["temperature"][0] == pytest.approx(300.0, abs=1e-6)  # CP2K scales to TEMPERATURE
    assert np.abs(run.forces).max() > 100.0  # real forces, kJ/mol/nm
    # NVE: the conserved quantity stays put (measured here: 2e-5 Ha per atom, the 0.5 fs
    # integration error; a broken setup, e.g. unconverged Ewald, moves it far more)
    drift_ha = np.ptp(e["conserved"]) / units.HARTREE_KJMOL
    assert drift_ha / n < 5e-5, f"conserved quantity moved {drift_ha:.2e} Ha over {steps} steps"
    assert run.seconds_per_step() > 0


@pytest.mark.slow
@pytest.mark.skipif(find_cp2k_executable() is None, reason="CP2K is not installed (apt-get install cp2k)")
def test_run_cp2k_xtb_langevin_heavy_hydrogen(tmp_path):
    steps = 4
    inp = write_water_input(tmp_path, n_molecules=8, steps=steps, seed=3, hydrogen_mass_amu=2.0)
    run = run_cp2k(inp, threads=1, timeout=300)
    s = run.settings
    assert (s.ensemble, s.thermostat) == ("LANGEVIN", "LANGEVIN")
    assert s.langevin_gamma_per_ps == pytest.approx(2.0) and s.masses_amu["H"] == 2.0
    np.testing.assert_array_equal(run.steps, np.arange(steps + 1))
    # CP2K used the masses read back: its kinetic energy is 1/2 m v^2 with them
    m = np.array([s.masses_amu[e] for e in run.elements])[None, :, None]
    kinetic = 0.5 * (m * run.velocities**2).sum(axis=(1, 2))
    np.testing.assert_allclose(kinetic, run.energies["kinetic"], rtol=1e-6)


@pytest.mark.skipif(find_cp2k_executable() is None, reason="CP2K is not installed (apt-get install cp2k)")
def test_run_cp2k_failure_reports_output(tmp_path):
    inp = write_water_input(tmp_path, n_molecules=2, steps=1, project="broken")
    (tmp_path / "broken-start.xyz").unlink()  # CP2K aborts: no coordinates
    with pytest.raises(Cp2kRunError, match=r"CP2K failed on .*broken.inp(.|\n)*broken.out"):
        run_cp2k(inp, threads=1, timeout=120)
