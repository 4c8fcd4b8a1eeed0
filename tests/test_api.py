"""The OpenMM API (LearnedWater, reporters): topologies in any atom order, units, the README example."""

import re
from pathlib import Path

import numpy as np
import openmm as mm
import pytest
from openmm import app, unit

from openmm_learning import LearnedWater, example_pdb
from openmm_learning.io.topology import TopologyError
from openmm_learning.openmm.api import box_of, replicate
from openmm_learning.openmm.integrator import agent_forces
from openmm_learning.openmm.reporters import StateLogReporter
from openmm_learning.openmm.simulate import read_state_log

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    block = re.search(r"<!-- tested: tests/test_api.py -->\n```python\n(.*?)```", text, re.S)
    assert block, "README lost its tested OpenMM example"
    return block.group(1)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["agent", "reciprocal"])
def test_readme_example_runs(xtb_models, tmp_path, monkeypatch, mode):
    """The README block as written: only the model path and the step count change."""
    path = xtb_models[mode].save(tmp_path / f"{mode}.json")
    code = readme_example()
    assert code.count('"output/fit/agent.json"') == 1 and code.count("simulation.step(20000)") == 1
    code = code.replace('"output/fit/agent.json"', repr(str(path))).replace("simulation.step(20000)",
                                                                           "simulation.step(400)")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    log = read_state_log(tmp_path / "state.csv")
    assert len(log["step"]) == 0  # reports every 1000 steps: none in 400
    code = code.replace("1000", "100")
    exec(compile(code, "README.md", "exec"), {})
    log = read_state_log(tmp_path / "state.csv")
    np.testing.assert_array_equal(log["step"], [100, 200, 300, 400])
    assert np.all(np.isfinite(log["temperature_K"])) and np.all(log["temperature_K"] > 100)
    assert (tmp_path / "trajectory.dcd").stat().st_size > 0


@pytest.mark.slow
def test_readme_dynamics_example_runs(xtb_models, tmp_path, monkeypatch):
    """The README's Dynamics block as written, shorter: the Langevin reference's protocol
    (its friction, 1.5 fs step and 4 amu hydrogen) reaches summary.json."""
    import json

    text = README.read_text()
    block = re.search(r"<!-- tested: tests/test_api.py \(dynamics\) -->\n```python\n(.*?)```", text, re.S)
    assert block, "README lost its tested Dynamics example"
    code = block.group(1)
    path = xtb_models["reciprocal"].save(tmp_path / "reciprocal.json")
    assert code.count('"output/fit/reciprocal.json"') == 1 and code.count("(run, 10.0, equilibration_ps=2.0)") == 1
    code = code.replace('"output/fit/reciprocal.json"', repr(str(path)))
    code = code.replace("(run, 10.0, equilibration_ps=2.0)", "(run, 0.3, equilibration_ps=0.03)")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    summary = json.loads((tmp_path / "run-1" / "summary.json").read_text())
    assert summary["thermostat"] == "langevin" and summary["friction_per_ps"] == pytest.approx(10.0)
    assert summary["hydrogen_mass_amu"] == 4.0 and summary["steps"] == 200
    assert 200 < summary["mean_temperature"] < 400


def shuffled_topology(pdb):
    """The same water with H, O, H order in every residue and residues reversed."""
    top = app.Topology()
    chain = top.addChain()
    old = list(pdb.topology.atoms())
    order = []
    for res in reversed(list(pdb.topology.residues())):
        r = top.addResidue("HOH", chain)
        o, h1, h2 = list(res.atoms())
        for atom in (h2, o, h1):
            top.addAtom(atom.name, atom.element, r)
            order.append(atom.index)
    top.setPeriodicBoxVectors(pdb.topology.getPeriodicBoxVectors())
    positions = np.array(pdb.positions.value_in_unit(unit.nanometer))[order]
    assert len(order) == len(old)
    return top, positions, np.array(order)


