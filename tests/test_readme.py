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


def test_point_charge_claims_are_the_tested_ones():
    claims = [
        f"fitted q_H is within {tol.SPCFW_CHARGE_PERCENT} % of SPC/Fw's 0.41 e",
        f"falls from {tol.SPCFW_HELD_OUT_PERCENT['O']} % (O) and {tol.SPCFW_HELD_OUT_PERCENT['H']} % (H) without "
        f"charges to below {tol.SPCFW_CHARGED_HELD_OUT_PERCENT} % (tested, both modes)",
        f"at tolerance {tol.PME_ERROR_TOLERANCE:.0e} the forces agree to below {tol.OPENMM_PME:.0e} on both platforms",
        f"`pppm` at accuracy {tol.PPPM_ACCURACY:.0e} agrees to below {tol.LAMMPS_TABLES:.0e}",
    ]
    for claim in claims:
        assert claim in FLAT, f"README does not say: {claim}"
