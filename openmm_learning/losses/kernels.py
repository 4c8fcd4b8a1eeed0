"""Numba kernels: neighbour pairs, spline weights, model forces and design matrices.

Conventions shared by every kernel (OpenMM units: nm, rad, kJ/mol):

* A channel is one fitted function of one invariant, stored as the values ``y`` of a
  natural cubic spline on a uniform grid ``x0 + h * k`` (k = 0..n-1); ``z`` are its
  second derivatives (``z = M @ y``, natural end conditions). This is exactly the
  interpolation that OpenMM's Continuous1DFunction performs, so engines reproduce the
  model to round-off.
* Outside its grid a spline continues as the straight line of its end slope (value and
  force continuous), and a harmonic wall starting with zero slope adds to it.
* Channel kinds: 0 = intermolecular pair (wall below x0 only, multiplied by OpenMM's
  switching function between r_switch and r_cut), 1 = intramolecular pair and
  2 = H-O-H angle (walls below x0 and above x1). Walls are fixed, not fitted: they
  only guard against leaving the range the model was trained on. k_wall is per nm^2;
  the angle's wall is k_wall * ANGLE_WALL_ARM_NM^2 per rad^2, so that an H meets the
  same stiffness on every wall (the same k per rad^2 would be 100x stiffer per nm of
  the H's path: its period, about 1 fs, made Verlet at 0.5 fs blow up).
* A channel may instead be a compiled polynomial (basis 1): Chebyshev coefficients ``y``
  of T_k(u), u = 2 w - 1 on [x0, x1], with w = (x - x0) / (x1 - x0) for a bond or the angle;
  an intermolecular pair's series is in 1/r, w = (1/x0 - 1/r) / (1/x0 - 1/x1), multiplied
  by (1 - w)^3, which ends it smoothly at x1 = r_cut in place of the switch.
  Engines evaluate it as a compiled expression (no table lookup per pair); outside
  [x0, x1] it is continued and walled like a spline.
* Agent forces: the force on atom i is -dH_a(i)/dx_i, where H_a(i) sums the channels
  of agent species a = species[i] over i's neighbours (and its own molecule's angle).
"""

from __future__ import annotations

import numpy as np
from numba import njit

KIND_INTER, KIND_INTRA, KIND_ANGLE = 0, 1, 2
BASIS_SPLINE, BASIS_CHEBYSHEV = 0, 1
#: the lever of an H on the H-O-H angle (about an O-H bond): arc length per radian
ANGLE_WALL_ARM_NM = 0.1


# ---------------------------------------------------------------- neighbour pairs


@njit(cache=True)
def _min_image(d, box):
    for k in range(3):
        d[k] -= box[k] * np.rint(d[k] / box[k])


@njit(cache=True)
def neighbour_pairs(pos, box, r_cut, molecule_id):
    """Intermolecular pairs (i < j) closer than r_cut under periodic boundaries.

    Uses a cell list when the box holds at least 3 cells per side, all pairs otherwise.
    Returns (i, j, r) arrays.
    """
    n = pos.shape[0]
    ncell = np.empty(3, np.int64)
    for k in range(3):
        ncell[k] = int(box[k] / r_cut)
    rc2 = r_cut * r_cut
    cap = 64 + 48 * n  # ~45 pairs per atom in liquid water at 0.6 nm
    if ncell.min() < 3:
        count, pi, pj, pr = _all_pairs(pos, box, rc2, molecule_id, cap)
        if count > pi.shape[0]:
            count, pi, pj, pr = _all_pairs(pos, box, rc2, molecule_id, count)
        return pi[:count], pj[:count], pr[:count]
    # cell list: atoms sorted by cell
    ntot = ncell[0] * ncell[1] * ncell[2]
    cell = np.empty(n, np.int64)
    for i in range(n):
        idx = 0
        for k in range(3):
            f = pos[i, k] / box[k]
            f -= np.floor(f)
            ck = min(int(f * ncell[k]), ncell[k] - 1)
            idx = idx * ncell[k] + ck
        cell[i] = idx
    order = np.argsort(cell, kind="mergesort")
    start = np.zeros(ntot + 1, np.int64)
    for i in range(n):
        start[cell[i] + 1] += 1
    for c in range(ntot):
        start[c + 1] += start[c]
    count, pi, pj, pr = _cell_pairs(pos, box, rc2, molecule_id, ncell, order, start, cap)
    if count > pi.shape[0]:  # denser than liquid water: once more with room for every pair
        count, pi, pj, pr = _cell_pairs(pos, box, rc2, molecule_id, ncell, order, start, count)
    return pi[:count], pj[:count], pr[:count]


