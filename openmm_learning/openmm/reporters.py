"""OpenMM reporters of learning dynamics: attach them to any app.Simulation.

    simulation.reporters += [BlowUpGuard(100, 300.0, "last_good.pdb"),
                             StateLogReporter("state.csv", 100, model=model),
                             AtomicCheckpointReporter("checkpoint.chk", 1000)]

Each reporter follows OpenMM's protocol (describeNextReport, report) and keeps the time
it spends in `seconds`, so a run can report the cost of its dynamics alone. They read
the learning integrator's globals (heat, net force) where it is the integrator, and
refuse to run an agent-mode System under any other integrator.
"""

from __future__ import annotations

import csv
import time
import warnings
from pathlib import Path

import numpy as np
from openmm import app, unit

from ..io.topology import KINETIC_KINDS, kinetic_temperatures, temperature
from ..losses.model import LossModel, model_deviation
from .forces import is_agent_system
from .integrator import LearningIntegrator


class SimulationError(RuntimeError):
    """The dynamics blew up (NaN or runaway temperature); the last good frame is saved."""


class ExtrapolationWarning(UserWarning):
    """The simulation visits invariants outside the range the model was trained on."""


def require_learning_integrator(simulation):
    """Agent-mode forces mean nothing under another integrator: say so, and what to use."""
    if is_agent_system(simulation.system) and not isinstance(simulation.integrator, LearningIntegrator):
        raise ValueError(
            f"this System holds agent-mode learned forces, which only openmm_learning's LearningIntegrator "
            f"applies (each species descends its own loss); a {type(simulation.integrator).__name__} would "
            "move every atom by the sum of both agents' forces. Create the integrator with "
            "LearnedWater(model).createIntegrator(topology, temperature, timestep).")


