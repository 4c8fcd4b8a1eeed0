"""Water molecules from geometry: found under periodic boundaries, broken ones refused."""

import numpy as np
import pytest

from openmm_learning.io.topology import TopologyError, find_water_molecules


def test_molecules_of_a_cp2k_frame_across_the_boundary(xtb):
    run, system = xtb
    box = run.box_nm[0]
    mols = find_water_molecules(run.positions[0], run.elements, box)
    np.testing.assert_array_equal(mols, np.arange(len(run.elements)).reshape(-1, 3))
    # wrap every atom into the box: molecules now straddle the faces, and are still found
    wrapped = run.positions[0] - np.floor(run.positions[0] / box) * box
    np.testing.assert_array_equal(find_water_molecules(wrapped, run.elements, box), mols)


def test_shuffled_atom_order_is_recovered(xtb):
    run, _ = xtb
    perm = np.random.default_rng(3).permutation(len(run.elements))
    mols = find_water_molecules(run.positions[0][perm], [run.elements[i] for i in perm], run.box_nm[0])
    original = np.sort(perm[mols], axis=1)
    original = original[np.argsort(original[:, 0])]
    np.testing.assert_array_equal(original, np.arange(len(perm)).reshape(-1, 3))


def test_broken_molecule_is_an_error(xtb):
    run, _ = xtb
    pos = run.positions[0].copy()
    pos[1] += [0.05, 0.0, 0.0]  # pull H 1 away from its oxygen
    with pytest.raises(TopologyError, match="broken molecule"):
        find_water_molecules(pos, run.elements, run.box_nm[0])
    pos = run.positions[0].copy()
    pos[4] = pos[0] + [0.0, 0.0, 0.09]  # an H of molecule 2 sits on oxygen 0: one H claimed twice
    with pytest.raises(TopologyError, match="broken molecule"):
        find_water_molecules(pos, run.elements, run.box_nm[0])


def test_not_water_is_an_error(xtb):
    run, _ = xtb
    with pytest.raises(TopologyError, match="only water"):
        find_water_molecules(run.positions[0], ["C"] + run.elements[1:], run.box_nm[0])
    with pytest.raises(TopologyError, match="2 H per O"):
        find_water_molecules(run.positions[0][:-1], run.elements[:-1], run.box_nm[0])