@njit(cache=True)
def _cell_pairs(pos, box, rc2, molecule_id, ncell, order, start, cap):
    """Pairs closer than sqrt(rc2) from atoms sorted by cell, each pair of neighbouring
    cells visited once (the cell itself and 13 of its 26 neighbours). Stores at most cap
    pairs and counts them all (arrays of a fixed size: growing them in the loop measured
    2-3x slower)."""
    pi = np.empty(cap, np.int64)
    pj = np.empty(cap, np.int64)
    pr = np.empty(cap)
    count = 0
    for cx in range(ncell[0]):
        for cy in range(ncell[1]):
            for cz in range(ncell[2]):
                a = (cx * ncell[1] + cy) * ncell[2] + cz
                for dx in range(0, 2):
                    for dy in range(-1, 2):
                        for dz in range(-1, 2):
                            if dx == 0 and (dy < 0 or (dy == 0 and dz < 0)):
                                continue  # the mirror offset visits this pair of cells
                            b = (((cx + dx) % ncell[0]) * ncell[1] + (cy + dy) % ncell[1]) * ncell[2] \
                                + (cz + dz) % ncell[2]
                            for ii in range(start[a], start[a + 1]):
                                i = order[ii]
                                for jj in range(ii + 1 if b == a else start[b], start[b + 1]):
                                    j = order[jj]
                                    if molecule_id[i] != molecule_id[j]:
                                        r2 = _distance2(pos, box, i, j)
                                        if r2 < rc2:
                                            if count < cap:
                                                pi[count], pj[count], pr[count] = min(i, j), max(i, j), np.sqrt(r2)
                                            count += 1
    return count, pi, pj, pr


@njit(cache=True, inline="always")
def _distance2(pos, box, i, j):
    """Squared minimum-image distance of atoms i and j (no allocation: the hot check)."""
    r2 = 0.0
    for k in range(3):
        d = pos[j, k] - pos[i, k]
        d -= box[k] * np.rint(d / box[k])
        r2 += d * d
    return r2


@njit(cache=True)
def _all_pairs(pos, box, rc2, molecule_id, cap):
    """Every intermolecular pair closer than sqrt(rc2), for boxes under 3 cells a side:
    stores at most cap pairs and counts them all (see _cell_pairs)."""
    n = pos.shape[0]
    pi = np.empty(cap, np.int64)
    pj = np.empty(cap, np.int64)
    pr = np.empty(cap)
    count = 0
    for i in range(n):
        for j in range(i + 1, n):
            if molecule_id[i] != molecule_id[j]:
                r2 = _distance2(pos, box, i, j)
                if r2 < rc2:
                    if count < cap:
                        pi[count], pj[count], pr[count] = i, j, np.sqrt(r2)
                    count += 1
    return count, pi, pj, pr


# ---------------------------------------------------------------- spline pieces


@njit(cache=True)
def switch(r, r_switch, r_cut):
    """OpenMM's switching function S(r) and dS/dr."""
    if r <= r_switch:
        return 1.0, 0.0
    if r >= r_cut:
        return 0.0, 0.0
    w = r_cut - r_switch
    x = (r - r_switch) / w
    s = 1.0 + x * x * x * (-10.0 + x * (15.0 - 6.0 * x))
    ds = x * x * (-30.0 + x * (60.0 - 30.0 * x)) / w
    return s, ds


@njit(cache=True)
def spline_weights(x, x0, h, n):
    """Interval j and the weights of (y_j, y_j+1, z_j, z_j+1) in the value and in d/dx.

    Outside [x0, x0 + (n-1) h] the spline continues as the straight line of its end
    slope, so value and derivative are continuous at both ends (the wall adds to it).
    """
    x1 = x0 + (n - 1) * h
    xc = min(max(x, x0), x1)
    j = int((xc - x0) / h)
    if j > n - 2:
        j = n - 2
    b = (xc - (x0 + j * h)) / h
    a = 1.0 - b
    hh = h * h / 6.0
    # tuples, not arrays: no allocation per term in the hot loops
    dv = (-1.0 / h, 1.0 / h, -(3.0 * a * a - 1.0) * h / 6.0, (3.0 * b * b - 1.0) * h / 6.0)
    e = x - xc
    v = (a + e * dv[0], b + e * dv[1], (a * a * a - a) * hh + e * dv[2], (b * b * b - b) * hh + e * dv[3])
    return j, v, dv


