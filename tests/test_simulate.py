"""Learning-dynamics runs: files, resume after an interruption, blow-up guard."""

import mdtraj
import numpy as np
import pytest

from openmm_learning.losses.model import Channel, LossModel
from openmm_learning.openmm.reporters import SimulationError
from openmm_learning.openmm.simulate import read_state_log, simulate


def run_steps(model, xtb, out, steps, **kw):
    run, system = xtb
    return simulate(model, run.positions[-1], run.velocities[-1], run.box_nm[-1], system.species,
                    system.molecules, temperature_k=300.0, timestep_ps=0.0005, steps=steps,
                    out_dir=out, report_interval=50, checkpoint_interval=100, progress=False, **kw)


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
import sys
from openmm_learning.io.water_run import example_run_dir, load_water_run
from openmm_learning.losses.model import LossModel
from openmm_learning.openmm.simulate import simulate
run, system = load_water_run(example_run_dir("water64-xtb-300K"))
simulate(LossModel.load(sys.argv[1]), run.positions[-1], run.velocities[-1], run.box_nm[-1], system.species,
         system.molecules, temperature_k=300.0, timestep_ps=0.0005, steps=int(sys.argv[3]), out_dir=sys.argv[2],
         report_interval=20, checkpoint_interval=100, progress=False, platform="Reference", seed=5)
"""


@pytest.mark.parametrize("mode", ["reciprocal", "agent"])
def test_killed_run_resumes_to_the_same_trajectory(xtb, xtb_models, tmp_path, mode):
    """A run killed (SIGKILL) after its first checkpoint and resumed gives bitwise the
    trajectory and state log of an uninterrupted run: Reference platform, CSVR seeded."""
    import subprocess
    import sys
    import time

    steps = 240
    model_path = xtb_models[mode].save(tmp_path / "model.json")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    cmd = [sys.executable, "-c", RESUME_SCRIPT, str(model_path)]
    subprocess.run(cmd + [str(whole), str(steps)], check=True)
    proc = subprocess.Popen(cmd + [str(killed), str(steps)])
    deadline = time.time() + 300
    while not (killed / "checkpoint.chk").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere between two checkpoints
    proc.kill()
    proc.wait()
    done = read_state_log(killed / "state.csv")["step"]
    assert 0 < done[-1] < steps, "the run was not stopped mid-way"
    subprocess.run(cmd + [str(killed), str(steps)], check=True)
    a, b = read_state_log(whole / "state.csv"), read_state_log(killed / "state.csv")
    for column in a:
        np.testing.assert_array_equal(a[column], b[column], err_msg=column)
    ta = mdtraj.load(str(whole / "trajectory.dcd"), top=str(whole / "topology.pdb"))
    tb = mdtraj.load(str(killed / "trajectory.dcd"), top=str(killed / "topology.pdb"))
    np.testing.assert_array_equal(ta.xyz, tb.xyz)
