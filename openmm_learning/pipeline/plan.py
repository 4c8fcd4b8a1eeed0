"""How a validation runs its rows: the choices of `openmm-learning validate` in one place."""

from __future__ import annotations

from dataclasses import dataclass

from ..dynamics import LANGEVIN_PS

#: independent runs per row by default: above what the power study needs for each planted
#: subtle failure these settings can decide (validation/README.md, power table)
RUNS_PER_ROW = 16


@dataclass(frozen=True)
class ValidationPlan:
    """Each simulated row is `seeds` independent runs: run k starts from its own frame of
    the reference after the reference's cut (stages.start_frames) with velocities drawn at
    the reference's temperature (seed first_seed + k), equilibrates for langevin_ps under
    Langevin friction, then runs ps of dynamics under the reference's protocol (its
    temperature, timestep, cell, masses and thermostat), reporting every report_interval
    steps on `platform`; row_equilibration_ps is cut from each (default 0).

    train_steps: CP2K steps ((A, B) or "A:B") the fit uses when no model is given
    (default: the reference after its cut, the part that is compared; the fit holds out
    its own last 20 % after a gap). equilibration_ps: cut from the reference (default
    half the run, at most 5 ps). baseline: run SPC/Fw too (default: when models are
    simulated). velocity_ps: a velocity recording after each run (every
    velocity_interval steps) for the spectra. learning_curve_sizes, sensitivity_frames:
    of the learning-curve and agents stages. extra_info: provenance lines for the report.
    """

    train_steps: tuple | str | None = None
    ps: float = 10.0
    seeds: int = RUNS_PER_ROW
    first_seed: int = 1
    langevin_ps: float = LANGEVIN_PS
    equilibration_ps: float | None = None
    row_equilibration_ps: float = 0.0
    baseline: bool | None = None
    velocity_ps: float = 2.0
    velocity_interval: int = 5
    report_interval: int = 100
    platform: str = "CPU"
    learning_curve_sizes: int | tuple = 5
    sensitivity_frames: int = 20
    allow_truncated: bool = False
    extra_info: tuple | list | None = None