@njit(cache=True)
def wall_stiffness(kind, k_wall):
    """The wall's k of a channel kind: k_wall (per nm^2) scaled to per rad^2 for the angle."""
    return k_wall * ANGLE_WALL_ARM_NM ** 2 if kind == KIND_ANGLE else k_wall


@njit(cache=True)
def wall(x, x0, x1, k_wall, upper):
    """Harmonic guard k (x0 - x)^2 outside [x0, x1] (upper side only when `upper`): value,
    derivative; k_wall here is the channel's own (wall_stiffness)."""
    if x < x0:
        return k_wall * (x0 - x) ** 2, -2.0 * k_wall * (x0 - x)
    if upper and x > x1:
        return k_wall * (x - x1) ** 2, 2.0 * k_wall * (x - x1)
    return 0.0, 0.0


@njit(cache=True)
def channel_weights(c, x, ch_kind, ch_x0, ch_h, ch_n, k_wall, r_switch, r_cut):
    """dE/dx of channel c at x as (j, weights on y/z) plus the fixed wall part.

    Returns j, w (4 weights of y_j, y_j+1, z_j, z_j+1 in dE/dx), wv (the same in E),
    fixed dE/dx, fixed E. For an intermolecular channel E = S(r) (spline + wall).
    """
    j, v, dv = spline_weights(x, ch_x0[c], ch_h[c], ch_n[c])
    x1 = ch_x0[c] + (ch_n[c] - 1) * ch_h[c]
    if ch_kind[c] == KIND_INTER:
        s, ds = switch(x, r_switch, r_cut)
        ew, dw = wall(x, ch_x0[c], x1, k_wall, False)
        w = (ds * v[0] + s * dv[0], ds * v[1] + s * dv[1], ds * v[2] + s * dv[2], ds * v[3] + s * dv[3])
        wv = (s * v[0], s * v[1], s * v[2], s * v[3])
        return j, w, wv, ds * ew + s * dw, s * ew
    ew, dw = wall(x, ch_x0[c], x1, wall_stiffness(ch_kind[c], k_wall), True)
    return j, dv, v, dw, ew


@njit(cache=True)
def channel_curve(xs, kind, basis, x0, h, n, y, z, k_wall, r_switch, r_cut):
    """A channel's full term E(x) and dE/dx at many points (function, extension, walls, switch).

    The one evaluator behind LAMMPS tables, the pair_style python coefficients' checks
    and plots; y, z are this channel's spline values and second derivatives (or its
    Chebyshev coefficients and zeros, h its span, for basis BASIS_CHEBYSHEV).
    """
    ch_kind = np.array([kind], np.int64)
    ch_basis = np.array([basis], np.int64)
    ch_x0 = np.array([x0])
    ch_h = np.array([h])
    ch_n = np.array([n], np.int64)
    ch_off = np.zeros(1, np.int64)
    e = np.zeros(xs.shape[0])
    de = np.zeros(xs.shape[0])
    for p in range(xs.shape[0]):
        if kind == KIND_INTER and xs[p] >= r_cut:
            continue
        de[p], e[p] = _term_value(0, xs[p], ch_kind, ch_basis, ch_x0, ch_h, ch_n, ch_off, y, z, k_wall, r_switch, r_cut)
    return e, de


@njit(cache=True)
def end_slopes(x0, h, n, y, z):
    """dy/dx of the spline at its two ends: the slopes of its linear extensions."""
    out = np.empty(2)
    for k, x in enumerate((x0, x0 + (n - 1) * h)):
        j, v, dv = spline_weights(x, x0, h, n)
        out[k] = dv[0] * y[j] + dv[1] * y[j + 1] + dv[2] * z[j] + dv[3] * z[j + 1]
    return out


@njit(cache=True)
def angle_and_gradients(po, p1, p2, box):
    """H-O-H angle at O and its gradients with respect to O, H1, H2 (minimum image)."""
    a = p1 - po
    b = p2 - po
    _min_image(a, box)
    _min_image(b, box)
    ra = np.sqrt(np.dot(a, a))
    rb = np.sqrt(np.dot(b, b))
    cos_t = np.dot(a, b) / (ra * rb)
    cos_t = min(1.0, max(-1.0, cos_t))
    theta = np.arccos(cos_t)
    sin_t = max(np.sqrt(1.0 - cos_t * cos_t), 1e-12)
    g1 = -(b / (ra * rb) - cos_t * a / (ra * ra)) / sin_t
    g2 = -(a / (ra * rb) - cos_t * b / (rb * rb)) / sin_t
    g0 = -(g1 + g2)
    return theta, g0, g1, g2