@pytest.mark.parametrize("mode", ["agent", "reciprocal"])
def test_forces_do_not_depend_on_atom_order(xtb_models, mode):
    pdb = app.PDBFile(str(example_pdb()))
    water = LearnedWater(xtb_models[mode])
    forces = []
    for top, pos, order in [(pdb.topology, np.array(pdb.positions.value_in_unit(unit.nanometer)), None),
                            shuffled_topology(pdb)]:
        system = water.createSystem(top)
        integ = water.createIntegrator(top, 300 * unit.kelvin, 0.5 * unit.femtosecond)
        ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(pos)
        species = np.array([0 if a.element.symbol == "O" else 1 for a in top.atoms()])
        f = agent_forces(ctx, mode, species)
        if order is not None:
            back = np.empty_like(f)
            back[order] = f
            f = back
        forces.append(f)
    np.testing.assert_allclose(forces[1], forces[0], rtol=0, atol=1e-9 * np.abs(forces[0]).max())


def test_integrator_takes_units_or_numbers(xtb_models):
    pdb = app.PDBFile(str(example_pdb()))
    water = LearnedWater(xtb_models["reciprocal"])
    a = water.createIntegrator(pdb.topology, 300 * unit.kelvin, 0.5 * unit.femtosecond, 50 * unit.femtosecond)
    b = water.createIntegrator(pdb.topology, 300.0, 0.0005, 0.05)
    assert a.getStepSize() == b.getStepSize() and a.collision_time_ps == pytest.approx(b.collision_time_ps)


def test_agent_system_refuses_another_integrator(xtb_models, tmp_path):
    pdb = app.PDBFile(str(example_pdb()))
    water = LearnedWater(xtb_models["agent"])
    sim = app.Simulation(pdb.topology, water.createSystem(pdb.topology), mm.VerletIntegrator(0.0005))
    sim.context.setPositions(pdb.positions)
    sim.reporters.append(StateLogReporter(tmp_path / "state.csv", 10))
    with pytest.raises(ValueError, match="LearningIntegrator"):
        sim.step(10)
    # the reciprocal System runs under any integrator
    rec = LearnedWater(xtb_models["reciprocal"])
    sim = app.Simulation(pdb.topology, rec.createSystem(pdb.topology), mm.VerletIntegrator(0.0005))
    sim.context.setPositions(pdb.positions)
    sim.reporters.append(StateLogReporter(tmp_path / "state2.csv", 10))
    sim.step(10)


def test_clear_errors_for_what_cannot_run(xtb_models):
    water = LearnedWater(xtb_models["reciprocal"])
    pdb = app.PDBFile(str(example_pdb()))
    small = app.Topology()
    chain = small.addChain()
    for res in list(pdb.topology.residues())[:8]:
        r = small.addResidue("HOH", chain)
        for atom in res.atoms():
            small.addAtom(atom.name, atom.element, r)
    small.setPeriodicBoxVectors([mm.Vec3(0.62, 0, 0), mm.Vec3(0, 0.62, 0), mm.Vec3(0, 0, 0.62)] * unit.nanometer)
    with pytest.raises(ValueError, match="periodic replica"):
        water.createSystem(small)
    positions = np.array(pdb.positions.value_in_unit(unit.nanometer))[:24]
    big, big_positions = replicate(small, positions, 2)
    assert big.getNumAtoms() == 8 * 24 and np.allclose(box_of(big), 1.24)
    system = water.createSystem(big)  # runs now: 1.24 nm >= 2 x 0.6 nm
    assert system.getNumParticles() == 192 and len(big_positions) == 192
    small.setPeriodicBoxVectors(None)
    with pytest.raises(ValueError, match="no periodic box"):
        water.createSystem(small)
    ion = app.Topology()
    res = ion.addResidue("NA", ion.addChain())
    ion.addAtom("NA", app.element.sodium, res)
    with pytest.raises(TopologyError, match="water only"):
        water.createSystem(ion)
