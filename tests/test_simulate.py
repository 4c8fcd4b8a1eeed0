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