# ---------------------------------------------------------------- per-frame work


@njit(cache=True)
def _molecule_terms(pos, box, species, molecule, pair_channel, angle_channel, atom, chan, xs, grad, t):
    """The 9 own-molecule terms of one (O, H1, H2), written from row t on; returns t + 9."""
    o, h1, h2 = molecule[0], molecule[1], molecule[2]
    d = np.empty(3)
    for (u, v) in ((o, h1), (h1, o), (o, h2), (h2, o), (h1, h2), (h2, h1)):
        for k in range(3):
            d[k] = pos[u, k] - pos[v, k]
        _min_image(d, box)
        r = np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
        atom[t] = u
        chan[t] = pair_channel[species[u], species[v], 1]
        xs[t] = r
        for k in range(3):
            grad[t, k] = d[k] / r
        t += 1
    theta, g0, g1, g2 = angle_and_gradients(pos[o], pos[h1], pos[h2], box)
    for (u, g) in ((o, g0), (h1, g1), (h2, g2)):
        atom[t] = u
        chan[t] = angle_channel[species[u]]
        xs[t] = theta
        for k in range(3):
            grad[t, k] = g[k]
        t += 1
    return t


@njit(cache=True)
def _terms(pos, box, species, molecules, molecule_id, r_cut, pair_channel, angle_channel):
    """All (agent atom, channel, invariant, gradient of the invariant wrt the agent) terms.

    Every intermolecular pair gives two terms (one per agent), every intramolecular
    pair two, every molecule one angle term per atom. Returns arrays
    (atom, channel, x, grad[3]).
    """
    pi, pj, pr = neighbour_pairs(pos, box, r_cut, molecule_id)
    n_mol = molecules.shape[0]
    n_terms = 2 * pi.shape[0] + n_mol * (6 + 3)
    atom = np.empty(n_terms, np.int64)
    chan = np.empty(n_terms, np.int64)
    xs = np.empty(n_terms)
    grad = np.empty((n_terms, 3))
    t = 0
    d = np.empty(3)
    for p in range(pi.shape[0]):
        i, j, r = pi[p], pj[p], pr[p]
        for k in range(3):
            d[k] = pos[i, k] - pos[j, k]
        _min_image(d, box)
        for (u, v, sign) in ((i, j, 1.0), (j, i, -1.0)):
            atom[t] = u
            chan[t] = pair_channel[species[u], species[v], 0]
            xs[t] = r
            for k in range(3):
                grad[t, k] = sign * d[k] / r
            t += 1
    for m in range(n_mol):
        t = _molecule_terms(pos, box, species, molecules[m], pair_channel, angle_channel, atom, chan, xs, grad, t)
    return atom[:t], chan[:t], xs[:t], grad[:t]


@njit(cache=True)
def _weighted_terms(pos, box, species, molecules, molecule_id, pair_channel, angle_channel,
                    ch_kind, ch_x0, ch_h, ch_n, ch_off, k_wall, r_switch, r_cut):
    """Every term that acts, with its channel weights: the common core of forces and design.

    Returns atom (T,), offset o of y_j/z_j (T,), weights of (y_j, y_j+1, z_j, z_j+1) in
    dE/dx (T, 4) and in E (T, 4), the fixed wall dE/dx and E (T,), and the gradient of
    the invariant with respect to the agent atom (T, 3).
    """
    atom, chan, xs, grad = _terms(pos, box, species, molecules, molecule_id, r_cut,
                                  pair_channel, angle_channel)
    n_terms = atom.shape[0]
    keep = np.empty(n_terms, np.int64)
    offset = np.empty(n_terms, np.int64)
    w = np.empty((n_terms, 4))
    wv = np.empty((n_terms, 4))
    dfix = np.empty(n_terms)
    efix = np.empty(n_terms)
    m = 0
    for t in range(n_terms):
        c = chan[t]
        if c < 0 or (ch_kind[c] == KIND_INTER and xs[t] >= r_cut):
            continue
        j, wt, wvt, dfix[m], efix[m] = channel_weights(c, xs[t], ch_kind, ch_x0, ch_h, ch_n,
                                                       k_wall, r_switch, r_cut)
        for q in range(4):
            w[m, q] = wt[q]
            wv[m, q] = wvt[q]
        offset[m] = ch_off[c] + j
        keep[m] = t
        m += 1
    keep = keep[:m]
    return atom[keep], offset[:m], w[:m], wv[:m], dfix[:m], efix[:m], grad[keep]


