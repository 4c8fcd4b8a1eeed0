"""The validation suite end to end on the bundled GFN1-xTB run: fit on one segment, score
on another, short real OpenMM runs of both learned modes and of SPC/Fw, every metric on
both sides, the HTML report, caching, and a planted bad model that must fail the gate."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import openmm as mm
import pytest
from openmm import unit

from openmm_learning.io.water_run import example_run_dir
from openmm_learning.losses.fit import FitSettings, learning_curve
from openmm_learning.losses.model import LossModel
from openmm_learning.losses.channels import Channel
from openmm_learning.openmm.spcfw import spcfw_system
from openmm_learning.validation.metrics import METRICS
from openmm_learning.pipeline.plan import ValidationPlan
from openmm_learning.pipeline.runs import RunJob, run_dynamics
from openmm_learning.pipeline.stages import parse_steps
from openmm_learning.pipeline.validate import run_validation
from openmm_learning.validation.agents import channel_sensitivity

ROWS = ("learned agent", "learned reciprocal", "SPC/Fw")
REPORTED_ONLY = {"thermostat.heat_per_ps", "forces.net_force"}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Fit on steps 0-2000 of the 1.55 ps xTB run; per row three runs of 0.5 ps Langevin then
    0.6 ps of learning dynamics. Agent mode is fitted free (the paper's fit): the planted
    model that must fail equipartition."""
    out = tmp_path_factory.mktemp("suite")
    kw = dict(plan=ValidationPlan(train_steps="0:2000", ps=0.6, seeds=3, langevin_ps=0.5, velocity_ps=0.25,
                                  report_interval=20, learning_curve_sizes=[10, 40], sensitivity_frames=5),
              progress=False, fit_settings=FitSettings(agent_asymmetry="free"))
    res = run_validation(example_run_dir(), out, **kw)
    return res, out, kw


def test_spcfw_system_reproduces_cp2k_spcfw(spcfw):
    """The baseline's OpenMM System against CP2K's own SPC/Fw forces on its frames."""
    run, water = spcfw
    ctx = mm.Context(spcfw_system(64, run.box_nm[0]), mm.VerletIntegrator(0.0005),
                     mm.Platform.getPlatformByName("Reference"))
    for f in (0, 120, 250):
        ctx.setPositions(run.positions[f])
        force = ctx.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer)
        rel = np.sqrt(np.mean((force - run.forces[f]) ** 2) / np.mean(run.forces[f] ** 2))
        assert rel < 2e-3, (f, rel)  # PME against CP2K's SPME: what is left is Ewald accuracy


def test_learning_curve_on_xtb(xtb):
    run, water = xtb
    idx = np.arange(0, run.n_frames, 2)
    lc = learning_curve(run.positions[idx], run.forces[idx], run.box_nm[idx], water, [5, 20, 60],
                        modes=("agent",), settings=FitSettings(), progress=False)
    assert lc["n_frames"] == [5, 20, 60] and lc["test_frames"][1] == len(idx) - 1
    o, h = lc["errors"]["agent"]["O"]["rmse"], lc["errors"]["agent"]["H"]["rmse"]
    assert all(80 < x < 250 for x in o) and all(40 < x < 120 for x in h)
    assert o[-1] < o[0] and h[-1] <= h[0] * 1.01  # more frames never hurt much
    assert lc["errors"]["agent"]["O"]["relative_rmse"][-1] < 0.2


def test_channel_sensitivity(xtb, xtb_models):
    run, water = xtb
    model = xtb_models["agent"]
    s = channel_sensitivity(model, run.positions[::200], run.box_nm[::200], water)
    for agent in ("O", "H"):
        a = s["agents"][agent]
        assert len(a["channels"]) == (4 if agent == "O" else 5)
        assert 300 < a["total_rms"] < 1500 and a["walls_rms"] == 0.0  # CP2K frames stay inside the grids
        assert all(c["rms"] > 10 for c in a["channels"])
        # Own-molecule terms (bond, angle) drive the force more than the other molecules do.
        assert a["own_molecule_relative"] > a["other_molecules_relative"] > 0.2
    # A model with one non-zero channel: that channel is the whole force.
    only = LossModel("agent", [Channel(c.agent, c.neighbour, c.kind, c.x0, c.h,
                                       c.values if c.key == ("O", "O", "inter") else 0 * c.values)
                               for c in model.channels], model.r_cut, model.r_switch, model.k_wall)
    one = channel_sensitivity(only, run.positions[:2], run.box_nm[:2], water)["agents"]["O"]["channels"]
    assert one[0]["relative"] == pytest.approx(1.0) and all(c["rms"] == 0 for c in one[1:])


