"""Numba neighbour pairs: the cell list finds exactly the pairs a brute-force search finds."""

import numpy as np
import pytest

from openmm_learning.losses import kernels


@pytest.mark.parametrize("edge", [1.24, 3.0])  # all-pairs path and cell-list path
def test_neighbour_pairs_match_brute_force(edge):
    rng = np.random.default_rng(0)
    n = int(100 * edge**3)
    pos = rng.uniform(-edge, 2 * edge, (n, 3))  # also outside the box: wrapped by the kernel
    box = np.full(3, edge)
    mol = np.arange(n) // 3
    i, j, r = kernels.neighbour_pairs(pos, box, 0.6, mol)
    d = pos[None] - pos[:, None]
    d -= box * np.rint(d / box)
    dist = np.sqrt((d**2).sum(-1))
    iu, ju = np.triu_indices(n, 1)
    keep = (dist[iu, ju] < 0.6) & (mol[iu] != mol[ju])
    want = set(zip(iu[keep], ju[keep]))
    got = set(zip(np.minimum(i, j), np.maximum(i, j)))
    assert got == want
    np.testing.assert_allclose(r, dist[i, j], rtol=1e-12)
