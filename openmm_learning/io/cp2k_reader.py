"""A CP2K MD run read from its folder: frames of pos/frc/vel matched by step, energies, box, settings.

Everything returned is in OpenMM units (nm, ps, kJ/mol); CP2K's own units (Angstrom,
fs, Hartree, Bohr, atomic time) are converted where the files are read. Frames are matched
across the pos/frc/vel files by MD step number, so restarted runs (repeated or skipped
steps) are read correctly."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import units
from .cp2k_input import Cp2kSettings, _default, _get, _parse_input, read_cp2k_settings
from .cp2k_tables import _box_from_cell_file, _read_ener
from .cp2k_xyz import _COMPRESSION, _last_occurrence, _project_of, _read_xyz
from .errors import Cp2kFormatError

_ROLES = ("pos", "frc", "vel", "ener", "cell", "inp")
_GLOBS = {
    "pos": "*-pos-*.xyz",
    "frc": "*-frc-*.xyz",
    "vel": "*-vel-*.xyz",
    "ener": "*.ener",
    "cell": "*.cell",
    "inp": "*.inp",
}
_XYZ_UNIT = {
    "pos": units.ANGSTROM_NM,
    "frc": units.HARTREE_PER_BOHR_KJMOL_NM,
    "vel": units.BOHR_PER_AU_TIME_NM_PS,
}


@dataclass(repr=False)
class Cp2kRun:
    """Frames of a CP2K MD run matched by step, in OpenMM units."""

    project: str
    elements: list[str]
    steps: np.ndarray
    times_ps: np.ndarray
    positions: np.ndarray
    forces: np.ndarray | None
    velocities: np.ndarray | None
    box_nm: np.ndarray
    energies: dict[str, np.ndarray] | None
    settings: Cp2kSettings | None
    files: dict[str, str] = field(default_factory=dict)
    #: copies per box side when this is the periodic replica of a smaller run (replicated)
    replica: int = 1

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.steps.shape[0])

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return len(self.elements)

    def frame(self, index: int) -> int:
        """A frame index checked against the run (negative counts from the end, as in Python)."""
        if not -self.n_frames <= index < self.n_frames:
            raise ValueError(f"frame {index}: run {self.project} has {self.n_frames} frames "
                             f"(0 to {self.n_frames - 1}, or -1 for the last)")
        return index

    def __repr__(self) -> str:
        have = [k for k in ("forces", "velocities", "energies") if getattr(self, k) is not None]
        return (f"Cp2kRun(project={self.project!r}, n_frames={self.n_frames}, n_atoms={self.n_atoms}, "
                f"steps={int(self.steps[0])}..{int(self.steps[-1])}, with={have})")

    def seconds_per_step(self) -> float:
        """Median CP2K wall time per MD step (s), from the .ener file's UsedTime.

        The first step is left out: its time includes CP2K's setup.
        """
        if self.energies is None:
            raise ValueError(f"run {self.project!r} has no .ener file: the cost per step is unknown")
        step = self.energies["step"]
        used = self.energies["used_time"][step > step[0]]
        if used.size == 0:
            raise ValueError(f"run {self.project!r}: the .ener file has no step after the first")
        return float(np.median(used))

    def masses_amu(self) -> np.ndarray:
        """Mass of every atom (amu): the input's &KIND MASS where it sets one, else the standard mass."""
        table = self.settings.masses_amu if self.settings is not None else units.MASSES_AMU
        return np.array([table.get(e, units.MASSES_AMU.get(e, np.nan)) for e in self.elements], float)

    def replicated(self, n: int) -> "Cp2kRun":
        """The n x n x n periodic replica of the run (orthorhombic cells): the same atoms
        shifted by every lattice vector, image after image, so the forces on the replica are
        those of the periodic original. For cutoffs beyond half a small box (27-32 waters)."""
        if n == 1:
            return self
        shifts = np.array([(i, j, k) for i in range(n) for j in range(n) for k in range(n)], float)

        def tile(a, shift):
            if a is None:
                return None
            copies = [a + (shift * s)[:, None, :] if shift is not None else a for s in shifts]
            return np.concatenate(copies, axis=1)

        return dataclasses.replace(
            self, elements=list(self.elements) * len(shifts), positions=tile(self.positions, self.box_nm),
            forces=tile(self.forces, None), velocities=tile(self.velocities, None), box_nm=self.box_nm * n,
            replica=self.replica * n)

    def select(self, steps_slice_or_mask) -> "Cp2kRun":
        """Subset of frames (copies of the arrays).

        Parameters
        ----------
        steps_slice_or_mask : slice, bool array of length n_frames, or int array
            Frames to keep, by position in this run (not by MD step number; use
            e.g. ``run.select(run.steps >= 1500)`` for steps).
        """
        idx = np.arange(self.n_frames)[steps_slice_or_mask]
        idx = np.atleast_1d(idx)
        if idx.size == 0:
            raise ValueError("the selection keeps no frame")

        def take(a):
            return None if a is None else a[idx].copy()

        return dataclasses.replace(
            self,
            elements=list(self.elements),
            steps=take(self.steps),
            times_ps=take(self.times_ps),
            positions=take(self.positions),
            forces=take(self.forces),
            velocities=take(self.velocities),
            box_nm=take(self.box_nm),
            energies=None if self.energies is None else {k: v.copy() for k, v in self.energies.items()},
            files=dict(self.files),
        )


