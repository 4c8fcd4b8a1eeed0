"""Learning-dynamics runs: files, resume after an interruption, blow-up guard."""

import json
from functools import partial

import mdtraj
import numpy as np
import pytest

from openmm_learning.losses.model import LossModel
from openmm_learning.losses.channels import Channel
from openmm_learning.openmm.reporters import SimulationError
from openmm_learning.dynamics import Dynamics, StartFrame
from openmm_learning.openmm.simulate import Reporting, read_state_log, simulate


def run_steps(model, xtb, out, steps):
    run, system = xtb
    return simulate(model, StartFrame.of_run(run, system), Dynamics(300.0, 0.0005, steps), out,
                    reporting=Reporting(50, 100, progress=False))


def test_simulation_writes_trajectory_log_checkpoint_and_resumes(xtb, xtb_models, tmp_path):
    model = xtb_models["reciprocal"]
    first = run_steps(model, xtb, tmp_path, 300)
    assert first.trajectory.exists() and first.checkpoint.exists()
    assert len(mdtraj.load(str(first.trajectory), top=str(tmp_path / "topology.pdb"))) == 6
    # an interrupted run: the log and trajectory went past the last checkpoint
    log_lines = first.log.read_text().splitlines()
    first.log.write_text("\n".join(log_lines + [log_lines[-1].replace("300,", "350,", 1)]) + "\n")
    second = run_steps(model, xtb, tmp_path, 500)
    log = read_state_log(second.log)
    np.testing.assert_array_equal(log["step"], np.arange(50, 501, 50))
    traj = mdtraj.load(str(second.trajectory), top=str(tmp_path / "topology.pdb"))
    assert len(traj) == 10
    assert np.all(np.isfinite(traj.xyz))
    assert 200 < second.mean_temperature < 400
    assert second.seconds_per_step > 0


def test_blow_up_stops_with_last_good_frame(xtb, xtb_models, tmp_path):
    good = xtb_models["reciprocal"]
    # O-O made strongly attractive: the liquid collapses and heats without bound
    channels = [Channel(c.agent, c.neighbour, c.kind, c.x0, c.h,
                        c.values - 4000.0 * (c.x1 - c.grid) if c.key == ("O", "O", "inter") else c.values)
                for c in good.channels]
    bad = LossModel("reciprocal", channels, good.r_cut, good.r_switch, good.k_wall)
    with pytest.raises(SimulationError, match="blew up") as err:
        run_steps(bad, xtb, tmp_path, 4000)
    assert "last_good.pdb" in str(err.value)
    assert (tmp_path / "last_good.pdb").exists()
    frame = mdtraj.load(str(tmp_path / "last_good.pdb"))
    assert np.all(np.isfinite(frame.xyz))


RESUME_SCRIPT = """
import os, signal, sys
import numpy as np
from openmm_learning.losses.model import LossModel
from openmm_learning.openmm import reporters
from openmm_learning.dynamics import Dynamics, StartFrame
from openmm_learning.openmm.simulate import Reporting, simulate
kill_at = int(sys.argv[6])
if kill_at:
    # SIGKILL from inside the run, right after the state log has written step kill_at:
    # the interruption falls between two checkpoints by construction, at any machine speed
    write = reporters.StateLogReporter.write
    def write_then_die(self, row):
        write(self, row)
        if row[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    reporters.StateLogReporter.write = write_then_die
f = np.load(sys.argv[5])
simulate(LossModel.load(sys.argv[1]), StartFrame(f["x"], f["v"], f["box"], f["species"], f["molecules"]),
         Dynamics(300.0, 0.0005, int(sys.argv[3]), seed=5, platform=sys.argv[4]), sys.argv[2],
         reporting=Reporting(20, 100, progress=False))
"""


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
@pytest.mark.parametrize("mode", ["reciprocal", "agent"])
def test_killed_run_resumes_to_the_same_trajectory(xtb, xtb_models, tmp_path, mode, platform):
    """A run killed (SIGKILL) between two checkpoints and resumed gives the trajectory and
    state log of an uninterrupted run, CSVR seeded: bitwise on Reference, to round-off on
    CPU (its threads may sum forces in another order). The run kills itself after logging
    step 160 (checkpoints at 100 and 200), so the test does not depend on timing."""
    import subprocess
    import sys

    steps, kill_at = 240, 160
    model_path = xtb_models[mode].save(tmp_path / "model.json")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run, system = xtb
    frame = tmp_path / "frame.npz"  # the start frame, so that each process need not read the run
    np.savez(frame, x=run.positions[-1], v=run.velocities[-1], box=run.box_nm[-1], species=system.species,
             molecules=system.molecules)
    cmd = [sys.executable, "-c", RESUME_SCRIPT, str(model_path)]
    subprocess.run(cmd + [str(whole), str(steps), platform, str(frame), "0"], check=True)
    died = subprocess.run(cmd + [str(killed), str(steps), platform, str(frame), str(kill_at)])
    assert died.returncode == -9, "the run was not killed"
    assert read_state_log(killed / "state.csv")["step"][-1] == kill_at
    subprocess.run(cmd + [str(killed), str(steps), platform, str(frame), "0"], check=True)
    a, b = read_state_log(whole / "state.csv"), read_state_log(killed / "state.csv")
    # CPU: two uninterrupted runs already differ in the log's 6th digit (single-precision
    # forces summed by threads in varying order)
    same = np.testing.assert_array_equal if platform == "Reference" else partial(
        np.testing.assert_allclose, rtol=1e-5, atol=1e-5)
    for column in a:
        if platform == "CPU" and mode == "reciprocal" and column == "net_force_kJmol_nm":
            # a potential's net force is zero: on CPU the column is single-precision round-off
            assert max(a[column].max(), b[column].max()) < 0.01
            continue
        same(a[column], b[column], err_msg=column)
    ta = mdtraj.load(str(whole / "trajectory.dcd"), top=str(whole / "topology.pdb"))
    tb = mdtraj.load(str(killed / "trajectory.dcd"), top=str(killed / "topology.pdb"))
    same(ta.xyz, tb.xyz)