@njit(cache=True)
def chebyshev_series(x, x0, x1, c, o, n, cutoff):
    """E and dE/dx of sum_k c[o+k] T_k(2w - 1), w = (x - x0)/(x1 - x0), times (1 - w)^3 when
    `cutoff`; continued beyond [x0, x1] as the straight line of its end slope."""
    xc = min(max(x, x0), x1)
    if cutoff:  # pairs: a series in 1/r (repulsion and charges are tame there)
        span = 1.0 / x0 - 1.0 / x1
        w = (1.0 / x0 - 1.0 / xc) / span
        dwdx = 1.0 / (xc * xc * span)
    else:
        span = x1 - x0
        w = (xc - x0) / span
        dwdx = 1.0 / span
    u = 2.0 * w - 1.0
    t_prev, t_now, d_prev, d_now = 1.0, u, 0.0, 1.0
    p = c[o] + (c[o + 1] * u if n > 1 else 0.0)
    dp = c[o + 1] if n > 1 else 0.0
    for k in range(2, n):
        t_next = 2.0 * u * t_now - t_prev
        d_next = 2.0 * t_now + 2.0 * u * d_now - d_prev
        p += c[o + k] * t_next
        dp += c[o + k] * d_next
        t_prev, t_now, d_prev, d_now = t_now, t_next, d_now, d_next
    dp *= 2.0 * dwdx
    if cutoff:
        g = (1.0 - w) ** 3
        dg = -3.0 * (1.0 - w) ** 2 * dwdx
        p, dp = g * p, g * dp + dg * p
    return p + (x - xc) * dp, dp


@njit(cache=True)
def _term_value(c, x, ch_kind, ch_basis, ch_x0, ch_h, ch_n, ch_off, y, z, k_wall, r_switch, r_cut):
    """dE/dx and E of channel c at x (function, extension, wall, and the spline's switch)."""
    if ch_basis[c] == BASIS_CHEBYSHEV:
        x1 = ch_x0[c] + ch_h[c]  # a polynomial's ch_h is its span
        e, de = chebyshev_series(x, ch_x0[c], x1, y, ch_off[c], ch_n[c], ch_kind[c] == KIND_INTER)
        if ch_kind[c] == KIND_INTER and r_cut < x1 - 1e-9:
            # a pair series cut short of its own end (an asymmetry range): switched to 0 at r_cut
            s, ds = switch(x, r_switch, r_cut)
            e, de = e * s, de * s + e * ds
        ew, dw = wall(x, ch_x0[c], x1, wall_stiffness(ch_kind[c], k_wall), ch_kind[c] != KIND_INTER)
        return de + dw, e + ew
    j, w, wv, dfix, efix = channel_weights(c, x, ch_kind, ch_x0, ch_h, ch_n, k_wall, r_switch, r_cut)
    o = ch_off[c] + j
    de = w[0] * y[o] + w[1] * y[o + 1] + w[2] * z[o] + w[3] * z[o + 1] + dfix
    e = wv[0] * y[o] + wv[1] * y[o + 1] + wv[2] * z[o] + wv[3] * z[o + 1] + efix
    return de, e


