"""Every command, given each kind of bad input, stops with one line on stderr that names
what is wrong, and exit code 2 (1 is kept for a failed validation metric); no traceback."""

import os
import shutil

import pytest

from openmm_learning.cli import main
from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.losses.fit import chebyshev_model

JUNK = bytes(range(256)) * 8


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, xtb_models):
    """Bad inputs beside good ones: a damaged CP2K run, junk and wrong model files, a file
    where an output folder should go, and a good model."""
    root = tmp_path_factory.mktemp("bad")
    xtb_models["reciprocal"].save(root / "good.json")
    run, system = load_water_run(good_run := example_run_dir("water64-xtb-300K"))
    chebyshev_model(xtb_models["reciprocal"], run.positions[::20], run.box_nm[::20], system).save(
        root / "compiled.json")
    good = good_run
    damaged = root / "damaged-run"
    shutil.copytree(good, damaged)
    (damaged / "water64-xtb-300K-pos-1.xyz.xz").write_bytes(JUNK)
    no_input = root / "no-input-run"
    shutil.copytree(good, no_input)
    os.remove(no_input / "water64-xtb-300K.inp")
    (root / "junk.json").write_bytes(JUNK)
    (root / "list.json").write_text("[1, 2, 3]")
    (root / "wrong.json").write_text('{"format": "openmm-learning-model", "schema_version": 1, "mode": "agent", '
                                     '"species": ["O", "H"], "units": {"length": "nm", "energy": "kJ/mol"}, '
                                     '"channels": [{"values": "abc"}]}')
    (root / "a-file").write_text("not a folder")
    (root / "thresholds.json").write_text("{not json")
    (root / "junk.inp").write_bytes(JUNK)
    return root, good


CASES = {
    "fit, no such run": ("fit", "{root}/missing", "--out", "{root}/o1"),
    "fit, damaged positions": ("fit", "{root}/damaged-run", "--out", "{root}/o2"),
    "fit, output over a file": ("fit", "{good}", "--out", "{root}/a-file"),
    "simulate, binary junk model": ("simulate", "{root}/junk.json", "--cp2k", "{good}", "--out", "{root}/o3"),
    "simulate, JSON that is not a model": ("simulate", "{root}/list.json", "--cp2k", "{good}", "--out", "{root}/o4"),
    "simulate, model with wrong fields": ("simulate", "{root}/wrong.json", "--cp2k", "{good}", "--out", "{root}/o5"),
    "simulate, run without its input file": ("simulate", "{root}/good.json", "--cp2k", "{root}/no-input-run",
                                             "--out", "{root}/o6"),
    "simulate, output over a file": ("simulate", "{root}/good.json", "--cp2k", "{good}", "--out", "{root}/a-file"),
    "validate, no such reference": ("validate", "--reference", "{root}/missing", "--out", "{root}/o7"),
    "validate, bad --train-steps": ("validate", "--reference", "{good}", "--train-steps", "9:3", "--out",
                                    "{root}/o8"),
    "validate, thresholds not JSON": ("validate", "--reference", "{good}", "--thresholds", "{root}/thresholds.json",
                                      "--out", "{root}/o9"),
    "validate, junk model": ("validate", "--reference", "{good}", "--model", "{root}/junk.json", "--out",
                             "{root}/o10"),
    "lammps, junk model": ("lammps", "{root}/junk.json", "--cp2k", "{good}", "--out", "{root}/o11"),
    "lammps, no such run": ("lammps", "{root}/good.json", "--cp2k", "{root}/missing", "--out", "{root}/o12"),
    "lammps, pair_style python of a compiled model": ("lammps", "{root}/compiled.json", "--cp2k", "{good}", "--pair",
                                                      "python", "--out", "{root}/o14"),
    "evaluate, bad --frames": ("evaluate", "{root}/good.json", "{good}", "--frames", "1:x", "--out", "{root}/o15"),
    "evaluate, no frames in the range": ("evaluate", "{root}/good.json", "{good}", "--frames", "5000:", "--out",
                                         "{root}/o16"),
    "evaluate, junk committee member": ("evaluate", "{root}/good.json", "{good}", "--committee", "{root}/junk.json",
                                        "{root}/good.json", "--out", "{root}/o17"),
    "simulate, frame beyond the run": ("simulate", "{root}/good.json", "--cp2k", "{good}", "--frame", "5000",
                                       "--out", "{root}/o18"),
    "simulate, negative --ps": ("simulate", "{root}/good.json", "--cp2k", "{good}", "--ps", "-1", "--out",
                                "{root}/o19"),
    "validate, output over a file": ("validate", "--reference", "{good}", "--out", "{root}/a-file"),
    "validate, no seeds": ("validate", "--reference", "{good}", "--seeds", "0", "--out", "{root}/o20"),
    "evaluate, output over a file": ("evaluate", "{root}/good.json", "{good}", "--out", "{root}/a-file"),
    "iterate, no such run": ("iterate", "{root}/missing", "--out", "{root}/o21"),
    "iterate, output over a file": ("iterate", "{good}", "--out", "{root}/a-file"),
    "iterate, negative temperature": ("iterate", "{good}", "--temperatures", "-5", "--out", "{root}/o22"),
    "iterate, no points": ("iterate", "{good}", "--points", "0", "--out", "{root}/o23"),
    "iterate, --ps not a number": ("iterate", "{good}", "--ps", "nan", "--out", "{root}/o24"),
    "lammps, frame beyond the run": ("lammps", "{root}/good.json", "--cp2k", "{good}", "--frame", "-5000", "--out",
                                     "{root}/o25"),
    "cp2k write over a file": ("cp2k", "write", "{root}/a-file/inputs", "--molecules", "8"),
    "cp2k write of no molecules": ("cp2k", "write", "{root}/o26", "--molecules", "0"),
    "cp2k run of junk": ("cp2k", "run", "{root}/junk.inp"),
    "fit, asymmetry range beyond the switch": ("fit", "{good}", "--asymmetry-range", "0.55", "--out", "{root}/o27"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_and_exit_2(inputs, capsys, case):
    root, good = inputs
    args = [a.format(root=root, good=good) for a in CASES[case]]
    try:
        code = main(args)
    except SystemExit as e:  # argparse's checks of the arguments, before any work
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (case, err)
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    assert len(errors[0]) > len("openmm-learning x: error: ") + 10, errors[0]


def test_unforeseen_error_is_one_line_with_its_origin(monkeypatch, capsys, inputs):
    """An error no check foresaw (here a bug planted in the fit) is one line with where it came from."""
    import openmm_learning.pipeline.fit as fit

    def broken(*args, **kwargs):
        return {}["planted"]

    monkeypatch.setattr(fit, "fit_run", broken)
    root, good = inputs
    assert main(["fit", str(good), "--out", str(root / "o13")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "KeyError" in err[0] and "test_failures.py" not in err[0], err
