"""Validation against CP2K: analysis functions of trajectories, metrics, decisions and
reports (the runs that feed it: pipeline.validate)."""
