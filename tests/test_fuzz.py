"""The fuzz campaign (tests/fuzz.py) with a fixed budget: every mutated CP2K file and model
file reads correctly or raises the package's error naming the file; no other outcome."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fuzz import campaign  # noqa: E402

BUDGET = 60  # per target; `python tests/fuzz.py --budget N` runs a longer campaign


def test_mutated_inputs_read_or_fail_with_the_file_named(tmp_path, xtb_models):
    results = campaign(BUDGET, seed=7, workdir=tmp_path, model=xtb_models["agent"])
    assert set(results) == {"pos", "frc", "vel", "ener", "inp", "model"}
    crashes = {role: {k: v for k, v in counts.items() if k.startswith("crash")} for role, counts in results.items()}
    assert not any(crashes.values()), crashes
    for role, counts in results.items():
        assert sum(counts.values()) == BUDGET
        assert counts["error"] > 0, f"{role}: no mutation was caught, so the campaign tested nothing"
