"""The simulate step: learning dynamics from frames of a CP2K run, in OpenMM (a box of at
least twice the cutoff) or LAMMPS (the CP2K cell itself when it is smaller), each run in
a folder of its own (io.run_folder.RunFolder), resumed or skipped when done; many runs side
by side in worker processes."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..dynamics import Dynamics, StartFrame
from ..io import Cp2kRun
from ..io.atomic import write_json_atomic
from ..io.run_folder import RunFolder
from ..io.topology import KINETIC_KINDS, WaterSystem
from ..io.water_run import load_water_run, trajectory_of
from ..losses.model import LossModel
from ..openmm.reporters import SimulationError
from ..validation.comparisons import light_water
from .fit import say_replica
from .plan import ValidationPlan
from .stages import STAMP, loaded_model, say, stage_done, write_stamp


def simulate_run(model_path, run_dir, out_dir, *, ps: float, frame: int = -1, dynamics: dict | None = None,
                 committee=None, allow_truncated=False, progress=True):
    """Learning dynamics of a model from one frame of a CP2K run (`openmm-learning simulate`),
    at the run's state and masses (a heavy-hydrogen run's H mass goes with its long step),
    after Langevin equilibration (CP2K frames of global-thermostat runs are out of
    equipartition, which a global thermostat would keep). dynamics: Dynamics.from_run's
    choices (thermostat, default CSVR with the run's own time constant when it used CSVR;
    collision_time_ps, equilibration_ps, seed, platform). committee: an
    openmm.simulate.CommitteeWatch."""
    from ..openmm.simulate import Reporting, simulate

    model = LossModel.load(model_path)
    run, water = load_water_run(run_dir, allow_truncated, r_cut=model.r_cut)
    say_replica(run, progress)
    spec = Dynamics.from_run(run, ps, mode=model.mode, **{"thermostat": "csvr", **(dynamics or {})})
    return simulate(model, StartFrame.of_run(run, water, frame), spec, out_dir,
                    reporting=Reporting(progress=progress), committee=committee)


def _stamp(model_sha, run: Cp2kRun, frame: int, dynamics: Dynamics, report_interval: int) -> dict:
    """What a run's folder was made from: a folder made from other inputs runs again."""
    return {"model_sha256": model_sha, "project": run.project, "start_step": int(run.steps[frame]),
            "temperature_K": dynamics.temperature_k, "timestep_ps": dynamics.timestep_ps,
            "report_interval": report_interval, "seed": dynamics.seed, "equilibration_ps": dynamics.equilibration_ps,
            "masses_amu": dynamics.masses_amu, "friction_per_ps": dynamics.friction_per_ps}


def simulate_stage(name, model_path, run: Cp2kRun, water: WaterSystem, out: Path, dynamics: Dynamics, *,
                   frame=-1, report_interval=100, progress=True):
    """OpenMM dynamics of a model (or the SPC/Fw baseline when model_path is None) from a
    frame of the reference, with velocities drawn at the temperature and the dynamics'
    Langevin equilibration first (Dynamics.from_run: the reference's protocol, its masses,
    timestep and, for a Langevin reference, its friction); resumes from the folder's checkpoint."""
    from ..openmm.simulate import Reporting, simulate
    from ..openmm.spcfw import spcfw_system

    frame = frame % run.n_frames
    model, sha = loaded_model(model_path) if model_path else (None, "SPC/Fw")
    stamp = _stamp(sha, run, frame, dynamics, report_interval)
    if (out / STAMP).exists() and not stage_done(out, stamp):
        say(progress, f"{name}: {out} was made from other inputs; starting it again")
        shutil.rmtree(out)
    write_stamp(out, stamp)
    extra = {} if model else {"system": spcfw_system(len(water.molecules), run.box_nm[frame]), "name": name}
    return simulate(model, StartFrame.of_run(run, water, frame, velocities=False), dynamics, out,
                    reporting=Reporting(report_interval, progress=progress), **extra)


#: LAMMPS errors that mean the dynamics blew up, not that the deck or the installation is wrong
LAMMPS_BLOW_UPS = ("Lost atoms", "Out of range atoms", "Bond atoms missing", "Angle atoms missing",
                   "Non-numeric atom coords", "Pair distance < table inner cutoff", "Bond length < table inner cutoff")


