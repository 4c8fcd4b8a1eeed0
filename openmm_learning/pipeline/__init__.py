"""The pipeline: the steps of the command line, each passing loaded objects to the next.

    fit        pipeline.fit       CP2K frames -> the agent losses (fit_run, fit_stage)
    simulate   pipeline.runs      a model's dynamics from CP2K frames (simulate_run, run_dynamics)
    validate   pipeline.validate  fit or take models, simulate, judge against CP2K (run_validation)
    evaluate   pipeline.evaluate  a model's force errors on any CP2K run
    iterate    pipeline.iterate   the closed loop with CP2K single points
    example    pipeline.example   the main job on the bundled run (run_example)

The validation package below holds the metrics, decisions and reports only.
"""