class _Reporter:
    """Shared parts: a report every `interval` steps, positions and velocities wrapped, timing."""

    def __init__(self, interval: int):
        self.interval = int(interval)
        self.seconds = 0.0
        self._checked = False
        self._masses = None

    def describeNextReport(self, simulation):
        if not self._checked:
            require_learning_integrator(simulation)
            self._checked = True
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": True, "include": ["positions", "velocities", "energy"]}

    def _arrays(self, simulation, state):
        """Positions (nm), velocities (nm/ps), masses (amu) and box (nm) of a state; the masses
        are read from the System once (a loop over atoms, kept out of every report)."""
        if self._masses is None:
            system = simulation.system
            self._masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton)
                                     for i in range(system.getNumParticles())])
        pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        vel = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        box = np.diag(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
        return pos, vel, self._masses, box

    def report(self, simulation, state):
        t0 = time.perf_counter()
        try:
            self._report(simulation, state)
        finally:
            self.seconds += time.perf_counter() - t0


def _temperature(vel, masses) -> float:
    """Kinetic temperature of one frame (io.topology.temperature: 3N - 3 degrees of freedom)."""
    return float(temperature(vel, masses)[0])


class BlowUpGuard(_Reporter):
    """Stops with SimulationError on NaN or a temperature above factor x target, after
    writing the last good frame as a PDB (put it first among the reporters)."""

    def __init__(self, interval, temperature_k, last_good_path, factor=4.0, label="learning"):
        super().__init__(interval)
        self.temperature_k, self.factor, self.label = temperature_k, factor, label
        self.path = Path(last_good_path)
        self.last_good = None

    def _report(self, simulation, state):
        pos, vel, masses, _ = self._arrays(simulation, state)
        temp = _temperature(vel, masses)
        if np.all(np.isfinite(pos)) and np.isfinite(temp) and temp <= self.factor * self.temperature_k:
            self.last_good = state
            return
        good = self.last_good or state
        with open(self.path, "w") as fh:
            app.PDBFile.writeFile(simulation.topology, good.getPositions(asNumpy=True).value_in_unit(unit.angstrom), fh)
        raise SimulationError(
            f"{self.label} dynamics blew up before step {simulation.currentStep} (temperature {temp:.4g} K, "
            f"target {self.temperature_k} K); last good frame saved to {self.path}. Try a shorter timestep or "
            "a tighter thermostat (collision time), or refit with more data.")


class ExtrapolationReporter(_Reporter):
    """Counts the model's channels with an invariant outside their functions' domain (the
    fitted grid, a margin beyond the training frames) at each report (`last_count`) and
    warns once (the linear extension and walls hold them there)."""

    def __init__(self, interval, model: LossModel, species, molecules):
        super().__init__(interval)
        self.model = model
        self.species = np.asarray(species, np.int64)
        self.molecules = np.asarray(molecules, np.int64)
        self.last_count = 0
        self.reports = self.reports_out = 0

    def _report(self, simulation, state):
        pos, _, _, box = self._arrays(simulation, state)
        self.last_count = self.model.channels_outside(pos, box, self.species, self.molecules, training=False)
        self.reports += 1
        if self.last_count:
            if not self.reports_out:
                # one line, no source line: the caller is deep inside OpenMM's Simulation.step
                warnings.warn_explicit(f"step {simulation.currentStep}: {self.last_count} invariant channel(s) "
                                       "outside the model's training range; results there are extrapolation",
                                       ExtrapolationWarning, "openmm-learning", 0)
            self.reports_out += 1


class _CsvLogReporter(_Reporter):
    """A report per row of a CSV file with a header; append=True continues an existing file
    (a resumed run, whose later rows the caller has cut)."""

    header: list = []

    def __init__(self, path, interval, append=False):
        super().__init__(interval)
        self.path = Path(path)
        new = not (append and self.path.exists())
        self.file = open(self.path, "w" if new else "a", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(self.header)

    def write(self, row):
        self.writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
        self.file.flush()

    def close(self):
        self.file.close()


class CommitteeReporter(_CsvLogReporter):
    """The committee's model deviation (losses.model.model_deviation, kJ/mol/nm) every
    `interval` steps, one row per report in a CSV (step, time_ps, deviation); above `limit`
    it warns once, or with stop=True stops the run with a SimulationError: the model is
    guessing there (`openmm-learning iterate` turns such frames into CP2K single points)."""

    header = ["step", "time_ps", "committee_deviation_kJmol_nm"]

    def __init__(self, path, interval, committee, species, molecules, limit=None, stop=False, append=False):
        super().__init__(path, interval, append)
        self.committee = list(committee)
        self.species = np.asarray(species, np.int64)
        self.molecules = np.asarray(molecules, np.int64)
        self.limit, self.stop, self.warned = limit, stop, False

    def _report(self, simulation, state):
        pos, _, _, box = self._arrays(simulation, state)
        pos = np.ascontiguousarray(pos)
        dev = model_deviation([m.forces(pos, box, self.species, self.molecules)[0] for m in self.committee])
        step = simulation.currentStep
        self.write([step, state.getTime().value_in_unit(unit.picosecond), dev])
        if self.limit is None or dev <= self.limit:
            return
        text = (f"step {step}: the committee's forces differ by {dev:.0f} kJ/mol/nm, over the limit "
                f"{self.limit:g}: the model is extrapolating")
        if self.stop:
            raise SimulationError(text + "; stopped (compute such frames with CP2K: `openmm-learning iterate`)")
        if not self.warned:
            warnings.warn_explicit(text, ExtrapolationWarning, "openmm-learning", 0)
            self.warned = True


class StateLogReporter(_CsvLogReporter):
    """CSV log per report: step, time, temperature (3N-3 dof), kinetic and potential energy,
    thermostat heat and net force (learning integrator), extrapolated channels, and the
    kinetic temperature of O, H and molecular translation, rotation and vibration (atoms
    in O H H order per molecule)."""

    header = ["step", "time_ps", "temperature_K", "kinetic_kJmol", "potential_kJmol",
              "thermostat_heat_kJmol", "net_force_kJmol_nm", "out_of_range_terms"] + [
              f"T_{kind}_K" for kind in KINETIC_KINDS]

    def __init__(self, path, interval, extrapolation: ExtrapolationReporter | None = None, append=False,
                 conservative=True, order=None):
        super().__init__(path, interval, append)
        self.order = None if order is None else np.asarray(order)  # atoms in O H H order per molecule
        self.extrapolation = extrapolation
        self.conservative = conservative  # potential energy means something (not agent mode)

    def _report(self, simulation, state):
        pos, vel, masses, box = self._arrays(simulation, state)
        integ = simulation.integrator
        learning = isinstance(integ, LearningIntegrator)
        ke = 0.5 * float(np.sum(masses[:, None] * vel**2))
        pot = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) if self.conservative else np.nan
        heat = integ.getGlobalVariableByName("heat") if learning else np.nan
        fnet = float(np.linalg.norm(integ.net_force(simulation.context))) if learning else np.nan
        o = slice(None) if self.order is None else self.order
        kinds = kinetic_temperatures(pos[o], vel[o], masses[o], box)
        step = simulation.currentStep
        row = [step, state.getTime().value_in_unit(unit.picosecond), _temperature(vel, masses), ke, pot, heat, fnet,
               self.extrapolation.last_count if self.extrapolation else 0] + [float(kinds[k][0]) for k in KINETIC_KINDS]
        self.write(row)


class AtomicCheckpointReporter(_Reporter):
    """OpenMM checkpoints written to a temporary file and renamed: an interrupt never
    leaves a half-written checkpoint that a resumed run would trust."""

    def __init__(self, path, interval):
        super().__init__(interval)
        self.path = Path(path)

    def describeNextReport(self, simulation):
        out = super().describeNextReport(simulation)
        out["include"] = []
        return out

    def _report(self, simulation, state):
        self.save(simulation)

    def save(self, simulation):
        tmp = self.path.with_suffix(".tmp")
        simulation.saveCheckpoint(str(tmp))
        tmp.replace(self.path)


class VelocityReporter(_Reporter):
    """Velocities (nm/ps, float32) every `interval` steps for `frames` reports, kept in
    memory and written with `save(path)` (for spectra: a few fs apart)."""

    def __init__(self, interval, frames, n_atoms):
        super().__init__(interval)
        self.velocities = np.empty((frames, n_atoms, 3), np.float32)
        self.count = 0

    def describeNextReport(self, simulation):
        out = super().describeNextReport(simulation)
        out["include"] = ["velocities"] if self.count < len(self.velocities) else []
        return out

    def _report(self, simulation, state):
        if self.count < len(self.velocities):
            self.velocities[self.count] = state.getVelocities(asNumpy=True).value_in_unit(
                unit.nanometer / unit.picosecond)
            self.count += 1

    def save(self, path):
        path = Path(path)
        if self.count < len(self.velocities) or not np.all(np.isfinite(self.velocities)):
            raise ValueError(f"{path}: velocity recording incomplete ({self.count} of {len(self.velocities)} "
                             "frames) or non-finite")
        tmp = path.with_name(path.stem + ".tmp.npy")
        np.save(tmp, self.velocities)
        tmp.replace(path)  # an interrupt never leaves a half-written file that looks complete
        return path
