"""Do many-body invariants pay off? A density (embedding) family, fitted jointly (a study).

Each agent's loss gains F_a(rho_i) terms, where rho_i = sum_j w(r_ij) counts the neighbours
of one species in one shell (a smooth step w: 1 inside r_in, cosine to 0 at r_out):

    O agents: O neighbours in the first shell (0.30-0.36 nm)   -> tetrahedral crowding
              H neighbours at hydrogen-bond range (0.20-0.26 nm) -> bonds accepted
    H agents: O neighbours at hydrogen-bond range (0.20-0.26 nm) -> bond donated

F_a is a sum of Gaussian bumps in rho (centres 0.5 apart over the 1st-99th percentile of
rho in the training frames, so F_a' fades outside the data) with fitted weights, so the agent force
-F_a'(rho_i) grad_i rho_i is linear in them: extra design columns fitted jointly with the
splines and charges (losses.fit.accumulate, extra_columns). Agent view only (each agent
descends its own F_a(rho_i)). Reported: held-out force RMSE per species with and without
the family, the learning curve (training frames spread over the same span), the
force each family carries on held-out frames (its sensitivity) and the cost per frame.

    python validation/manybody_study.py [--run RUN] --out DIR

A family is worth carrying into the engines only if the held-out error falls clearly.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.losses import kernels
from openmm_learning.losses.fit import (FitSettings, _model_of, _predictions, accumulate, build_channels,
                                        force_errors, solve_coupled, solve_cv, time_split)

#: (agent species, neighbour species, r_in, r_out) of each density (nm); species O = 0, H = 1
DENSITIES = (("O", "O", 0.30, 0.36), ("O", "H", 0.20, 0.26), ("H", "O", 0.20, 0.26))
CODE = {"O": 0, "H": 1}
WIDTH = 0.5  # of the Gaussian bumps in rho, and their spacing


def _step(r, r_in, r_out):
    """w(r) and dw/dr: 1 inside r_in, cosine down to 0 at r_out."""
    t = np.clip((r - r_in) / (r_out - r_in), 0.0, 1.0)
    w = 0.5 * (1 + np.cos(np.pi * t))
    dw = np.where((r > r_in) & (r < r_out), -0.5 * np.pi * np.sin(np.pi * t) / (r_out - r_in), 0.0)
    return w, dw


def bump_centres(run, system, frames, densities=DENSITIES):
    """Per density, bump centres over the 1st-99th percentile of rho in `frames`."""
    rho = [[] for _ in densities]
    for f in frames:
        for d, values in enumerate(densities_of(run.positions[f], run.box_nm[f], system, densities)[0]):
            rho[d].append(values[system.species == CODE[densities[d][0]]])
    out = []
    for values in rho:
        lo, hi = np.percentile(np.concatenate(values), [1, 99])
        out.append(np.arange(np.floor(lo / WIDTH) * WIDTH, hi + WIDTH, WIDTH))
    return out


def densities_of(pos, box, system, densities=DENSITIES):
    """rho (n,) and d rho_i / d x_i (n, 3) of every density, for each atom of its agent species."""
    species = system.species
    n = len(pos)
    pi, pj, r = kernels.neighbour_pairs(np.ascontiguousarray(pos), np.asarray(box, float),
                                        max(d[3] for d in densities), system.molecule_id)
    d = pos[pj] - pos[pi]
    d -= box * np.rint(d / box)
    unit = d / r[:, None]  # from i to j
    rhos, grads = [], []
    for a, b, r_in, r_out in densities:
        w, dw = _step(r, r_in, r_out)
        rho, grad = np.zeros(n), np.zeros((n, 3))
        for x, y, sign in ((pi, pj, -1.0), (pj, pi, 1.0)):  # atom x of species a, neighbour y of b
            m = (species[x] == CODE[a]) & (species[y] == CODE[b])
            np.add.at(rho, x[m], w[m])
            np.add.at(grad, x[m], sign * dw[m, None] * unit[m])  # d rho_x / d x_x
        rhos.append(rho)
        grads.append(grad)
    return rhos, grads


def density_columns(system, bumps, densities=DENSITIES):
    """extra_columns for accumulate: per density, one column per bump (agent forces)."""
    species = system.species

    def columns(pos, box):
        n = len(pos)
        out = []
        for (a, *_), rho, grad, centres in zip(densities, *densities_of(pos, box, system, densities), bumps):
            z = (rho[:, None] - centres[None, :]) / WIDTH
            dphi = -z / WIDTH * np.exp(-0.5 * z**2)  # d bump / d rho
            agent = (species == CODE[a])[:, None]
            cols = -(dphi * agent)[:, None, :] * grad[:, :, None]  # (n, 3, bumps)
            out.append(cols.reshape(3 * n, len(centres)))
        return np.hstack(out)

    return columns


#: three-body angular families: O-O-O angles at an O agent within its first shell, and the
#: hydrogen-bond angle O_donor-H...O_acceptor at an H agent; bumps in cos(angle)
COS_BUMPS = np.arange(-1.0, 1.01, 0.25)
COS_WIDTH = 0.25
SHELL_OO = (0.30, 0.36)
HBOND_HO = (0.20, 0.26)


def _cos_and_gradients(xi, xj, xk):
    """cos of the angle j-i-k and its gradient with respect to x_i (rows are triplets)."""
    u, v = xj - xi, xk - xi
    nu, nv = np.linalg.norm(u, axis=1)[:, None], np.linalg.norm(v, axis=1)[:, None]
    c = np.sum(u * v, axis=1)[:, None] / (nu * nv)
    dj = v / (nu * nv) - c * u / nu**2
    dk = u / (nu * nv) - c * v / nv**2
    return c[:, 0], -(dj + dk), u / nu, v / nv


def angular_columns(system):
    """extra_columns for accumulate: the O-O-O and hydrogen-bond angle families (agent forces)."""
    species, mol = system.species, system.molecules

    def family(n, agent_atoms, xi, xj, xk, wj, dwj, uj, wk, dwk, uk, c, dc):
        z = (c[:, None] - COS_BUMPS[None, :]) / COS_WIDTH
        phi = np.exp(-0.5 * z**2)
        dphi = -z / COS_WIDTH * phi
        W = (wj * wk)[:, None]
        dW = -(dwj * wk)[:, None] * uj - (wj * dwk)[:, None] * uk  # d (w_ij w_ik) / d x_i
        grad = phi[:, None, :] * dW[:, :, None] + (W * dphi)[:, None, :] * dc[:, :, None]  # (t, 3, bumps)
        cols = np.zeros((n, 3, len(COS_BUMPS)))
        np.add.at(cols, agent_atoms, -grad)
        return cols.reshape(3 * n, len(COS_BUMPS))

    def columns(pos, box):
        n = len(pos)
        pi, pj, r = kernels.neighbour_pairs(np.ascontiguousarray(pos), np.asarray(box, float), SHELL_OO[1],
                                            system.molecule_id)
        # O-O-O: directed O-O edges grouped by their first atom, then every pair of edges of a group
        oo = (species[pi] == 0) & (species[pj] == 0)
        a = np.concatenate([pi[oo], pj[oo]])
        b = np.concatenate([pj[oo], pi[oo]])
        order = np.argsort(a, kind="stable")
        a, b = a[order], b[order]
        first, second = [], []
        for s in range(1, 16):  # offsets within a group (a first shell holds well under 16 O)
            same = a[:-s] == a[s:]
            if not same.any():
                break
            first.append(np.flatnonzero(same))
            second.append(np.flatnonzero(same) + s)
        e1, e2 = np.concatenate(first), np.concatenate(second)
        i, j, k = a[e1], b[e1], b[e2]
        xi = pos[i]
        xj = xi + _image(pos[j] - xi, box)
        xk = xi + _image(pos[k] - xi, box)
        c, dc, uj, uk = _cos_and_gradients(xi, xj, xk)
        wj, dwj = _step(np.linalg.norm(xj - xi, axis=1), *SHELL_OO)
        wk, dwk = _step(np.linalg.norm(xk - xi, axis=1), *SHELL_OO)
        ooo = family(n, i, xi, xj, xk, wj, dwj, uj, wk, dwk, uk, c, dc)
        # hydrogen bond: H i, its own O (always counted, weight 1), acceptor O within HBOND_HO
        ho = (species[pi] != species[pj]) & (r < HBOND_HO[1])
        h = np.where(species[pi] == 1, pi, pj)[ho]
        acc = np.where(species[pi] == 1, pj, pi)[ho]
        own = mol[system.molecule_id[h], 0]
        xh = pos[h]
        xd = xh + _image(pos[own] - xh, box)
        xa = xh + _image(pos[acc] - xh, box)
        c, dc, ud, ua = _cos_and_gradients(xh, xd, xa)
        one, zero = np.ones(len(h)), np.zeros(len(h))
        wa, dwa = _step(np.linalg.norm(xa - xh, axis=1), *HBOND_HO)
        hb = family(n, h, xh, xd, xa, one, zero, ud, wa, dwa, ua, c, dc)
        return np.hstack([ooo, hb])

    return columns


def _image(d, box):
    return d - box * np.rint(d / box)


def fit_and_score(run, system, settings, frames, test, extra, groups):
    """Agent fit (both species at once, charges per settings) on `frames`; held-out errors
    and the held-out force each family carries. groups: (name, agent species, columns) of
    the extra columns, in order."""
    pos, frc, box = run.positions, run.forces, run.box_nm
    block = -np.ones(len(pos), np.int64)
    block[frames] = np.arange(len(frames)) * settings.cv_folds // len(frames)
    channels = build_channels(pos[frames], box[frames], system, settings)
    blocks = accumulate(pos, frc, box, system, channels, settings, block, settings.cv_folds, progress=False,
                        extra_columns=extra)
    _, lambdas, _ = solve_cv(blocks, channels, "agent", settings)
    y, _, _ = solve_coupled(blocks, channels, settings, lambdas, mus=(0.0,))
    pred = _predictions(_model_of(y, channels, "agent", settings), pos, box, system, test)
    carried = {}
    if extra is not None:
        edges = np.cumsum([0] + [k for _, _, k in groups])
        coef = y[len(y) - edges[-1]:]
        for f_i, f in enumerate(test):
            cols = extra(pos[f], box[f])
            pred[f_i] += (cols @ coef).reshape(-1, 3)
            for g, (name, a, _) in enumerate(groups):
                part = (cols[:, edges[g]:edges[g + 1]] @ coef[edges[g]:edges[g + 1]]).reshape(-1, 3)
                carried.setdefault(name, []).append(np.sqrt(np.mean(part[system.species == CODE[a]] ** 2)))
    err = force_errors(frc[test], pred, system.species)
    return ({s: round(e["rmse"], 2) for s, e in err.items()},
            {name: round(float(np.mean(v)), 2) for name, v in carried.items()})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=None, help="CP2K run folder (default: the bundled xTB water)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run, system = load_water_run(args.run or example_run_dir())
    settings = FitSettings(charges=True, agent_asymmetry="free")
    block, test = time_split(run.n_frames, settings)
    train = np.flatnonzero(block >= 0)
    bumps = bump_centres(run, system, train[:: max(1, len(train) // 20)])
    families = {
        "+ densities": (density_columns(system, bumps),
                        [(f"{a}:rho_{b}", a, len(c)) for (a, b, *_), c in zip(DENSITIES, bumps)]),
        "+ angles": (angular_columns(system), [("O:O-O-O angle", "O", len(COS_BUMPS)),
                                               ("H:O-H...O angle", "H", len(COS_BUMPS))]),
    }
    cost_ms = {}
    for name, (cols, _) in families.items():
        t0 = time.perf_counter()
        for f in train[:20]:
            cols(run.positions[f], run.box_nm[f])
        cost_ms[name] = round(1000 * (time.perf_counter() - t0) / 20, 2)
    rows = {}
    for n in (10, 30, 100, len(train)):
        frames = train[np.unique(np.round(np.linspace(0, len(train) - 1, n)).astype(int))]
        for name, (cols, groups) in {"pairs + charges": (None, []), **families}.items():
            err, carried = fit_and_score(run, system, settings, frames, test, cols, groups)
            rows.setdefault(name, {})[n] = {"held_out_rmse": err, "held_out_force_carried": carried}
            print(f"{n:4d} frames  {name:16s} held-out RMSE {err}  carried {carried}", flush=True)
    result = {"run": run.project, "test_frames": [int(test[0]), int(test[-1])], "densities": DENSITIES,
              "density_bumps": [c.tolist() for c in bumps], "cos_bumps": COS_BUMPS.tolist(),
              "numpy_ms_per_frame": cost_ms, "rows": rows}
    (out / "manybody.json").write_text(json.dumps(result, indent=1))
    print(f"columns per frame of {len(run.elements)} atoms (numpy, study code): {cost_ms} ms")


if __name__ == "__main__":
    main()
