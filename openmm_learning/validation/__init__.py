"""Validation against CP2K: analysis functions of trajectories, metrics and verdicts, the suite, plots."""
