"""What a run of learning dynamics is, whichever engine runs it: one specification,
resolved once from a CP2K run, a model's mode and the command line, and read by OpenMM's
simulate and LearningIntegrator, the LAMMPS deck writer, the validation and summary.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .units import FS_PS

#: CSVR time constant (ps) when none is given: CP2K's TIMECON of the bundled runs. CSVR is
#: the default thermostat (so learned and CP2K runs are thermostatted alike, and the heat
#: agent forces pump in is removed and reported, not hidden).
CSVR_TIME_PS = 0.05

#: Nose-Hoover chain in each mode: (chain length, time constant ps), the defaults of every
#: engine when a Nose-Hoover chain is asked for (OpenMM's LearningIntegrator, LAMMPS fix nvt).
#: Agent forces pump heat in steadily (~2 kJ/mol per fs for the bundled model); one
#: Nose-Hoover variable is an integral controller that brings the mean temperature back
#: (10 fs: 302 +- 18 K, the canonical spread for 192 atoms is 17.7 K; a chain with CP2K's
#: 50 fs left it ~20 K hot). Reciprocal mode: a chain of 3 with CP2K's 50 fs.
NOSE_HOOVER = {"agent": (1, 0.01), "reciprocal": (3, 0.05)}

#: Langevin equilibration before a run (ps) and its friction (1/ps): a CP2K frame of a
#: global thermostat's run is out of equipartition, which a global thermostat would keep
LANGEVIN_PS = 2.0
EQUILIBRATION_FRICTION_PER_PS = 5.0

THERMOSTATS = ("csvr", "nose-hoover", "langevin", "none")


def check_thermostat(thermostat: str, friction_per_ps=None):
    """ValueError for a thermostat no engine has, or Langevin without its friction."""
    if thermostat not in THERMOSTATS:
        raise ValueError(f"thermostat {thermostat!r}: use 'nose-hoover', 'csvr', 'none' or 'langevin'")
    if thermostat == "langevin" and not friction_per_ps:
        raise ValueError("thermostat 'langevin' needs friction_per_ps")


def thermostat_constants(thermostat: str, mode: str, collision_time_ps=None, chain_length=None):
    """(collision time ps, chain length) of a thermostat in a mode, the defaults filled in."""
    default_chain, default_time = NOSE_HOOVER[mode]
    time = collision_time_ps or (CSVR_TIME_PS if thermostat == "csvr" else default_time)
    return time, chain_length or default_chain


@dataclass(frozen=True)
class Dynamics:
    """One run: state (K, ps), thermostat, Langevin equilibration first, seed, platform.

    thermostat: "csvr" (CP2K's stochastic velocity rescaling, the default), "nose-hoover"
    (the chain of NOSE_HOOVER), "langevin" (friction_per_ps on every atom: a CP2K Langevin
    run's protocol) or "none" (velocity Verlet); a friction makes it Langevin. mode: the
    model's ("agent": each species its own force); collision time and chain None: the mode's
    defaults (constants()). equilibration_ps: Langevin with
    equilibration_friction_per_ps first, nothing recorded. masses_amu: element -> amu (a
    CP2K run's, e.g. heavy hydrogen for a 1.5 fs step); None: standard masses.
    """

    temperature_k: float
    timestep_ps: float
    steps: int
    thermostat: str = "csvr"
    mode: str = "reciprocal"
    collision_time_ps: float | None = None
    chain_length: int | None = None
    friction_per_ps: float | None = None
    equilibration_ps: float = 0.0
    equilibration_friction_per_ps: float = EQUILIBRATION_FRICTION_PER_PS
    seed: int = 1
    platform: str = "CPU"
    masses_amu: dict | None = None

    def __post_init__(self):
        if self.friction_per_ps is not None:
            object.__setattr__(self, "thermostat", "langevin")
        check_thermostat(self.thermostat, self.friction_per_ps)

    def constants(self) -> tuple[float, int]:
        """(collision time ps, chain length), the mode's defaults where none was given."""
        return thermostat_constants(self.thermostat, self.mode, self.collision_time_ps, self.chain_length)

    @classmethod
    def from_run(cls, run, ps: float, *, mode="reciprocal", thermostat=None, collision_time_ps=None,
                 equilibration_ps=LANGEVIN_PS, seed=1, platform="CPU", temperature_k=None) -> "Dynamics":
        """The run's state (temperature, timestep, masses) for `ps` of dynamics. thermostat
        None: the run's own protocol (its Langevin friction, else CSVR); "csvr" takes the
        run's time constant when it used CSVR, "langevin" its friction."""
        s = run.settings
        # the run's folder, as the user named it (its trajectory's), else its project name
        where = str(Path(run.files["pos"]).parent) if run.files.get("pos") else run.project
        if s is None:
            raise ValueError(f"{where}: no CP2K input file, so the temperature and timestep are unknown")
        friction = s.langevin_friction_per_ps
        if thermostat == "langevin" and friction is None:
            raise ValueError(f"{where}: the Langevin thermostat takes the friction of a CP2K Langevin run, and "
                             f"this run used {s.thermostat or 'no thermostat'}; choose csvr or nose-hoover")
        if thermostat is None:
            thermostat = "langevin" if friction else "csvr"
        if thermostat == "csvr" and collision_time_ps is None:
            collision_time_ps = s.csvr_time_ps
        return cls(temperature_k or s.temperature_k, s.timestep_ps, int(round(ps / s.timestep_ps)), thermostat,
                   mode, collision_time_ps, friction_per_ps=friction if thermostat == "langevin" else None,
                   equilibration_ps=equilibration_ps, seed=seed, platform=platform, masses_amu=s.masses_amu)

    @classmethod
    def from_summary(cls, summary: dict) -> "Dynamics":
        """The dynamics a summary.json records (older runs without a thermostat: Nose-Hoover)."""
        return cls(summary["temperature_target_K"], summary["timestep_ps"], summary["steps"],
                   summary.get("thermostat", "nose-hoover"), summary.get("mode", "reciprocal"),
                   summary.get("collision_time_ps"), summary.get("chain_length"), summary.get("friction_per_ps"),
                   seed=summary.get("seed", 0))

    @property
    def equilibration_steps(self) -> int:
        return int(round(self.equilibration_ps / self.timestep_ps))

    def summary(self) -> dict:
        """The fields summary.json records (and from_summary reads back)."""
        d = asdict(self)
        d["temperature_target_K"] = d.pop("temperature_k")
        d.pop("masses_amu")
        d["collision_time_ps"], d["chain_length"] = self.constants()
        return d

    def describe(self) -> str:
        """The thermostat in words, as reports print it."""
        if self.thermostat == "langevin":
            return f"Langevin {self.friction_per_ps:g}/ps"
        if self.thermostat == "none":
            return "none (velocity Verlet)"
        time, chain = self.constants()
        fs = f"{time / FS_PS:g} fs"
        return f"CSVR {fs}" if self.thermostat == "csvr" else f"Nose-Hoover {fs} x {chain}"


@dataclass(frozen=True)
class StartFrame:
    """Where a run starts: positions (nm), velocities (nm/ps, None: drawn at the
    temperature), box edges (nm), species codes and molecules (O H H order), and how many
    copies per side of a CP2K cell the box is (its periodic replica)."""

    positions: np.ndarray
    velocities: np.ndarray | None
    box_nm: np.ndarray
    species: np.ndarray
    molecules: np.ndarray
    replica: int = 1

    @classmethod
    def of_run(cls, run, water, frame: int = -1, velocities: bool = True) -> "StartFrame":
        """Frame `frame` of a CP2K run and its WaterSystem (with its velocities when asked and known)."""
        i = run.frame(frame)
        v = run.velocities[i] if velocities and run.velocities is not None else None
        return cls(run.positions[i], v, run.box_nm[i], water.species, water.molecules, run.replica)