def test_every_metric_on_both_sides(suite):
    res, out, _ = suite
    assert set(res.rows_passed) == set(ROWS)
    for row in ROWS:
        recs = {m["metric"]: m for m in res.metrics if m["row"] == row}
        assert set(recs) == set(METRICS) and all(m["seeds"] == 3 for m in recs.values())
        for key, m in recs.items():
            assert not m["note"].startswith(("no velocities", "not recorded", "no temperature", "no kinetic",
                                             "no seconds")), m  # nothing missing
            if key in REPORTED_ONLY:
                assert np.isfinite(m["row_value"]) and m["outcome"] == "reported"
            elif m["outcome"] == "n/a":
                # what the data cannot measure, and only that: xTB's O...H peak is a shoulder,
                # 0.6 ps runs and 0.8 ps of CP2K give no diffusion coefficient, and the CP2K
                # run is out of equipartition (no target for the kinetic temperatures)
                assert (key.startswith("rdf_OH.") and "absent in row and reference" in m["note"]) or \
                    (key == "diffusion.log_ratio" and "too short" in m["note"]) or \
                    (key.startswith("kinetic_vs_reference.") and "out of equipartition" in m["note"]) or \
                    (key == "vacf.libration_band" and "absent" in m["note"]), m
            elif key.startswith("rdf_OH.") and key != "rdf_OH.integrated_abs_diff":
                # the O...H peak on the row's side only: SPC/Fw's is clear and fails; a learned
                # row's 0.6 ps runs can lift xTB's shoulder over the presence threshold by
                # chance, which is inconclusive unless it stands clear of the noise
                assert np.isnan(m["reference_value"]) and "peak prominence" in m["note"], (row, m)
                assert m["outcome"] == "fail" if row == "SPC/Fw" else m["outcome"] in ("fail", "inconclusive"), (row, m)
            elif key == "vacf.libration_band" and np.isnan(m["row_value"]) != np.isnan(m["reference_value"]):
                # a broad band whose maximum may sit on its window's edge in 0.6 ps of one
                # side (the hot free agents): a band on one side only is a failure, said so
                assert m["outcome"] == "fail" and "absent in" in m["note"], m
            elif "row_value" in m and m["row_value"] is not None:
                assert np.isfinite(m["row_value"]) and np.isfinite(m["reference_value"]), m
            else:
                assert np.isfinite(m["value"]), m
    # The planted equipartition failure: agent mode as fitted (free asymmetric channels)
    # runs its O atoms 110-170 K hot within 0.6 ps of 3 runs and its H atoms 170-200 K
    # colder than O (the agents' heat outruns CSVR, so where H sits against the target
    # varies from run to run: 13-60 K cold measured); the conservative reciprocal mode
    # after the same start keeps them within 25 K of each other.
    o = res.metric("learned agent", "kinetic_vs_target.O")
    assert o["outcome"] == "fail" and o["value"] > 50, o
    assert o["row_value"] - res.metric("learned agent", "kinetic_vs_target.H")["row_value"] > 120
    assert res.verdicts["learned agent"] == "FAIL"
    ro, rh = (res.metric("learned reciprocal", f"kinetic_vs_target.{k}")["row_value"] for k in "OH")
    assert abs(ro - rh) < 60
    eq = res.equipartition["CP2K reference"]
    assert eq["translation"]["outcome"] == "fail" and eq["vibration"]["value"] < 230
    # The spectra: CP2K's vel file against the OpenMM velocity recordings.
    for row in ROWS:
        m = res.metric(row, "vacf.stretch_band")
        assert 3500 < m["reference_value"] < 3700 and 3300 < m["row_value"] < 3800
    # Agent mode: non-reciprocal forces, the thermostat removes what they pump in. The
    # reciprocal model's custom forces sum to zero exactly; what is left is PME's momentum
    # error at OpenMM's default tolerance: 0.4 kJ/mol/nm on these frames at a 0.6 nm
    # real-space cutoff, 1.4 at the default 0.5 nm (the grid carries more of the sum)
    agent, recip = res.metric("learned agent", "forces.net_force"), res.metric("learned reciprocal", "forces.net_force")
    assert agent["row_value"] > 100 and recip["row_value"] < 3.0 and agent["reference_value"] < 1.0
    assert res.metric("learned agent", "thermostat.heat_per_ps")["row_value"] > 500
    # SPC/Fw is a different water: longer O-H bonds, O-O peak 0.015 nm closer than xTB's.
    assert res.metric("SPC/Fw", "bond_length.mean")["value"] == pytest.approx(0.006, abs=0.001)
    assert res.metric("SPC/Fw", "rdf_OO.first_peak_position")["outcome"] == "fail"
    for row in ROWS[:2]:
        assert res.metric(row, "rdf_OO.integrated_abs_diff")["beats_baseline"]
        assert res.metric(row, "bond_length.mean")["outcome"] == "pass"
        assert res.metric(row, "cost.speedup")["value"] > 50
    assert res.passed == all(res.rows_passed[r] for r in ROWS[:2])  # the baseline does not count