def _bend_energy_error(model, closing_speed=8.0, steps=400):
    """One molecule in NVE (Verlet, 0.5 fs, Reference) started just inside the angle's
    lower wall with its H atoms closing at `closing_speed` nm/ps each (about 64 kJ/mol of
    bending): the smallest angle reached and the largest |E - E0| (kJ/mol)."""
    import openmm as mm

    from openmm_learning.openmm.forces import create_system

    b, theta = 0.0957, model.term("angle", "H", "O", "H").lower + 0.05
    x = np.array([[0, 0, 0], [b * np.cos(theta / 2), b * np.sin(theta / 2), 0],
                  [b * np.cos(theta / 2), -b * np.sin(theta / 2), 0]]) + 0.65
    v = np.array([[0, 0, 0], [0, -closing_speed, 0], [0, closing_speed, 0]], float)
    masses = np.array([15.999, 1.008, 1.008])
    v -= (masses[:, None] * v).sum(axis=0) / masses.sum()
    integrator = mm.VerletIntegrator(0.0005)
    context = mm.Context(create_system(model, [0, 1, 1], [[0, 1, 2]], [1.3] * 3), integrator,
                         mm.Platform.getPlatformByName("Reference"))
    context.setPositions(x)
    context.setVelocities(v)
    energies, angles = [], []
    for _ in range(steps):
        state = context.getState(getEnergy=True, getPositions=True)
        energies.append((state.getPotentialEnergy() + state.getKineticEnergy())._value)
        p = state.getPositions(asNumpy=True)._value
        u, w = p[1] - p[0], p[2] - p[0]
        angles.append(np.arccos(u @ w / np.linalg.norm(u) / np.linalg.norm(w)))
        integrator.step(1)
    energies = np.array(energies)
    return min(angles), float(np.max(np.abs(energies - energies[0])))


def test_a_bend_into_the_angle_walls_conserves_energy(xtb_models):
    """The angle's walls are as stiff for an H as the distance walls (k_wall per nm^2 times
    the 0.1 nm lever), so Verlet at 0.5 fs bounces a fast bend off them and keeps the
    energy. Planted: walls 100x stiffer (what the angle had with k_wall per rad^2: a ~1 fs
    period) break the integration, as a 1 ns run of a learned model did once."""
    from dataclasses import replace

    model = xtb_models["reciprocal"]
    smallest, error = _bend_energy_error(model)
    assert smallest < model.term("angle", "H", "O", "H").lower - 0.05, "the bend did not reach the wall"
    assert error < 10.0  # Verlet's own error at 0.5 fs for this violent a bend (0.5 at 0.25 fs)
    _, planted = _bend_energy_error(replace(model, k_wall=100 * model.k_wall))
    assert not planted < 1000.0


#: bound on each kind of motion's mean kinetic temperature against the target (K) over a
#: 5 ps run of 64 waters: the default agent model's steady state runs its vibration 20-25 K
#: cold (README), one run's mean scatters by about 10 K
KIND_BOUND_K = 40.0


def kind_temperatures(model, xtb, out, ps):
    """Mean kinetic temperature (K) of each kind of motion over `ps` of learning dynamics
    at the example's settings: 64 waters, 300 K, 0.5 fs, CSVR, after 2 ps of Langevin."""
    from openmm_learning.io.topology import KINETIC_KINDS

    run, system = xtb
    result = simulate(model, StartFrame.of_run(run, system, velocities=False),
                      Dynamics(300.0, 0.0005, int(ps / 0.0005), equilibration_ps=2.0, seed=2), out,
                      reporting=Reporting(100, 10000, progress=False))
    log = read_state_log(result.log)
    return {kind: float(np.mean(log[f"T_{kind}_K"])) for kind in KINETIC_KINDS}


