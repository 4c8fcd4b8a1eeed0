"""What every stage of the pipeline shares: a stage is skipped when its output is
complete and was made from the same inputs (a stamp file says which), so an interrupted
job resumes; model files are read once; runs start from frames spread over a reference."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..io import Cp2kRun
from ..io.atomic import write_json_atomic
from ..losses.fit import sha256_of
from ..losses.model import LossModel

STAMP = "stage.json"


def parse_steps(text) -> tuple[int | None, int | None] | None:
    """"A:B" -> (A, B): CP2K steps A <= step < B; either end may be left open ("1500:")."""
    if text is None or isinstance(text, tuple):
        return text
    m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", str(text))
    if not m:
        raise ValueError(f"--train-steps must look like A:B (CP2K step numbers), not {text!r}")
    a, b = (int(x) if x else None for x in m.groups())
    if a is not None and b is not None and b <= a:
        raise ValueError(f"--train-steps {text}: the end must come after the start")
    return a, b


def step_mask(steps, span, stride: int = 1) -> np.ndarray:
    every = np.arange(len(steps)) % stride == 0
    if span is None:
        return every
    a, b = span
    return (
        every & (steps >= (a if a is not None else steps.min())) & (steps < (b if b is not None else steps.max() + 1))
    )


def stage_done(folder: Path, stamp: dict, *files) -> bool:
    """The stage's files exist and were made from the same inputs."""
    f = folder / STAMP
    try:
        same = f.exists() and json.loads(f.read_text()) == json.loads(json.dumps(stamp))
    except ValueError:  # a damaged stamp vouches for nothing: the stage runs again
        return False
    return same and all((folder / x).exists() for x in files)


def write_stamp(folder: Path, stamp: dict):
    write_json_atomic(folder / STAMP, stamp)


def say(progress, text):
    if progress and text:
        tqdm.write(f"[validate] {text}")


def first_frame_after(run: Cp2kRun, cut_ps: float) -> int:
    """Index of the run's first frame at least cut_ps after its first (its last at most)."""
    return min(int(np.searchsorted(run.times_ps, run.times_ps[0] + cut_ps - 1e-9)), run.n_frames - 1)


def start_frames(run: Cp2kRun, equilibration_ps: float, seeds: int) -> list:
    """Frame indices for independent runs: spread evenly over the reference after its
    equilibration cut, the last frame first."""
    first = first_frame_after(run, equilibration_ps)
    return [int(i) for i in np.round(np.linspace(run.n_frames - 1, first, seeds)).astype(int)]


@functools.lru_cache(maxsize=16)
def _load_model(path: str, mtime_ns: int) -> tuple[LossModel, str]:
    return LossModel.load(path), sha256_of(path)


def loaded_model(path) -> tuple[LossModel, str]:
    """A model file's LossModel and sha256, read once per version of the file (the suite
    needs them for every run of a row)."""
    return _load_model(str(path), Path(path).stat().st_mtime_ns)
