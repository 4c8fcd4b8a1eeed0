"""README.md states the accuracies the tests assert, with the same numbers."""

from pathlib import Path

import tolerances as tol

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
FLAT = " ".join(README.split())


def test_engine_accuracies_are_the_tested_ones():
    claims = [
        f"below {tol.OPENMM_REFERENCE:.0e} on the Reference platform, below {tol.OPENMM_CPU:.0e} on CPU",
        f"within {tol.LAMMPS_TABLES:.0e} of the model (tested)",
        f"below {tol.LAMMPS_PAIR_PYTHON:.0e} for pair_style python and below {tol.LAMMPS_TABLES:.0e} for the tables",
        f"(to {tol.LAMMPS_MPI:.0e} relative)",
    ]
    for claim in claims:
        assert claim in FLAT, f"README does not say: {claim}"


def test_known_truth_errors_are_the_tested_ones():
    o, h = tol.SPCFW_HELD_OUT_PERCENT["O"], tol.SPCFW_HELD_OUT_PERCENT["H"]
    assert f"held-out force errors of {o} % (O) and {h} % (H)" in FLAT
