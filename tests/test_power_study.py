"""The power study's plants, reduced (validation/power_study.py runs them at the example's
settings): the constant-D SPC/Fw splits T_O/T_H as (1 + D)/(1 - D) predicts while the
exact SPC/Fw does not, and the data plants move exactly what they plant (the slower
clock reads every displacement over 1/0.7 times the time: D times 0.7, nothing else)."""

import numpy as np
import pytest

from conftest import validation_script
from openmm_learning.io.water_run import example_run_dir, load_water_run

study = validation_script("power_study")
D = 0.1  # a large split, decided by one short run: T_O/T_H 1.22, about 330 / 270 K


@pytest.fixture(scope="module")
def exact_and_split(tmp_path_factory):
    run, water = load_water_run(example_run_dir("water64-spcfw-300K"))
    out = tmp_path_factory.mktemp("power")
    rows = {name: study.run_rows(name, make, mode, run, water, out, seeds=1, ps=1.0)
            for name, make, mode in (("exact", study.spcfw_system, "reciprocal"),
                                     ("split", lambda n, b: study.constant_d_spcfw(n, b, D), "agent"))}
    return run, rows


def test_constant_d_splits_the_species_as_predicted(exact_and_split):
    _, rows = exact_and_split
    t = {name: {k: np.mean(r[0].kinetic[k]) for k in ("O", "H")} for name, r in rows.items()}
    assert abs(t["exact"]["O"] - t["exact"]["H"]) < 15.0, t
    assert t["split"]["O"] / t["split"]["H"] == pytest.approx((1 + D) / (1 - D), rel=0.06), t


def test_data_plants_move_what_they_plant(exact_and_split):
    _, rows = exact_and_split
    exact = rows["exact"][0]
    cold = study.colder_vibration(exact, study.COLD_K)
    np.testing.assert_allclose(exact.kinetic["vibration"] - cold.kinetic["vibration"], study.COLD_K)
    assert cold.kinetic["O"] is exact.kinetic["O"]
    slow = study.slower_clock(exact, study.DIFFUSION_FACTOR)
    np.testing.assert_allclose(slow.traj.time * study.DIFFUSION_FACTOR, exact.traj.time)
    np.testing.assert_array_equal(slow.traj.xyz, exact.traj.xyz)
    assert slow.kinetic_times_ps[-1] == pytest.approx(exact.kinetic_times_ps[-1] / study.DIFFUSION_FACTOR)
