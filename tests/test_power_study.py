"""The power study's plants (validation/power_study.py runs them at the example's
settings): the constant-D SPC/Fw applies (1 + D) F on O and (1 - D) F on H through the
learning integrator's force groups, the scaled SPC/Fw scales what it says, and the data
plants move exactly what they plant (the slower clock reads every displacement over 1/0.7
times the time: D times 0.7, nothing else). Its temperature ratio is tested on a faster
carrier in test_agent_known_truth.py."""

import json
from pathlib import Path

import numpy as np
import openmm as mm
import pytest

from conftest import validation_script
from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.openmm.integrator import LearningIntegrator, agent_forces
from openmm_learning.validation.judge import Row
from openmm_learning.validation.rows import reference_row

study = validation_script("power_study")
D = 0.1


@pytest.fixture(scope="module")
def fist():
    return load_water_run(example_run_dir("water64-spcfw-300K"))


def forces(system, run, water, mode):
    integrator = LearningIntegrator(300.0, 0.0005, agent_species=water.species if mode == "agent" else None,
                                    n_atoms=len(water.species))
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName("Reference"))
    context.setPositions(run.positions[-1])
    return agent_forces(context, mode, water.species)


def test_constant_d_weights_every_force(fist):
    run, water = fist
    n, box = len(water.molecules), run.box_nm[-1]
    plain = forces(study.spcfw_system(n, box), run, water, "reciprocal")
    weighted = forces(study.constant_d_spcfw(n, box, D), run, water, "agent")
    weight = np.where(water.species == 0, 1 + D, 1 - D)[:, None]
    np.testing.assert_allclose(weighted, weight * plain, rtol=1e-6, atol=1e-6 * np.abs(plain).max())
    # planted on the plant: the scaled SPC/Fw changes the forces, unscaled it is SPC/Fw
    np.testing.assert_allclose(forces(study.scaled_spcfw(n, box), run, water, "reciprocal"), plain)
    assert not np.allclose(forces(study.scaled_spcfw(n, box, bond_k_scale=2.0), run, water, "reciprocal"), plain)


def test_data_plants_move_what_they_plant(fist):
    run, _ = fist
    exact = reference_row(run.select(run.times_ps >= 5.0), 0.0)
    cold = study.colder_vibration(exact, study.COLD_K)
    np.testing.assert_allclose(exact.kinetic["vibration"] - cold.kinetic["vibration"], study.COLD_K)
    assert cold.kinetic["O"] is exact.kinetic["O"] and isinstance(cold, Row)
    slow = study.slower_clock(exact, study.DIFFUSION_FACTOR)
    np.testing.assert_allclose(slow.traj.time * study.DIFFUSION_FACTOR, exact.traj.time)
    np.testing.assert_array_equal(slow.traj.xyz, exact.traj.xyz)
    assert slow.kinetic_times_ps[-1] == pytest.approx(exact.kinetic_times_ps[-1] / study.DIFFUSION_FACTOR)


def test_runs_to_fail_reads_a_ratios_relative_errors():
    """diffusion.log_ratio's row and reference uncertainties are in nm^2/ps, its value a
    log ratio: the calculation takes the record's relative error components (planted: read
    in absolute units the same record would need only 2 runs)."""
    m = {"threshold": 0.223, "value": -0.45, "row_uncertainty": 3e-5, "reference_uncertainty": 5e-5,
         "error_components": (0.061, 0.058), "z_fail": 3.47, "z": 2.145}
    assert study.runs_to_fail(m, 8, 15) == 23
    absolute = {k: v for k, v in m.items() if k != "error_components"}
    assert study.runs_to_fail(absolute, 8, 15) == 2


def test_the_record_is_of_the_examples_settings():
    """The committed power record was made at what `make example` runs (runs per row, their
    length, cut, Langevin start, and start frames as close together as the example's):
    changing those without rerunning the study fails here. At those settings no planted
    failure passes its planted metric, those that fail need no more runs than the example
    has, and the exact model passes at least 90 % of its judged metrics."""
    from openmm_learning.pipeline.example import EXAMPLE_LANGEVIN_PS, EXAMPLE_PS, EXAMPLE_ROW_CUT_PS, EXAMPLE_SEEDS

    rec = json.loads((Path(study.__file__).parent / "results" / "power.json").read_text())
    s = rec["settings"]
    assert (s["seeds"], s["ps"], s["row_cut_ps"], s["langevin_ps"]) == (
        EXAMPLE_SEEDS, EXAMPLE_PS, EXAMPLE_ROW_CUT_PS, EXAMPLE_LANGEVIN_PS)
    assert s["start_window_ps"] == pytest.approx(study.example_start_window_ps())
    assert set(rec["cases"]) == set(study.CASES)
    for name, case in rec["cases"].items():
        if name == "exact (SPC/Fw)":
            assert case["passed_fraction"] >= 0.9, case
            continue
        assert case["outcome"] in ("fail", "inconclusive"), (name, case)
        if case["outcome"] == "fail":
            assert case["runs_to_fail"] <= EXAMPLE_SEEDS, (name, case)
