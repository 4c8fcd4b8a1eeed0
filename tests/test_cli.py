"""The command line, end to end on the bundled example (short), and its error messages."""

import json
import subprocess
import sys

import pytest

from openmm_learning.io.water_run import example_run_dir
from openmm_learning.losses.model import LossModel


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "openmm_learning", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_fit_simulate_validate(tmp_path):
    run = example_run_dir("water64-xtb-300K")
    r = cli("fit", run, "--out", tmp_path / "fit")
    assert r.returncode == 0, r.stderr
    assert "agent" in r.stdout and "reciprocal" in r.stdout
    for name in ("agent.json", "reciprocal.json", "parity.png", "channels.png", "fit.json"):
        assert (tmp_path / "fit" / name).stat().st_size > 0
    # the CSVR run's frames are out of equipartition (internal vibration cold): fit says so
    assert "out of equipartition" in r.stderr and "vibration" in r.stderr, r.stderr
    model = LossModel.load(tmp_path / "fit" / "agent.json")
    assert model.provenance["cp2k_project"] == "water64-xtb-300K"
    assert model.provenance["training_kinetic_K"]["vibration"] < 250
    assert len(model.provenance["cp2k_files"]["pos"]["sha256"]) == 64
    assert json.loads((tmp_path / "fit" / "fit.json").read_text())["agent"]["O"]["rmse"] > 0

    r = cli("simulate", tmp_path / "fit" / "reciprocal.json", "--cp2k", run, "--out", tmp_path / "sim",
            "--ps", 0.5, "--langevin-ps", 0.2)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert summary["steps"] == 1000 and summary["timestep_ps"] == 0.0005 and summary["equilibration_ps"] == 0.2
    assert 250 < summary["mean_temperature"] < 350

    r = cli("validate", "--reference", run, "--simulation", f"learned={tmp_path / 'sim'}",
            "--out", tmp_path / "val", "--row-equilibration-ps", 0.1)
    verdict = r.stdout.strip().splitlines()[-1].split()[1]  # the last line: "validation VERDICT ..."
    assert r.returncode == {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}[verdict], (r.stdout, r.stderr)
    report = (tmp_path / "val" / "report.md").read_text()
    assert "learned" in report and "rdf_OO.first_peak_height" in report
    assert f"**Overall: {verdict}" in report


@pytest.mark.parametrize("args, message", [
    (("fit", "no-such-run", "--out", "x"), "no-such-run"),
    (("simulate", "missing.json", "--cp2k", "no-such-run", "--out", "x"), "missing.json"),
])
def test_errors_are_one_clear_line(tmp_path, args, message):
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert "error:" in r.stderr and message in r.stderr
    assert "Traceback" not in r.stderr


def test_small_box_runs_end_to_end(tmp_path):
    """A 27-water CP2K run (box under twice the cutoff) is fitted and simulated in OpenMM
    as its 2x2x2 periodic replica, said once on the way and in the outputs; validate runs
    its rows in LAMMPS in the 27-water cell itself (the reference's system, under its
    Langevin friction), analysed as the replica like the reference, and says so."""
    run = example_run_dir("water27-xtb-300K")
    r = cli("fit", run, "--out", tmp_path / "fit", "--modes", "reciprocal")  # one mode: half the cost
    assert r.returncode == 0, r.stderr
    assert "2x2x2 periodic replica (216 molecules)" in r.stderr
    assert LossModel.load(tmp_path / "fit" / "reciprocal.json").provenance["replica"] == 2
    r = cli("simulate", tmp_path / "fit" / "reciprocal.json", "--cp2k", run, "--out", tmp_path / "sim",
            "--ps", 0.05, "--langevin-ps", 0.02)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "sim" / "summary.json").read_text())["replica"] == 2
    model = tmp_path / "fit" / "reciprocal.json"
    # too short to judge: said before anything runs, in one line
    r = cli("validate", "--reference", run, "--model", model, "--out", tmp_path / "short", "--ps", 0.1, "--seeds", 1)
    assert r.returncode == 2 and "run longer or more seeds" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "short" / "sim-reciprocal").exists()
    # seeds 1-2: the second run blew up within 0.2 ps while the angle's walls were too stiff
    # for Verlet at 0.5 fs (test_simulate.py's bend test); it runs through now
    r = cli("validate", "--reference", run, "--model", model, "--out", tmp_path / "val", "--seed", 1,
            "--ps", 0.2, "--seeds", 2, "--langevin-ps", 0.02, "--velocity-ps", 0.05, "--no-baseline")
    assert r.returncode in (0, 1, 3), r.stderr  # a verdict (PASS, FAIL, INCONCLUSIVE), not bad input (2)
    assert "Traceback" not in r.stderr
    report = (tmp_path / "val" / "report.md").read_text()
    assert "2x2x2 periodic replica of the CP2K cell" in report
    assert "the CP2K cell itself, 0.9322 x 0.9322 x 0.9322 nm, 27 molecules, in LAMMPS" in report
    summary = json.loads((tmp_path / "val" / "sim-reciprocal" / "seed-0" / "summary.json").read_text())
    assert summary["engine"] == "LAMMPS" and summary["temperature_atoms"] == 81
    assert summary["thermostat"] == "langevin" and summary["friction_per_ps"] == pytest.approx(10.0)
    metrics = json.loads((tmp_path / "val" / "metrics.json").read_text())
    # the same 81 atoms in row and reference: their temperature fluctuations compare
    std = [m for m in metrics["metrics"] if m["metric"] == "temperature.std"]
    assert std and all("1/sqrt(atoms)" not in m.get("note", "") for m in std)
    kinetic = [m for m in metrics["metrics"] if m["metric"].startswith("kinetic_vs_target.")]
    assert len(kinetic) == 5 and all(m["outcome"] != "n/a" for m in kinetic)
    assert [m["value"] for m in metrics["metrics"] if m["metric"] == "stability.blow_ups"] == [0]
