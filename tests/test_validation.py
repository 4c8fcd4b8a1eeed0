"""validation.validate on the bundled CP2K runs: same-model halves pass, planted bad
liquids fail, and the report, plots and metrics.json are written."""

import json
from functools import lru_cache
from importlib.resources import files

import mdtraj
import numpy as np
import pytest

from openmm_learning import analysis, validation
from openmm_learning.cp2k import read_cp2k_run
from openmm_learning.topology import mdtraj_topology
from openmm_learning.units import MASSES_AMU
from openmm_learning.validation import METRICS, Row, load_thresholds, validate

DATA = files("openmm_learning") / "data" / "cp2k"
PLOTS = ["rdf_OO.png", "rdf_OH.png", "rdf_HH.png", "bond_length.png", "hoh_angle.png", "temperature.png"]
UNJUDGED_SPCFW = {"vacf.libration_band", "vacf.bend_band", "vacf.stretch_band", "thermostat.heat_per_ps",
                  "forces.net_force"}


@lru_cache(maxsize=None)
def load(name):
    """(whole trajectory, temperature per frame from velocities, Cp2kRun)."""
    d = DATA / name
    run = read_cp2k_run(pos=d / f"{name}-pos-1.xyz.xz", vel=d / f"{name}-vel-1.xyz.xz",
                        ener=d / f"{name}-1.ener.xz", inp=d / f"{name}.inp", require_forces=False)
    n = run.n_frames
    traj = mdtraj.Trajectory(run.positions, mdtraj_topology(run.n_atoms // 3), time=run.times_ps,
                             unitcell_lengths=run.box_nm, unitcell_angles=np.full((n, 3), 90.0))
    temp = analysis.temperature(run.velocities, np.array([MASSES_AMU[e] for e in run.elements]))
    return traj, temp, run


def spread_liquid(traj, factor):
    """Each molecule moved rigidly so its centre of mass scales by factor (box too): a wrongly spaced liquid."""
    x = traj.xyz.reshape(traj.n_frames, -1, 3, 3).astype(np.float64)
    m = np.array([MASSES_AMU["O"], MASSES_AMU["H"], MASSES_AMU["H"]])[None, None, :, None]
    com = (x * m).sum(axis=2, keepdims=True) / m.sum()
    x += (factor - 1.0) * com
    return mdtraj.Trajectory(x.reshape(traj.n_frames, -1, 3), traj.topology, time=traj.time,
                             unitcell_lengths=traj.unitcell_lengths * factor, unitcell_angles=traj.unitcell_angles)


def random_gas(traj, seed=0):
    """The same molecules at random places in every frame: no liquid structure at all."""
    rng = np.random.default_rng(seed)
    x = traj.xyz.reshape(traj.n_frames, -1, 3, 3).astype(np.float64)
    centres = rng.random((traj.n_frames, x.shape[1], 1, 3)) * traj.unitcell_lengths[:, None, None, :]
    x = x - x[:, :, :1] + centres
    return mdtraj.Trajectory(x.reshape(traj.n_frames, -1, 3), traj.topology, time=traj.time,
                             unitcell_lengths=traj.unitcell_lengths, unitcell_angles=traj.unitcell_angles)


@pytest.fixture(scope="module")
def spcfw_result(tmp_path_factory):
    """SPC/Fw: first half (5-15 ps) as the reference; its second half, a spread liquid and a gas as rows."""
    traj, temp, run = load("water64-spcfw-300K")
    keep = np.flatnonzero(traj.time >= 5.0 - 1e-9)
    h = len(keep) // 2
    first, second = keep[:h], keep[h:]
    used = run.energies["used_time"][1:]
    cp2k_cost = (float(used.mean()), float(used.std(ddof=1) / np.sqrt(len(used))))
    rows = {
        "second half": Row(traj[second], temp[second], seconds_per_step=1e-3),
        "spread 5%": Row(spread_liquid(traj[second], 1.05), temp[second]),
        "random gas": random_gas(traj[second]),
    }
    out = tmp_path_factory.mktemp("spcfw")
    res = validate(Row(traj[first], temp[first]), rows, out_dir=out,
                   cost={"cp2k_seconds_per_step": cp2k_cost, "spread 5%": 1.0},
                   settings_info={"reference": "water64-spcfw-300K 5-15 ps", "commit": "test"})
    return res, cp2k_cost


def test_halves_of_spcfw_pass(spcfw_result):
    res, cp2k_cost = spcfw_result
    assert res.rows_passed["second half"]
    recs = [m for m in res.metrics if m["row"] == "second half"]
    assert {m["metric"] for m in recs} == set(METRICS)
    judged = [m for m in recs if m["passed"] is not None]
    # Temperatures and cost given: every metric is judged but the spectra (CP2K's SPC/Fw
    # velocities are 0.1 ps apart, too coarse) and the reported-only heat and net force.
    assert {m["metric"] for m in judged} == set(METRICS) - UNJUDGED_SPCFW
    for m in judged:
        assert m["passed"], m
        assert np.isfinite(m["value"]) and np.isfinite(m["uncertainty"]) and m["uncertainty"] > 0, m
    oo = res.metric("second half", "rdf_OO.integrated_abs_diff")
    # Consecutive 10 ps halves of a 64-water run: the design's floor is ~0.06-0.2.
    assert 0.03 < oo["value"] < 0.25
    assert oo["noise_floor"] > 0 and oo["threshold_used"] == oo["threshold"] == 0.4
    peak = res.metric("second half", "rdf_OO.first_peak_position")
    assert peak["reference_value"] == pytest.approx(0.274, abs=0.003)
    assert peak["row_value"] == pytest.approx(0.274, abs=0.003)
    speed = res.metric("second half", "cost.speedup")
    assert speed["value"] == pytest.approx(cp2k_cost[0] / 1e-3)
    assert speed["value"] > 1 and speed["passed"]


def test_planted_bad_liquids_fail(spcfw_result):
    res, _ = spcfw_result
    assert not res.passed
    assert not res.rows_passed["spread 5%"] and not res.rows_passed["random gas"]
    for row in ("spread 5%", "random gas"):
        for pair in ("OO", "OH"):
            m = res.metric(row, f"rdf_{pair}.integrated_abs_diff")
            assert m["passed"] is False and m["value"] > 1.5 * m["threshold_used"], m
            assert m["value"] > 5 * res.metric("second half", f"rdf_{pair}.integrated_abs_diff")["value"]
        # The molecules themselves are intact: only the liquid structure is wrong.
        assert res.metric(row, "bond_length.mean")["passed"]
        assert res.metric(row, "hoh_angle.overlap")["passed"]
    spread = res.metric("spread 5%", "rdf_OO.first_peak_position")
    assert spread["passed"] is False
    assert spread["value"] == pytest.approx(0.05 * 0.274, abs=0.003)  # the peak moved out by 5 %
    gas = res.metric("random gas", "rdf_OO.first_peak_height")
    assert gas["passed"] is False and gas["note"] == "absent in row"
    assert res.metric("random gas", "hbonds.per_molecule")["passed"] is False
    assert res.metric("random gas", "diffusion.log_ratio")["value"] > 3  # random places: huge "D"
    # A CP2K step costs ~4.6 ms; a row at 1 s per step is slower and fails the cost metric.
    assert res.metric("spread 5%", "cost.speedup")["passed"] is False
    # No temperature series for the gas: reported, not judged.
    t = res.metric("random gas", "temperature.mean")
    assert t["passed"] is None and "no temperature" in t["note"]


def test_report_plots_and_metrics_json(spcfw_result):
    res, _ = spcfw_result
    out = res.report_path.parent
    for name in PLOTS + ["msd.png"]:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    report = res.report_path.read_text()
    for key in METRICS:
        assert key in report
    for name in ("second half", "spread 5%", "random gas"):
        assert f"## {name}" in report
    assert "**Overall: FAIL**" in report and "**FAIL**" in report
    assert "commit: test" in report  # provenance lines
    assert "0.4" in report  # thresholds are printed
    assert "## Summary" in report and "| CP2K reference |" in report
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(PLOTS) + 1 and "src='http" not in page
    assert "CP2K reference" in page and "class='FAIL'" in page and "commit: test" in page
    data = json.loads((out / "metrics.json").read_text())
    assert data["passed"] is False and data["rows_passed"]["second half"] is True
    assert len(data["metrics"]) == 3 * len(METRICS)
    first = next(m for m in data["metrics"] if m["row"] == "second half" and m["metric"] == "rdf_OO.integrated_abs_diff")
    assert first["value"] == pytest.approx(res.metric("second half", "rdf_OO.integrated_abs_diff")["value"])
    assert data["reference_rdf_features"]["OO"]["features"]["first_peak_position"] == pytest.approx(0.274, abs=0.003)


def test_xtb_reference_with_its_noise_floor_and_a_baseline(tmp_path):
    """Short xTB reference, cut here by equilibration_ps; SPC/Fw is the baseline row to beat.

    The good row is the reference itself, every other frame after the cut: it must pass
    everything whatever the noise. (Two 0.4 ps halves of this run differ by 23 K in mean
    temperature, which is why the floor rule exists.)
    """
    traj, temp, run = load("water64-xtb-300K")
    kept = np.flatnonzero(traj.time >= 0.75 - 1e-9)[1::2]
    s_traj, s_temp, _ = load("water64-spcfw-300K")
    s_keep = np.flatnonzero(s_traj.time >= 5.0)
    # The row's spectrum: the reference's own velocities after the cut (a perfect match);
    # the reference's are cut by equilibration_ps through their times.
    after = run.times_ps >= 0.75 - 1e-9
    res = validate(Row(traj, temp, velocities=run.velocities, velocity_times_ps=run.times_ps, heat_per_ps=-150.0),
                   {"xtb subsampled": Row(traj[kept], temp[kept], velocities=run.velocities[after],
                                          velocity_dt_ps=0.0025, heat_per_ps=2000.0, net_force=1500.0),
                    "spcfw": Row(s_traj[s_keep], s_temp[s_keep])},
                   out_dir=tmp_path, equilibration_ps=0.75, baseline="spcfw",
                   cost={"cp2k_seconds_per_step": run.seconds_per_step(), "xtb subsampled": 0.002, "spcfw": 0.002})
    assert res.passed and res.rows_passed["xtb subsampled"] and not res.rows_passed["spcfw"]
    ref_peak = res.metric("xtb subsampled", "rdf_OO.first_peak_position")["reference_value"]
    assert ref_peak == pytest.approx(0.29, abs=0.005)
    # xTB water has no resolved O...H peak: absent in both, so it passes, and says why.
    oh = res.metric("xtb subsampled", "rdf_OH.first_peak_height")
    assert oh["passed"] and oh["note"] == "absent in row and reference"
    assert res.metric("spcfw", "rdf_OH.first_peak_height")["note"] == "absent in reference"
    # The short reference's own noise raises thresholds (temperature: its halves are 23 K apart).
    raised = {m["metric"]: m for m in res.metrics if m["row"] == "xtb subsampled"
              and m["threshold_used"] is not None and m["threshold_used"] != m["threshold"]}
    assert {"temperature.mean", "rdf_OO.integrated_abs_diff"} <= set(raised)
    assert all("noise floor" in m["note"] for m in raised.values())
    assert raised["temperature.mean"]["noise_floor"] == pytest.approx(23.4, abs=1.0)
    for m in res.metrics:
        if m["row"] == "xtb subsampled" and m["passed"] is not None:
            assert m["passed"], m
    bond = res.metric("spcfw", "bond_length.mean")
    assert bond["passed"] is False and bond["value"] == pytest.approx(0.0063, abs=0.0005)
    assert res.metric("xtb subsampled", "bond_length.mean")["beats_baseline"]
    assert res.metric("xtb subsampled", "rdf_OO.integrated_abs_diff")["beats_baseline"]
    assert res.metric("xtb subsampled", "cost.speedup")["value"] == pytest.approx(run.seconds_per_step() / 0.002)
    assert "baseline row `spcfw` does not count" in res.report_path.read_text()
    assert all((tmp_path / p).exists() for p in PLOTS + ["vacf.png"])
    for band, (lo, hi) in (("libration", (200, 400)), ("bend", (1400, 1500)), ("stretch", (3500, 3700))):
        m = res.metric("xtb subsampled", f"vacf.{band}_band")
        assert m["passed"] and abs(m["value"]) < 1e-6 and lo < m["reference_value"] < hi, m
        assert 0 < m["noise_floor"] < 20  # halves of 0.4 ps
        assert "no velocities" in res.metric("spcfw", f"vacf.{band}_band")["note"]
    heat = res.metric("xtb subsampled", "thermostat.heat_per_ps")
    assert heat["value"] == 2000.0 and heat["reference_value"] == -150.0 and heat["passed"] is None
    assert res.metric("xtb subsampled", "forces.net_force")["row_value"] == 1500.0
    assert res.metric("spcfw", "forces.net_force")["note"] == "not recorded"


def test_thresholds_file_and_overrides():
    cfg = load_thresholds()
    assert cfg["schema_version"] == 1 and set(cfg["metrics"]) <= set(METRICS)
    assert cfg["metrics"]["rdf_OO.integrated_abs_diff"]["max"] > 0.2  # above the design's floor
    tight = load_thresholds({"metrics": {"rdf_OO.integrated_abs_diff": {"max": 0.01}}})
    assert tight["metrics"]["rdf_OO.integrated_abs_diff"]["max"] == 0.01
    assert tight["metrics"]["rdf_OH.integrated_abs_diff"] == cfg["metrics"]["rdf_OH.integrated_abs_diff"]
    with pytest.raises(ValueError, match="schema_version"):
        load_thresholds({"schema_version": 2})
    with pytest.raises(ValueError, match="unknown metrics"):
        load_thresholds({"metrics": {"rdf_XY.peak": {"max": 1}}})


def test_tight_threshold_fails_and_floor_rule(tmp_path):
    traj, _, _ = load("water64-spcfw-300K")
    keep = np.flatnonzero(traj.time >= 5.0)[::2]  # every 0.2 ps keeps it quick
    h = len(keep) // 2
    ref, row = traj[keep[:h]], traj[keep[h:]]
    strict = {"noise_floor_factor": 0.0, "metrics": {"rdf_OO.integrated_abs_diff": {"max": 0.01}}}
    res = validate(ref, {"row": row}, out_dir=tmp_path / "strict", thresholds=strict)
    m = res.metric("row", "rdf_OO.integrated_abs_diff")
    assert not res.passed and m["passed"] is False and m["threshold_used"] == 0.01
    # With the floor rule, 0.01 is raised to 2 x the reference's half-vs-half difference.
    res = validate(ref, {"row": row}, out_dir=tmp_path / "floor",
                   thresholds={"metrics": {"rdf_OO.integrated_abs_diff": {"max": 0.01}}})
    m = res.metric("row", "rdf_OO.integrated_abs_diff")
    assert m["threshold_used"] == pytest.approx(2 * m["noise_floor"]) and m["noise_floor"] > 0.05
    assert m["passed"] is (m["value"] <= m["threshold_used"])


def test_rows_must_be_water_trajectories(tmp_path):
    traj, temp, _ = load("water64-spcfw-300K")
    with pytest.raises(ValueError, match="temperature"):
        validate(traj[50:], {"bad": Row(traj[50:], temp[:10])}, out_dir=tmp_path)
    with pytest.raises(ValueError, match="no rows"):
        validate(traj[50:], {}, out_dir=tmp_path)
    with pytest.raises(ValueError, match="baseline"):
        validate(traj[50:], {"a": traj[50:]}, out_dir=tmp_path, baseline="b")
    assert validation.SCHEMA_VERSION == 1
