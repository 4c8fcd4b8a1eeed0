"""`iterate`: one real round of the closed loop with CP2K on the 27-water xTB run (a 0.45 nm
cutoff fits its box without a replica): fit with a committee, learning dynamics, the
picked frames computed by cp2k.psmp with the run's own input, refit, and the test points."""

import json
import shutil

import numpy as np
import pytest

from openmm_learning.io.cp2k_exec import find_cp2k_executable
from openmm_learning.io.water_run import example_run_dir
from openmm_learning.pipeline.iterate import LoopSettings, iterate, pick_frames
from openmm_learning.losses.fit import FitSettings


def test_picks_are_the_most_uncertain_distinct_moments():
    score = np.array([0, 9, 8.5, 8, 0, 0, 7, 0, 0, 0, 6.0])
    assert pick_frames(score, 3, spacing=3) == [1, 6, 10]  # 2 and 3 are the same moment as 1
    assert pick_frames(score, 2, spacing=3, exclude=[6]) == [1, 10]


@pytest.mark.slow
@pytest.mark.skipif(find_cp2k_executable() is None, reason="needs CP2K (apt-get install cp2k)")
def test_one_round_with_cp2k(tmp_path):
    out = tmp_path / "loop"
    kw = dict(loop=LoopSettings(rounds=1, temperatures=(330.0,), ps=0.1, points=3, test_points=2, spacing=3,
                                report_interval=10, seed=3),
              settings=FitSettings(r_cut=0.45, r_switch=0.35), progress=False)
    records = iterate(example_run_dir("water27-xtb-300K"), out, **kw)
    assert [r["round"] for r in records] == [0, 1]
    assert records[0]["training_single_points"] == 0 and records[1]["training_single_points"] == 3
    picked = records[0]["dynamics"]["330"]["picked"]
    assert len(picked) == 3 and min(np.diff(picked)) >= 3
    for r in records:
        for s in ("O", "H"):
            assert np.isfinite(r["test_points"][s]["rmse"]) and r["test_points"][s]["rmse"] > 0
    # CP2K's own files, with the run's method: 3 frames of forces from a REFTRAJ run
    points = out / "round-0" / "points"
    inp = next(points.glob("*.inp")).read_text()
    assert "ENSEMBLE REFTRAJ" in inp and "METHOD XTB" in inp
    assert len(next(points.glob("*-frc-1.xyz")).read_text().splitlines()) == 3 * (81 + 2)
    assert json.loads((out / "iterate.json").read_text()) == records
    # resumable: every stage is found done, nothing is recomputed
    stamps = {
        p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name not in ("round.json", "iterate.json")
    }
    shutil.rmtree(out / "round-1" / "fit" / "committee")  # an interrupted refit is redone alone
    (out / "round-1" / "fit" / "reciprocal.json").unlink()
    again = iterate(example_run_dir("water27-xtb-300K"), out, **kw)
    assert again[0] == records[0] and again[1]["test_points"] == records[1]["test_points"]
    kept = {p: t for p, t in stamps.items() if "round-1" not in str(p)}
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