def lammps_stage(name, model_path, run: Cp2kRun, water: WaterSystem, out: Path, dynamics: Dynamics, *,
                 frame=-1, report_interval=100, progress=True):
    """Dynamics of a model in LAMMPS in the CP2K cell itself: a box under twice the cutoff
    (`run.replica` > 1), which OpenMM could only run as a larger replica, a different
    system; LAMMPS's ghost atoms hold every image within the cutoff. Under the dynamics
    (the reference's protocol), after its Langevin equilibration. Written as
    simulate_stage writes a run, so that validation.rows.row_of reads it: trajectory.dcd and
    topology.pdb of the cell's periodic replica (analysed as the reference is), state.csv
    with the temperatures of the cell's own atoms, summary.json. Agent-mode models run in
    lammps_plugin.agent (the lammps Python module)."""
    from lammps_plugin.run import run_lammps
    from lammps_plugin.writer import DeckOptions, write_deck

    frame = frame % run.n_frames
    n = run.n_atoms // run.replica**3
    cell = run.box_nm[frame] / run.replica
    stamp = {**_stamp(loaded_model(model_path)[1], run, frame, dynamics, report_interval), "engine": "LAMMPS",
             "ps": dynamics.steps * dynamics.timestep_ps}
    if stage_done(out, stamp, RunFolder(out).summary.name):
        return
    if out.exists():
        shutil.rmtree(out)  # LAMMPS runs do not resume: an unfinished one starts again
    write_stamp(out, stamp)
    start = StartFrame(run.positions[frame][:n], None, cell, water.species[:n], water.molecules[: n // 3])
    files = write_deck(out / "lammps", model_path, start, dynamics,
                       DeckOptions(thermo_every=report_interval, dump_every=report_interval,
                                   source=f"CP2K {run.project} step {int(run.steps[frame])}"))
    say(progress, f"{name}: LAMMPS in the {' x '.join(f'{b:.4f}' for b in cell)} nm CP2K cell, {out}")
    t0 = time.perf_counter()
    try:
        run_lammps(files.deck)
    except RuntimeError as e:  # atoms flying apart is a result about the model (stability.blow_ups)
        if any(w in str(e) for w in LAMMPS_BLOW_UPS):
            raise SimulationError(f"{name}: LAMMPS run in {files.folder} blew up: {str(e).splitlines()[-1]}") from e
        raise
    seconds = (time.perf_counter() - t0) / (dynamics.steps + dynamics.equilibration_steps)
    _lammps_as_run(files.folder / "trajectory.lammpstrj", run, RunFolder(out), dynamics,
                   {"engine": "LAMMPS", "name": name, "mode": loaded_model(model_path)[0].mode,
                    "seconds_per_step": seconds, "cell_nm": [float(b) for b in cell], "temperature_atoms": n})


def _lammps_as_run(dump_path, run: Cp2kRun, out: RunFolder, dynamics: Dynamics, summary: dict):
    """A LAMMPS trajectory dump of the CP2K cell written as an OpenMM run's folder."""
    from lammps_plugin.run import read_trajectory_dump
    from lammps_plugin.writer import lammps_units

    from ..io.topology import kinetic_temperatures
    from ..openmm.reporters import StateLogReporter

    n, u = summary["temperature_atoms"], lammps_units("real")
    dump = read_trajectory_dump(dump_path)
    x, v = dump["positions"] / u.length, dump["velocities"] / u.velocity  # nm, nm/ps
    masses = np.array([dynamics.masses_amu[e] for e in np.array(run.elements[:n])])
    cell = np.asarray(summary["cell_nm"])
    kinds = kinetic_temperatures(x, v, masses, cell)
    times = dump["step"] * dynamics.timestep_ps
    log = {"step": dump["step"], "time_ps": times, "temperature_K": kinds["total"],
           "kinetic_kJmol": 0.5 * np.einsum("i,fik->f", masses, v**2), "potential_kJmol": np.nan,
           "thermostat_heat_kJmol": np.nan, "net_force_kJmol_nm": np.nan, "out_of_range_terms": 0,
           **{f"T_{k}_K": kinds[k] for k in KINETIC_KINDS}}
    # the OpenMM state log's columns, in its order (row_of reads either)
    columns = np.column_stack([np.broadcast_to(np.asarray(log[h], float), times.shape)
                               for h in StateLogReporter.header])
    np.savetxt(out.log, columns, delimiter=",", header=",".join(StateLogReporter.header), comments="", fmt="%.10g")
    # the cell's frames as a run of their own, analysed as its replica like the reference
    cell_run = replace(run, elements=list(run.elements[:n]), steps=dump["step"], times_ps=times,
                       positions=x, forces=None, velocities=None, energies=None,
                       box_nm=np.tile(cell, (len(times), 1)), replica=1)
    traj = trajectory_of(cell_run.replicated(run.replica))
    traj[0].save_pdb(str(out.topology))
    traj.save_dcd(str(out.trajectory))
    write_json_atomic(out.summary, {
        **summary, **dynamics.summary(), "replica": run.replica, "hydrogen_mass_amu": dynamics.masses_amu["H"],
        "mean_temperature": float(np.mean(kinds["total"][len(times) // 2:])), "heat_per_ps": None,
        "mean_net_force": None, "out_of_range_fraction": None})  # not measured in LAMMPS


def record_velocities(sim_dir: Path, model_path, run: Cp2kRun, water: WaterSystem, *, ps=2.0, interval=5,
                      platform="CPU", progress=True) -> Path:
    """Continue a finished run from its checkpoint for `ps`, saving velocities every
    `interval` steps to velocities.npy (float32, nm/ps) and velocities.json (spacing).

    Kept apart from the main run so its trajectory stays small; the spectrum needs
    velocities every few fs (CP2K's: 2.5 fs, Nyquist 6700 cm^-1).
    """
    from ..openmm.reporters import VelocityReporter
    from ..openmm.simulate import learning_simulation
    from ..openmm.spcfw import spcfw_system

    folder = RunFolder(sim_dir)
    # the run's own dynamics (its integrator and seed), at the reference's masses, on this platform
    dynamics = replace(Dynamics.from_summary(json.loads(folder.summary.read_text())), platform=platform,
                       masses_amu=run.settings.masses_amu)
    n = int(round(ps / (interval * dynamics.timestep_ps)))
    meta = {"dt_ps": interval * dynamics.timestep_ps, "frames": n, "interval_steps": interval}
    if folder.velocities.exists() and folder.velocity_spacing.exists() and \
            json.loads(folder.velocity_spacing.read_text()) == meta:
        return folder.velocities
    model = loaded_model(model_path)[0] if model_path else None
    system = None if model else spcfw_system(len(water.molecules), run.box_nm[0])
    sim = learning_simulation(model, water.species, water.molecules, run.box_nm[0], dynamics, system)
    sim.loadCheckpoint(str(folder.checkpoint))
    sim.integrator.invalidate()
    sim.currentStep = 0
    recorder = VelocityReporter(interval, n, len(water.species))
    sim.reporters.append(recorder)
    for _ in tqdm(range(n), desc=f"velocities {folder.folder.name}", unit="frame", disable=not progress):
        sim.step(interval)
    recorder.save(folder.velocities)
    write_json_atomic(folder.velocity_spacing, meta, indent=None)
    return folder.velocities


@dataclass(frozen=True)
class RunJob:
    """Run k of a row: its name, model file (None: the SPC/Fw baseline), folder and start frame."""

    name: str
    model_path: str | None
    folder: str
    k: int
    frame: int


def one_run(job: RunJob, run: Cp2kRun, water: WaterSystem, plan: ValidationPlan, progress=True):
    """OpenMM dynamics and its velocity recording, or LAMMPS in the cell itself (a box under
    twice the cutoff). A blow-up is a result about the model: written to the folder's
    blow-up file, judged as stability.blow_ups, and returned as a line to say (None when
    the run held)."""
    folder = Path(job.folder)
    dynamics = Dynamics.from_run(run, plan.ps, seed=plan.first_seed + job.k, equilibration_ps=plan.langevin_ps,
                                 platform=plan.platform)
    try:
        if run.replica > 1:  # no velocity recording: the spectra are n/a for these rows
            lammps_stage(job.name, job.model_path, run, water, folder, dynamics, frame=job.frame,
                         report_interval=plan.report_interval, progress=progress)
            return None
        simulate_stage(job.name, job.model_path, run, water, folder, dynamics, frame=job.frame,
                       report_interval=plan.report_interval, progress=progress)
        # spectra compare with the reference's only at its masses
        if run.velocities is not None and plan.velocity_ps and light_water(run.settings.masses_amu["H"]):
            record_velocities(folder, job.model_path, run, water, ps=plan.velocity_ps,
                              interval=plan.velocity_interval, platform=plan.platform, progress=progress)
    except SimulationError as e:
        write_json_atomic(RunFolder(folder).blow_up, {"seed": dynamics.seed, "frame": job.frame, "error": str(e)})
        return f"{job.name}: run {job.k} blew up: {e}"
    return None


def run_dynamics(jobs: list, reference: dict, plan: ValidationPlan, workers=None, progress=True, loaded=None) -> int:
    """Every run of every row (RunJob), `reference` load_water_run's arguments. A 64-water
    box keeps one core busy but not two (OpenMM's CPU platform: 1.95 ms per step of the
    learned reciprocal model with one thread, 1.59 with two), so runs go side by side in
    `workers` processes of one thread each (default: one per core on the CPU platform; 1
    runs them here, one after the other, on `loaded` = (run, water) when given). The
    processes are fresh interpreters (`python -m openmm_learning.pipeline.runs`), so a
    user's script needs no main guard. Each run resumes from its own checkpoint: an
    interrupted pool loses at most a checkpoint interval per run. Returns how many runs
    went at once."""
    cores = os.cpu_count() or 1
    if workers is None:
        workers = cores if str(plan.platform).upper() == "CPU" else 1
    workers = max(1, min(int(workers), len(jobs)))
    if workers == 1:
        run, water = loaded or load_water_run(**reference)
        for job in jobs:
            say(progress, one_run(job, run, water, plan, progress))
        return 1
    _run_in_workers(jobs, reference, plan, workers, progress)
    return workers


def _run_in_workers(jobs, reference: dict, plan: ValidationPlan, workers: int, progress: bool):
    import queue
    import subprocess
    import sys
    import tempfile
    import threading

    threads = str(max(1, (os.cpu_count() or 1) // workers))  # read by OpenMM's CPU platform and numba at import
    env = {**os.environ, "OPENMM_CPU_THREADS": threads, "NUMBA_NUM_THREADS": threads}
    done: queue.Queue = queue.Queue()

    def read(proc):
        for line in proc.stdout:
            done.put(("run", line.rstrip("\n")))
        done.put(("exit", proc))

    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        try:
            for i in range(workers):  # round robin: the rows' runs are alike in cost
                spec = Path(tmp) / f"jobs-{i}.json"
                spec.write_text(json.dumps({"reference": {k: str(v) if isinstance(v, Path) else v
                                                          for k, v in reference.items()},
                                            "plan": asdict(plan), "jobs": [asdict(j) for j in jobs[i::workers]]}))
                # stderr to a file: a pipe nobody reads would stall a worker with many warnings
                with open(Path(tmp) / f"worker-{i}.err", "w") as err:
                    proc = subprocess.Popen([sys.executable, "-m", "openmm_learning.pipeline.runs", str(spec)],
                                            stdout=subprocess.PIPE, stderr=err, text=True, env=env)
                proc.err_path = err.name
                threading.Thread(target=read, args=(proc,), daemon=True).start()
                procs.append(proc)
            bar = tqdm(total=len(jobs), desc=f"dynamics ({workers} runs at once)", unit="run", disable=not progress)
            running = workers
            while running:
                kind, item = done.get()
                if kind == "run":
                    bar.update(1)
                    say(progress, item)
                    continue
                running -= 1
                if item.wait() != 0:
                    raise RuntimeError(f"a dynamics worker failed (exit {item.returncode}):\n"
                                       f"{Path(item.err_path).read_text()[-3000:]}")
            bar.close()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()


def _dynamics_worker(spec_path):
    """One worker process of run_dynamics: its jobs, one line on stdout per finished run."""
    spec = json.loads(Path(spec_path).read_text())
    run, water = load_water_run(**spec["reference"])
    plan = ValidationPlan(**spec["plan"])
    for job in spec["jobs"]:
        print(one_run(RunJob(**job), run, water, plan, progress=False) or "", flush=True)


if __name__ == "__main__":  # a worker of run_dynamics
    import sys

    _dynamics_worker(sys.argv[1])
