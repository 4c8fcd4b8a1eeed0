"""The files of one simulation folder, named in one place: OpenMM and LAMMPS runs write
them, the validation and the closed loop read them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunFolder:
    folder: Path

    def __post_init__(self):
        object.__setattr__(self, "folder", Path(self.folder))

    trajectory = property(lambda self: self.folder / "trajectory.dcd")  # every report
    topology = property(lambda self: self.folder / "topology.pdb")  # the start frame
    log = property(lambda self: self.folder / "state.csv")  # StateLogReporter's columns
    checkpoint = property(lambda self: self.folder / "checkpoint.chk")
    summary = property(lambda self: self.folder / "summary.json")  # the dynamics and its measures
    committee = property(lambda self: self.folder / "committee.csv")
    last_good = property(lambda self: self.folder / "last_good.pdb")  # written by a blow-up
    blow_up = property(lambda self: self.folder / "blew_up.json")  # the error of a run that blew up
    velocities = property(lambda self: self.folder / "velocities.npy")  # a recording for spectra
    velocity_spacing = property(lambda self: self.folder / "velocities.json")

    def is_run(self) -> bool:
        return self.summary.exists() or self.log.exists()