def test_default_agent_model_keeps_every_kind_of_motion_near_the_target(xtb, xtb_models, tmp_path):
    """The agent model as `fit` writes it (asymmetry penalty and range, point charges),
    fitted on every 4th bundled xTB frame, run at the example's settings: every kind of
    motion within KIND_BOUND_K of 300 K. Planted: the paper's free agents (no penalty, no
    charges; fitted on the same frames), which pump heat into O and molecular translation,
    fail the same bound."""
    from openmm_learning.losses.fit import FitSettings, fit_modes

    run, system = xtb
    idx = np.arange(0, run.n_frames, 4)
    fitted = fit_modes(run.positions[idx], run.forces[idx], run.box_nm[idx], system, ("agent",),
                       settings=FitSettings(), progress=False)["agent"].model
    assert fitted.asymmetry_range is not None and fitted.charge_h is not None
    temps = kind_temperatures(fitted, xtb, tmp_path / "default", 5.0)
    print("default agent model, kinetic temperatures (K):", {k: round(v) for k, v in temps.items()})
    assert all(abs(t - 300.0) < KIND_BOUND_K for t in temps.values()), temps
    hot = kind_temperatures(xtb_models["agent"], xtb, tmp_path / "free", 2.0)  # free agents, same frames
    print("free agents, kinetic temperatures (K):", {k: round(v) for k, v in hot.items()})
    assert max(abs(t - 300.0) for t in hot.values()) > KIND_BOUND_K, hot


def test_rows_of_a_langevin_reference_run_at_its_friction(xtb, xtb_models, tmp_path):
    """The validation's rows run under the reference's protocol: against the bundled
    Langevin run (GAMMA 0.01/fs) Langevin dynamics at 10/ps with its masses and step, which
    summary.json records and the velocity recordings' integrator repeats; against a CSVR
    run (planted: the other protocol) the model's CSVR."""
    from openmm_learning.io.water_run import example_run_dir, load_water_run
    from openmm_learning.openmm.integrator import LearningIntegrator
    from openmm_learning.pipeline.runs import simulate_stage

    model = tmp_path / "reciprocal.json"
    xtb_models["reciprocal"].save(model)
    run, system = load_water_run(example_run_dir("water64-xtb-langevin-300K"))
    simulate_stage("r", model, run, system, tmp_path / "langevin", Dynamics.from_run(run, 0.15, equilibration_ps=0.0),
                   progress=False)
    summary = json.loads((tmp_path / "langevin" / "summary.json").read_text())
    assert summary["thermostat"] == "langevin" and summary["friction_per_ps"] == pytest.approx(10.0)
    assert summary["hydrogen_mass_amu"] == 4.0 and summary["timestep_ps"] == pytest.approx(0.0015)
    integrator = LearningIntegrator.of(Dynamics.from_summary(summary), system.species)
    assert integrator.getGlobalVariableByName("fric") == pytest.approx(10.0)
    simulate_stage("r", model, *xtb, tmp_path / "csvr", Dynamics.from_run(xtb[0], 0.01, equilibration_ps=0.0),
                   progress=False)
    summary = json.loads((tmp_path / "csvr" / "summary.json").read_text())
    assert summary["thermostat"] == "csvr" and summary["friction_per_ps"] is None


def test_a_heavy_hydrogen_run_keeps_its_masses(xtb, xtb_models, tmp_path):
    """A learned model run from the bundled Langevin reference at its 1.5 fs step with its
    4 amu hydrogen (pipeline.runs.simulate_run takes both from the CP2K input): the recorded
    summary says so and the H atoms' kinetic temperature, computed with the System's
    masses, sits at 300 K. Planted: a run with standard masses records 1.008 amu."""
    from openmm_learning.io.water_run import example_run_dir
    from openmm_learning.pipeline.runs import simulate_run

    model = tmp_path / "reciprocal.json"
    xtb_models["reciprocal"].save(model)
    simulate_run(model, example_run_dir("water64-xtb-langevin-300K"), tmp_path / "heavy", ps=0.6,
                 dynamics={"equilibration_ps": 0.3}, progress=False)
    summary = json.loads((tmp_path / "heavy" / "summary.json").read_text())
    assert summary["hydrogen_mass_amu"] == 4.0 and summary["timestep_ps"] == pytest.approx(0.0015)
    assert 240 < np.mean(read_state_log(tmp_path / "heavy" / "state.csv")["T_H_K"]) < 360
    light = run_steps(xtb_models["reciprocal"], xtb, tmp_path / "light", 20)
    assert json.loads((light.out_dir / "summary.json").read_text())["hydrogen_mass_amu"] == pytest.approx(1.00794)
