"""The main job (`openmm-learning example`, `make example`): fit, simulate and validate on
the bundled equilibrium CP2K water run, every stage resumable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..io.water_run import example_run_dir
from ..losses.fit import FitSettings
from .plan import RUNS_PER_ROW, ValidationPlan

#: the example's reference: the bundled equilibrium (Langevin) xTB run, in equipartition
#: after its first ps (its README); a CSVR run's frames are out of it (validation/README.md)
EXAMPLE_REFERENCE = "water64-xtb-langevin-300K"
EXAMPLE_EQUILIBRATION_PS = 1.0
#: runs per row and their length (ps), and what is cut from each: many independent runs
#: give the rows' errors degrees of freedom (Student's t of 2 runs is 12.7, of 8 runs
#: 2.4); a run relaxes from its reference frame to the model's own structure over the
#: first ps (validation/README.md)
EXAMPLE_SEEDS, EXAMPLE_PS, EXAMPLE_ROW_CUT_PS, EXAMPLE_LANGEVIN_PS = RUNS_PER_ROW, 10.0, 2.0, 1.0
#: the example's fit: the default (FitSettings) on every 2nd frame after the cut
EXAMPLE_FIT = FitSettings(frame_stride=2)


def example_plan(ps=EXAMPLE_PS, seeds=EXAMPLE_SEEDS, first_seed=1, platform="CPU") -> ValidationPlan:
    """The example's validation plan: `seeds` runs of ps per row, each after 1 ps of
    Langevin equilibration with its first 2 ps cut, at the reference's timestep and masses,
    reporting every 20 steps; a learning curve of 3 sizes (the reference's cut: run_example)."""
    return ValidationPlan(ps=ps, seeds=seeds, first_seed=first_seed, platform=platform, langevin_ps=EXAMPLE_LANGEVIN_PS,
                          row_equilibration_ps=EXAMPLE_ROW_CUT_PS, report_interval=20, learning_curve_sizes=3)


def run_example(out_dir="output", *, plan: ValidationPlan | None = None, run_dir=None, progress=True, workers=None):
    """The main job on a CP2K run (default: the bundled equilibrium xTB water, its first
    ps cut): the validation suite (pipeline.validate.run_validation).

    Fit both modes on every 2nd frame after the reference's cut (compiled to Chebyshev
    series: the same held-out error, 2-4x faster dynamics than splines;
    benchmarks/README.md), learning curve, agent sensitivity, the plan's runs (default
    example_plan()) of OpenMM dynamics per learned mode and for the SPC/Fw baseline,
    comparison with CP2K. Layout: OUT/fit/, OUT/learning-curve/, OUT/agents/,
    OUT/sim-{agent,reciprocal,spcfw}/, OUT/validation/ (report.html, report.md,
    metrics.json, plots). Finished stages are not redone.
    """
    from .validate import run_validation  # here, not at import: the command line reads this module's constants

    plan = plan or example_plan()
    if run_dir is None:
        run_dir = example_run_dir(EXAMPLE_REFERENCE)
        if plan.equilibration_ps is None:  # the bundled run's cut; another run gets its default
            plan = replace(plan, equilibration_ps=EXAMPLE_EQUILIBRATION_PS)
    return run_validation(Path(run_dir), out_dir, plan=plan, fit_settings=EXAMPLE_FIT,
                          report_dir=Path(out_dir) / "validation", workers=workers, progress=progress)