def test_held_out_segment_and_report(suite):
    res, out, _ = suite
    agents = json.loads((out / "agents" / "agents.json").read_text())
    for name in ROWS[:2]:
        seg = agents[name]["held_out_segment"]
        assert seg["steps"][0] > 2000 and seg["n_frames"] > 50
        assert 80 < seg["O"]["rmse"] < 150 and 0.05 < seg["H"]["relative_rmse"] < 0.2
        assert agents[name]["train_steps"][1] < 2000
    page = res.html_path.read_text()
    assert page.count("data:image/png;base64,") == 12 and "src='http" not in page
    for text in ("CP2K reference", "SPC/Fw", "Learning curve", "what drives the O and the H forces",
                 "Wu, Tepper &amp; Voth", "sha256", "reference equilibration cut",
                 "r_cut 0.5 nm, functions: Chebyshev series"):  # which form of the model ran
        assert text in page, text
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert [r[0] for r in summary["rows"]] == ["CP2K reference", *ROWS]
    assert "## Summary" in res.report_path.read_text()


def test_rerun_uses_the_cache(suite):
    res, out, kw = suite
    stamps = {p: p.stat().st_mtime_ns for p in (out / "fit" / "agent.json",
                                                out / "sim-agent" / "seed-1" / "trajectory.dcd",
                                                out / "sim-spcfw" / "seed-0" / "velocities.npy",
                                                out / "learning-curve" / "learning_curve.json",
                                                out / "agents" / "agents.json")}
    again = run_validation(example_run_dir(), out, **kw)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    first = res.metric("learned agent", "rdf_OO.integrated_abs_diff")["value"]
    assert again.metric("learned agent", "rdf_OO.integrated_abs_diff")["value"] == first


