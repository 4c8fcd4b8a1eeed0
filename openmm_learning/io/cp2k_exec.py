"""Finding and running CP2K."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from .cp2k_reader import Cp2kRun, _discover, _input_project, read_cp2k_run
from .cp2k_xyz import _project_of
from .errors import Cp2kRunError

_EXECUTABLES = ("cp2k.psmp", "cp2k.popt", "cp2k", "cp2k.ssmp", "cp2k.sopt")


def find_cp2k_executable() -> str | None:
    """Path of the first of cp2k.psmp, cp2k.popt, cp2k, cp2k.ssmp, cp2k.sopt on PATH, else None."""
    for name in _EXECUTABLES:
        exe = shutil.which(name)
        if exe:
            return exe
    return None


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no output file)"


def run_cp2k(input_path, *, executable=None, threads=2, timeout=None) -> Cp2kRun:
    """Run CP2K on an input in its own directory and read the run back.

    Runs ``<cp2k> -i X.inp -o X.out`` with OMP_NUM_THREADS=threads; reads back only the
    files this run wrote (forces are not required).

    Raises
    ------
    Cp2kRunError : CP2K is not installed, fails, or runs past `timeout` seconds.
    """
    inp = Path(input_path).resolve()
    if not inp.is_file():
        raise Cp2kRunError(f"{inp}: input file not found")
    exe = executable or find_cp2k_executable()
    if exe is None or shutil.which(str(exe)) is None:
        raise Cp2kRunError(
            f"CP2K executable {'not found on PATH' if exe is None else repr(exe) + ' not found'} "
            f"(looked for {', '.join(_EXECUTABLES)}). Install it, e.g. `apt-get install cp2k` "
            "on Debian/Ubuntu, or pass executable=...")
    project = _input_project(inp)
    out = inp.with_suffix(".out")
    started = time.time()
    env = dict(os.environ, OMP_NUM_THREADS=str(int(threads)))
    cmd = [str(exe), "-i", inp.name, "-o", out.name]
    try:
        proc = subprocess.run(cmd, cwd=inp.parent, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise Cp2kRunError(f"CP2K ran past {timeout} s on {inp}; last lines of {out.name}:\n"
                           f"{_tail(out)}") from exc
    ended = out.is_file() and "PROGRAM ENDED AT" in _tail(out, 200)
    if proc.returncode != 0 or not ended:
        console = "\n".join((proc.stdout or "").splitlines()[-15:])
        raise Cp2kRunError(f"CP2K failed on {inp} (exit code {proc.returncode}); last lines of "
                           f"{out.name}:\n{_tail(out)}\n--- console ---\n{console}")
    # read only what this run wrote: a stale file of an earlier run of the same project
    # (one this input no longer prints) would otherwise be matched in by step
    fresh = {}
    for role, paths in _discover(inp.parent).items():
        mine = [p for p in paths if role != "inp" and _project_of(role, p) == project
                and p.stat().st_mtime >= started - 2.0]
        if len(mine) == 1:
            fresh[role] = mine[0]
    if "pos" not in fresh:
        raise Cp2kRunError(f"CP2K ended on {inp} but wrote no {project}-pos-*.xyz: does the input "
                           "print the trajectory (&MOTION/&PRINT/&TRAJECTORY)?")
    return read_cp2k_run(None, inp=inp, require_forces=False, **fresh)
