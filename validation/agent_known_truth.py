"""A known truth for agent dynamics: constant O-H asymmetry (Ivlev et al., Phys. Rev. X 5,
011035, 2015). A study, not a test: the temperature ratio needs long runs.

Take a reciprocal model and let every O-H coupling (the O-H pair and bond, the angle) act
on O with weight 1 + D and on H with 1 - D, the O-O and H-H channels unchanged. Such agent
dynamics is Hamiltonian dynamics of

    U = (O-H terms) + (O-O terms)/(1 + D) + (H-H terms)/(1 - D)

with masses m_O/(1 + D) and m_H/(1 - D): it conserves the pseudo-Hamiltonian
K_O/(1 + D) + K_H/(1 - D) + U, and its equilibrium has T_O/T_H = (1 + D)/(1 - D).
`tests/test_agent_known_truth.py` checks that the agent System and the learning
integrator retrace the pseudo-Hamiltonian system's trajectory; this study measures the
temperature ratio: the reciprocal model fitted on the bundled xTB run (no charges, which
act on every atom alike; with its walls, which are not scaled with their channels and so
break the construction where an invariant leaves its fitted range), 64 waters,
`--runs` independent runs, each `--langevin-ps` of Langevin at T (1 + D) on O and T (1 - D)
on H (the pseudo-system's canonical ensemble), then `--ps` of NVE under the learning
integrator. Also D = 0, and a planted r-dependent weight (no pseudo-Hamiltonian).

    python validation/agent_known_truth.py [--out validation/results/agent-known-truth.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import openmm as mm
from numpy.polynomial import chebyshev
from tqdm import tqdm

from openmm_learning.io.atomic import write_json_atomic
from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.losses.fit import FitSettings, chebyshev_model, fit_modes
from openmm_learning.openmm.forces import ANTISYMMETRIC_GROUP, SHARED_GROUP, create_system
from openmm_learning.openmm.integrator import LearningIntegrator
from openmm_learning.units import KB_KJMOL_K

T_K = 300.0
DT_PS = 0.0005
REPORT_STEPS = 20


def weight(key, d):
    """The weight of a channel of agent `key[0]` in the constant-asymmetry model."""
    agent, neighbour, kind = key
    if agent == "O" and (neighbour == "H" or kind == "angle"):
        return 1 + d
    if agent == "H" and (neighbour == "O" or kind == "angle"):
        return 1 - d
    return 1.0


def scaled(model, mode, scale, walls=False):
    """`model` in `mode` with every channel's values times scale(key), no charges. Without
    walls the scaling is exact everywhere (a wall is not scaled with its channel); long
    runs need them (without, pairs that pass a channel's lower end may collapse)."""
    k_wall = model.k_wall if walls else 0.0
    return dataclasses.replace(model, mode=mode, k_wall=k_wall, charge_h=None, asymmetry_range=None, channels=[
        dataclasses.replace(c, values=c.values * scale(c.key)) for c in model.channels])


def without_momentum_removal(system):
    """Agent forces with D != 0 do not conserve momentum, only the pseudo-momentum."""
    for i in reversed(range(system.getNumForces())):
        if isinstance(system.getForce(i), mm.CMMotionRemover):
            system.removeForce(i)
    return system


def constant_asymmetry_systems(reciprocal, species, molecules, box, d, planted=None, walls=False):
    """(agent System, pseudo-Hamiltonian System with the scaled masses). planted(channel):
    new values for O's view of the intermolecular O-H pair (an r-dependent asymmetry)."""
    agent = scaled(reciprocal, "agent", lambda key: weight(key, d), walls)
    if planted is not None:
        agent.channels = [dataclasses.replace(c, values=planted(c)) if c.key == ("O", "H", "inter")
                          else c for c in agent.channels]
    pseudo = scaled(reciprocal, "reciprocal",
                    lambda key: {("O", "O"): 1 / (1 + d), ("H", "H"): 1 / (1 - d)}.get(key[:2], 1.0), walls)
    agent_system = without_momentum_removal(create_system(agent, species, molecules, box))
    pseudo_system = without_momentum_removal(create_system(pseudo, species, molecules, box))
    for i, s in enumerate(species):
        m = pseudo_system.getParticleMass(i)._value
        pseudo_system.setParticleMass(i, m / (1 + d) if s == 0 else m / (1 - d))
    return agent_system, pseudo_system


def pseudo_hamiltonian(energy: mm.Context, state, masses, species, d) -> float:
    """K_O/(1 + D) + K_H/(1 - D) + U (kJ/mol) at a state of the agent run; energy: a
    Context of the pseudo-Hamiltonian System, whose potential is U."""
    energy.setPositions(state.getPositions())
    v = state.getVelocities(asNumpy=True)._value
    scale = np.where(np.asarray(species) == 0, 1 + d, 1 - d)
    kinetic = 0.5 * np.sum(masses[:, None] * v**2 / scale[:, None])
    return kinetic + energy.getState(getEnergy=True).getPotentialEnergy()._value


def species_langevin(species, d, friction_per_ps=5.0):
    """BAOAB Langevin applying the agent forces, O at T (1 + D) and H at T (1 - D)."""
    integ = mm.CustomIntegrator(DT_PS)
    integ.addGlobalVariable("a", float(np.exp(-DT_PS * friction_per_ps)))
    for name in ("sign", "kTa", "fa"):
        integ.addPerDofVariable(name, 0.0)
    integ.addUpdateContextState()

    def force():
        integ.addComputePerDof("fa", f"f{SHARED_GROUP}")
        integ.addComputePerDof("fa", f"fa + sign*f{ANTISYMMETRIC_GROUP}")

    force()
    integ.addComputePerDof("v", "v + 0.5*dt*fa/m")
    integ.addComputePerDof("x", "x + 0.5*dt*v")
    integ.addComputePerDof("v", "a*v + sqrt((1 - a*a)*kTa/m)*gaussian")
    integ.addComputePerDof("x", "x + 0.5*dt*v")
    force()
    integ.addComputePerDof("v", "v + 0.5*dt*fa/m")
    sign = 1.0 - 2.0 * np.asarray(species, float)
    kta = KB_KJMOL_K * T_K * (1 + d * sign)
    integ.setPerDofVariableByName("sign", [mm.Vec3(s, s, s) for s in sign])
    integ.setPerDofVariableByName("kTa", [mm.Vec3(k, k, k) for k in kta])
    return integ


def one_run(reciprocal, run, system, d, seed, langevin_ps, ps, planted=None) -> dict:
    """Per-species Langevin, then NVE: mean T_O, T_H, their ratio, and the pseudo-Hamiltonian's drift."""
    species = system.species
    agent_system, pseudo_system = constant_asymmetry_systems(reciprocal, species, system.molecules,
                                                             run.box_nm[-1], d, planted, walls=True)
    masses = np.array([agent_system.getParticleMass(i)._value for i in range(len(species))])
    langevin = species_langevin(species, d)
    langevin.setRandomNumberSeed(seed)
    nve = LearningIntegrator(T_K, DT_PS, agent_species=species, thermostat="none")
    both = mm.CompoundIntegrator()
    both.addIntegrator(langevin)
    both.addIntegrator(nve)
    cpu = mm.Platform.getPlatformByName("CPU")
    context = mm.Context(agent_system, both, cpu)
    energy = mm.Context(pseudo_system, mm.VerletIntegrator(DT_PS), cpu)
    context.setPositions(run.positions[-1])
    context.setVelocitiesToTemperature(T_K, seed)
    both.setCurrentIntegrator(0)
    both.step(int(round(langevin_ps / DT_PS)))
    both.setCurrentIntegrator(1)
    o = species == 0
    rows = []
    for _ in range(int(round(ps / DT_PS)) // REPORT_STEPS):
        both.step(REPORT_STEPS)
        state = context.getState(getPositions=True, getVelocities=True)
        v = state.getVelocities(asNumpy=True)._value
        twice_kinetic = masses[:, None] * v**2
        rows.append((twice_kinetic[o].sum() / (3 * o.sum() * KB_KJMOL_K),
                     twice_kinetic[~o].sum() / (3 * (~o).sum() * KB_KJMOL_K),
                     pseudo_hamiltonian(energy, state, masses, species, d)))
    r = np.array(rows)
    t = np.arange(len(r)) * REPORT_STEPS * DT_PS
    return {"seed": seed, "T_O": float(r[:, 0].mean()), "T_H": float(r[:, 1].mean()),
            "ratio": float(r[:, 0].mean() / r[:, 1].mean()),
            "pseudo_hamiltonian_drift_kJmol_per_ps": float(np.polyfit(t, r[:, 2], 1)[0]),
            "pseudo_hamiltonian_std_kJmol": float(r[:, 2].std())}


def summary(runs: list[dict], d: float) -> dict:
    ratios = np.array([x["ratio"] for x in runs])
    return {"D": d, "predicted_ratio": (1 + d) / (1 - d), "ratio_mean": float(ratios.mean()),
            "ratio_standard_error": float(ratios.std(ddof=1) / np.sqrt(len(ratios))),
            "drift_mean_kJmol_per_ps": float(np.mean([x["pseudo_hamiltonian_drift_kJmol_per_ps"] for x in runs])),
            "runs": runs}


def table_rows(result: dict) -> list[str]:
    """validation/README.md's table: per case, T_O/T_H with its standard error over the
    runs, the prediction, and the pseudo-Hamiltonian's mean drift."""
    rows = []
    for name, c in result["cases"].items():
        rows.append(f"| {name} | {c['ratio_mean']:.3f} ± {c['ratio_standard_error']:.3f} ({len(c['runs'])} runs) "
                    f"| {c['predicted_ratio']:.3f} | {c['drift_mean_kJmol_per_ps']:+.3f} |")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--langevin-ps", type=float, default=5.0)
    ap.add_argument("--ps", type=float, default=20.0)
    ap.add_argument("--d", type=float, default=0.1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "agent-known-truth.json")
    args = ap.parse_args(argv)
    run, system = load_water_run(example_run_dir("water64-xtb-300K"))
    idx = np.arange(0, run.n_frames, 4)
    fitted = fit_modes(run.positions[idx], run.forces[idx], run.box_nm[idx], system, ("reciprocal",),
                       settings=FitSettings(charges=False), progress=False)["reciprocal"].model
    reciprocal = chebyshev_model(fitted, run.positions[idx], run.box_nm[idx], system)
    cases = {f"D = {args.d:g}": (args.d, None), "D = 0": (0.0, None),
             f"D = {args.d:g}, planted: O's O-H pair series f times 1 + 0.1 u (u = 2w - 1 its variable)":
                 (args.d, lambda c: c.values + 0.1 * chebyshev.chebmulx(c.values)[:len(c.values)])}
    result = {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "cases": {}}
    with tqdm(total=len(cases) * args.runs, desc="constant-D runs", unit="run") as bar:
        for name, (d, planted) in cases.items():
            runs = []
            for seed in range(1, args.runs + 1):
                runs.append(one_run(reciprocal, run, system, d, seed, args.langevin_ps, args.ps, planted))
                bar.update()
            result["cases"][name] = summary(runs, d)
            write_json_atomic(args.out, result)  # kept after every case: nothing lost if stopped
    for name, s in result["cases"].items():
        print(f"{name}: T_O/T_H {s['ratio_mean']:.4f} +- {s['ratio_standard_error']:.4f} "
              f"(predicted {s['predicted_ratio']:.4f}), pseudo-Hamiltonian drift {s['drift_mean_kJmol_per_ps']:+.3f} "
              f"kJ/mol/ps")
    print(json.dumps({"wrote": str(args.out)}))


if __name__ == "__main__":
    main()