# --------------------------------------------------------------------------- file helpers

def _discover(directory: Path) -> dict[str, list[Path]]:
    found = {}
    for role in _ROLES:
        paths = set()
        for ext in _COMPRESSION:
            paths.update(p for p in directory.glob(_GLOBS[role] + ext) if p.is_file())
        found[role] = sorted(paths)
    return found


def _choose(role: str, candidates: list[Path], project: str | None, directory: Path) -> Path | None:
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    if project is not None:
        match = [p for p in candidates if _project_of(role, p) == project]
        if len(match) == 1:
            return match[0]
        candidates = match or candidates
    names = ", ".join(p.name for p in candidates)
    raise Cp2kFormatError(f"{directory}: several {role} files ({names})"
                          + (f" for project {project!r}" if project else "")
                          + f"; pass the one to use explicitly ({role}=...)")


def read_cp2k_run(path=None, *, pos=None, frc=None, vel=None, ener=None, cell=None, inp=None,
                  allow_truncated=False, require_forces=True) -> Cp2kRun:
    """Read a CP2K MD run: frames of pos/frc/vel matched by step, energies, box, settings.

    Parameters
    ----------
    path : run directory, or None to use only the files given explicitly
    pos, frc, vel, ener, cell, inp : explicit files (override what is found in `path`);
        each may be xz- or gz-compressed
    allow_truncated : drop (with a warning) an incomplete last frame instead of raising
    require_forces : raise when there is no forces file

    Returns
    -------
    Cp2kRun holding only the steps present in every loaded trajectory (pos, frc, vel);
    a repeated step (restarted run) keeps its last occurrence.
    """
    explicit = {"pos": pos, "frc": frc, "vel": vel, "ener": ener, "cell": cell, "inp": inp}
    files: dict[str, Path] = {}
    for role, p in explicit.items():
        if p is not None:
            p = Path(p)
            if not p.is_file():
                raise Cp2kFormatError(f"{p}: {role} file not found")
            files[role] = p

    if path is not None:
        directory = Path(path)
        if not directory.is_dir():
            raise Cp2kFormatError(f"{directory}: not a directory (pass a run directory, or "
                                  "path=None with explicit files)")
        found = _discover(directory)
        if "inp" not in files and found["inp"]:
            cands = found["inp"]
            if len(cands) > 1:
                pos_files = [files["pos"]] if "pos" in files else found["pos"]
                pos_projects = {_project_of("pos", p) for p in pos_files}
                cands = [c for c in cands if _input_project(c) in pos_projects]
            if len(cands) != 1:
                names = ", ".join(p.name for p in found["inp"])
                raise Cp2kFormatError(f"{directory}: several input files ({names}) and no single one "
                                      "matches the trajectory's project; pass inp=... explicitly")
            files["inp"] = cands[0]
        project = _input_project(files["inp"]) if "inp" in files else None
        for role in ("pos", "frc", "vel", "ener", "cell"):
            if role not in files:
                chosen = _choose(role, found[role], project, directory)
                if chosen is not None:
                    files[role] = chosen
        where = str(directory)
    else:
        where = "the given files"

    if "pos" not in files:
        raise Cp2kFormatError(f"{where}: no positions file (*-pos-*.xyz): nothing to read")
    if "frc" not in files and require_forces:
        raise Cp2kFormatError(f"{where}: no forces file (*-frc-*.xyz). Print forces in CP2K "
                              "(&MOTION/&PRINT/&FORCES), pass frc=..., or require_forces=False")

    settings = read_cp2k_settings(files["inp"]) if "inp" in files else None
    project = settings.project if settings else _project_of("pos", files["pos"]) or files["pos"].stem

    traj = {role: _read_xyz(files[role], allow_truncated)
            for role in ("pos", "frc", "vel") if role in files}

    ref = traj["pos"]
    for role, t in traj.items():
        if role == "pos":
            continue
        if len(t.elements) != len(ref.elements):
            raise Cp2kFormatError(f"{t.where(0)}: {len(t.elements)} atoms, but {ref.path} has "
                                  f"{len(ref.elements)}. The files belong to different runs.")
        if t.elements != ref.elements:
            a = next(j for j, (x, y) in enumerate(zip(t.elements, ref.elements)) if x != y)
            raise Cp2kFormatError(f"{t.path}, line {int(t.first_line[0]) + 2 + a}, frame 0 (step "
                                  f"{int(t.steps[0])}): atom {a} is "
                                  f"{t.elements[a]!r} but {ref.elements[a]!r} in {ref.path}. "
                                  "The files belong to different runs.")

    uniq = {role: _last_occurrence(t.steps) for role, t in traj.items()}
    common = uniq["pos"][0]
    for role in traj:
        common = np.intersect1d(common, uniq[role][0])
    if common.size == 0:
        ranges = "; ".join(f"{t.path.name}: steps {t.steps.min()}..{t.steps.max()}" for t in traj.values())
        raise Cp2kFormatError(f"no MD step is present in all of the trajectory files ({ranges}). "
                              "They are from different runs or print intervals that never coincide.")
    for role, (u, _) in uniq.items():
        missing = u.size - common.size
        if missing:
            others = "/".join(r for r in traj if r != role)
            warnings.warn(f"{traj[role].path}: {missing} of its {u.size} steps are not in {others}; "
                          "dropped them", stacklevel=2)

    def frames(role):
        u, last = uniq[role]
        return last[np.searchsorted(u, common)]

    pick = {role: frames(role) for role in traj}
    positions = ref.values[pick["pos"]] * _XYZ_UNIT["pos"]
    forces = traj["frc"].values[pick["frc"]] * _XYZ_UNIT["frc"] if "frc" in traj else None
    velocities = traj["vel"].values[pick["vel"]] * _XYZ_UNIT["vel"] if "vel" in traj else None

    times_ps = ref.times_fs[pick["pos"]] * units.FS_PS
    if np.isnan(times_ps).any() and settings is not None:
        times_ps = np.where(np.isnan(times_ps), common * settings.timestep_ps, times_ps)

    energies = _read_ener(files["ener"], allow_truncated) if "ener" in files else None

    if "cell" in files:
        box = _box_from_cell_file(files["cell"], common, allow_truncated)
    elif settings is not None:
        box = np.tile(settings.cell_nm, (common.size, 1))
    else:
        warnings.warn(f"{where}: neither an input nor a .cell file: the box is unknown (NaN)", stacklevel=2)
        box = np.full((common.size, 3), np.nan)

    return Cp2kRun(
        project=project,
        elements=list(ref.elements),
        steps=common.astype(np.int64),
        times_ps=times_ps,
        positions=positions,
        forces=forces,
        velocities=velocities,
        box_nm=box,
        energies=energies,
        settings=settings,
        files={role: str(p) for role, p in files.items()},
    )


def _input_project(inp_path: Path) -> str:
    tree = _parse_input(inp_path)
    return str(_get(tree, "global", "project_name", default=_default(("GLOBAL",), "PROJECT_NAME")[0]))


# --------------------------------------------------------------------------- writing inputs