@njit(cache=True)
def model_forces(pos, box, species, molecules, molecule_id, pair_channel, angle_channel,
                 ch_kind, ch_basis, ch_x0, ch_h, ch_n, ch_off, y, z, k_wall, r_switch, r_cut, n_agents):
    """Agent forces (n, 3) and per-agent losses (n,) of a model: the reference evaluator.

    Accumulated term by term, without the term arrays of the design matrix (which cost
    more to fill than the forces at thousands of atoms); r_cut <= 0: own-molecule terms
    only. Only atoms i < n_agents take their pair terms (the others are neighbours only,
    such as an MPI rank's ghost atoms); n_agents = n for a whole box.
    """
    n = pos.shape[0]
    f = np.zeros((n, 3))
    loss = np.zeros(n)
    if r_cut > 0.0:
        pi, pj, pr = neighbour_pairs(pos, box, r_cut, molecule_id)
        for p in range(pi.shape[0]):
            i, j, r = pi[p], pj[p], pr[p]
            if i >= n_agents and j >= n_agents:
                continue
            dx = pos[i, 0] - pos[j, 0]
            dy = pos[i, 1] - pos[j, 1]
            dz = pos[i, 2] - pos[j, 2]
            dx -= box[0] * np.rint(dx / box[0])
            dy -= box[1] * np.rint(dy / box[1])
            dz -= box[2] * np.rint(dz / box[2])
            for (u, v, sign) in ((i, j, 1.0), (j, i, -1.0)):
                c = pair_channel[species[u], species[v], 0]
                if c < 0 or u >= n_agents:
                    continue
                de, e = _term_value(c, r, ch_kind, ch_basis, ch_x0, ch_h, ch_n, ch_off, y, z, k_wall, r_switch, r_cut)
                loss[u] += e
                s = sign * de / r
                f[u, 0] -= s * dx
                f[u, 1] -= s * dy
                f[u, 2] -= s * dz
    atom = np.empty(9, np.int64)
    chan = np.empty(9, np.int64)
    xs = np.empty(9)
    grad = np.empty((9, 3))
    for m in range(molecules.shape[0]):
        _molecule_terms(pos, box, species, molecules[m], pair_channel, angle_channel, atom, chan, xs, grad, 0)
        for t in range(9):
            c = chan[t]
            if c < 0:
                continue
            de, e = _term_value(c, xs[t], ch_kind, ch_basis, ch_x0, ch_h, ch_n, ch_off, y, z, k_wall, r_switch, r_cut)
            loss[atom[t]] += e
            for k in range(3):
                f[atom[t], k] -= de * grad[t, k]
    return f, loss


@njit(cache=True)
def design_frame(pos, box, species, molecules, molecule_id, pair_channel, angle_channel,
                 ch_kind, ch_x0, ch_h, ch_n, ch_off, n_par, k_wall, r_switch, r_cut):
    """Design matrix of one frame in the expanded (y, z) space, and the fixed forces.

    Returns D (3n, 2 n_par) with F = D[:, :n_par] @ y + D[:, n_par:] @ z + F_fixed,
    and F_fixed (3n,) from the walls.
    """
    atom, offset, w, wv, dfix, efix, grad = _weighted_terms(
        pos, box, species, molecules, molecule_id, pair_channel, angle_channel,
        ch_kind, ch_x0, ch_h, ch_n, ch_off, k_wall, r_switch, r_cut)
    n = pos.shape[0]
    D = np.zeros((3 * n, 2 * n_par))
    ffix = np.zeros(3 * n)
    for t in range(atom.shape[0]):
        o = offset[t]
        for k in range(3):
            g = grad[t, k]
            row = 3 * atom[t] + k
            D[row, o] -= w[t, 0] * g
            D[row, o + 1] -= w[t, 1] * g
            D[row, n_par + o] -= w[t, 2] * g
            D[row, n_par + o + 1] -= w[t, 3] * g
            ffix[row] -= dfix[t] * g
    return D, ffix


@njit(cache=True)
def invariant_ranges(positions, boxes, species, molecules, molecule_id, r_cut,
                     pair_channel, angle_channel, n_channels):
    """Smallest and largest value of every channel's invariant over all frames."""
    lo = np.full(n_channels, np.inf)
    hi = np.full(n_channels, -np.inf)
    for f in range(positions.shape[0]):
        atom, chan, xs, grad = _terms(positions[f], boxes[f], species, molecules,
                                      molecule_id, r_cut, pair_channel, angle_channel)
        for t in range(atom.shape[0]):
            c = chan[t]
            if c >= 0:
                lo[c] = min(lo[c], xs[t])
                hi[c] = max(hi[c], xs[t])
    return lo, hi


@njit(cache=True)
def invariant_histograms(positions, boxes, species, molecules, molecule_id, r_cut,
                         pair_channel, angle_channel, lo, hi, n_bins):
    """Counts of every channel's invariant over all frames in n_bins bins on [lo[c], hi[c]]
    (values outside are left out)."""
    counts = np.zeros((lo.shape[0], n_bins))
    for f in range(positions.shape[0]):
        atom, chan, xs, grad = _terms(positions[f], boxes[f], species, molecules,
                                      molecule_id, r_cut, pair_channel, angle_channel)
        for t in range(atom.shape[0]):
            c = chan[t]
            if c >= 0 and lo[c] <= xs[t] < hi[c]:
                counts[c, int((xs[t] - lo[c]) / (hi[c] - lo[c]) * n_bins)] += 1.0
    return counts