def test_planted_bad_model_fails_the_gate(suite, tmp_path):
    """A model whose molecules ignore each other (no intermolecular loss): the liquid
    falls apart, its g_OO is visibly wrong, and `validate` exits 1."""
    _, out, _ = suite
    good = LossModel.load(out / "fit" / "reciprocal.json")
    bad = LossModel("reciprocal", [dataclasses.replace(c, values=0 * c.values if c.kind == "inter" else c.values)
                                   for c in good.channels], good.r_cut, good.r_switch, good.k_wall)
    bad.save(tmp_path / "bad.json")
    r = subprocess.run([sys.executable, "-m", "openmm_learning", "validate", "--reference", example_run_dir(),
                        "--model", tmp_path / "bad.json", "--ps", "0.5", "--seeds", "3", "--langevin-ps", "0.1",
                        "--no-baseline", "--velocity-ps", "0", "--out", tmp_path / "val"],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("validation FAIL") and "rdf_OO.integrated_abs_diff" in r.stdout
    data = json.loads((tmp_path / "val" / "metrics.json").read_text())
    m = next(m for m in data["metrics"] if m["metric"] == "rdf_OO.integrated_abs_diff")
    assert m["outcome"] == "fail" and m["value"] > 2 * m["threshold"], m
    assert data["passed"] is False and data["rows_passed"] == {"learned reciprocal": False}


def test_train_steps_parsing():
    assert parse_steps("1500:3000") == (1500, 3000)
    assert parse_steps(":2000") == (None, 2000) and parse_steps("1500:") == (1500, None)
    with pytest.raises(ValueError, match="A:B"):
        parse_steps("1500-3000")
    with pytest.raises(ValueError, match="after the start"):
        parse_steps("3000:1500")


def test_known_truth_passes_against_the_long_fist_run(spcfw, tmp_path):
    """The reciprocal fit of CP2K's SPC/Fw, run in OpenMM, against that FIST run (20 ps
    after its cut): nothing fails, and the structure is resolved and passes. FIST itself
    sits out of equipartition (internal vibration ~255 K under its global CSVR), so the
    kinetic temperatures are judged against the target, not against it."""
    from openmm_learning.losses.fit import fit_modes

    run, system = spcfw
    model = fit_modes(run.positions[::2], run.forces[::2], run.box_nm[::2], system, ("reciprocal",),
                      FitSettings(), progress=False)["reciprocal"].model
    model.save(tmp_path / "fist-reciprocal.json")
    res = run_validation(example_run_dir("water64-spcfw-300K"), tmp_path / "val",
                         models={"learned reciprocal": tmp_path / "fist-reciprocal.json"},
                         plan=ValidationPlan(ps=2.0, seeds=3, langevin_ps=1.0, velocity_ps=0, report_interval=20,
                                             baseline=False, sensitivity_frames=3), progress=False)
    # nothing fails but, possibly, the cost: with point charges (PME) the learned model costs
    # about what CP2K's FIST costs for SPC/Fw itself (the speed-up is against ab initio runs)
    assert {m["metric"] for m in res.failed()} <= {"cost.speedup"}, res.failed()
    for key in ("rdf_OO.integrated_abs_diff", "rdf_OH.integrated_abs_diff", "rdf_HH.integrated_abs_diff",
                "rdf_OH.first_peak_position", "bond_length.mean", "hoh_angle.mean"):
        assert res.metric("learned reciprocal", key)["outcome"] == "pass", res.metric("learned reciprocal", key)
    # the O-O peak position to within a bin (0.005 nm); 3 x 2 ps do not always resolve its 0.002 nm threshold
    oo = res.metric("learned reciprocal", "rdf_OO.first_peak_position")
    assert oo["outcome"] in ("pass", "inconclusive") and oo["interval"][1] < 0.005, oo
    # OpenMM's exact SPC/Fw counts 0.13 more hydrogen bonds per molecule than the FIST run too
    # (an earlier 20 ps known-truth study: learned 0.11-0.14, exact 0.13), so 3 x 2 ps
    # put this difference's interval across the 0.3 threshold in some runs: pass or inconclusive
    hb = res.metric("learned reciprocal", "hbonds.per_molecule")
    assert hb["outcome"] in ("pass", "inconclusive") and abs(hb["value"]) < 0.25, hb
    assert res.metric("learned reciprocal", "cost.speedup")["reference_value"] < 0.01  # FIST: s per step
    assert res.equipartition["CP2K reference"]["vibration"]["outcome"] == "fail"
    assert res.metric("learned reciprocal", "kinetic_vs_reference.vibration")["outcome"] == "n/a"


def test_runs_go_side_by_side_in_fresh_processes(tmp_path):
    """Two workers: each run in an interpreter of its own with its share of the cores as
    OpenMM threads, its files as a run here writes them; a worker that fails stops the
    suite with its error (planted: a model file that does not exist)."""
    reference = dict(path=example_run_dir("water64-spcfw-langevin-300K"))
    dynamics = ValidationPlan(ps=0.15, platform="CPU", report_interval=20, first_seed=1, langevin_ps=0.03,
                              velocity_ps=0, velocity_interval=5)
    jobs = [RunJob("SPC/Fw", None, str(tmp_path / f"seed-{k}"), k, frame) for k, frame in enumerate((-1, -300))]
    assert run_dynamics(jobs, reference, dynamics, workers=2, progress=False) == 2
    for k in range(2):
        summary = json.loads((tmp_path / f"seed-{k}" / "summary.json").read_text())
        assert summary["threads"] == max(1, os.cpu_count() // 2) and summary["steps"] == 100, summary
        assert summary["seed"] == 1 + k and (tmp_path / f"seed-{k}" / "trajectory.dcd").stat().st_size > 0
    missing = [RunJob("broken", str(tmp_path / "no-such-model.json"), str(tmp_path / f"bad-{k}"), k, -1)
               for k in range(2)]
    with pytest.raises(RuntimeError, match="no-such-model"):
        run_dynamics(missing, reference, dynamics, workers=2, progress=False)
