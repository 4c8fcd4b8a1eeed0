"""CP2K's tabular outputs: the .ener file (energies per step) and the .cell file (box per step)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from .. import units
from .cp2k_xyz import _last_occurrence, _read_text
from .errors import Cp2kFormatError

_ENER_COLUMNS = ("step", "time_ps", "kinetic", "temperature", "potential", "conserved", "used_time")


def _read_table(path: Path, ncols: int, what: str, allow_truncated: bool) -> np.ndarray:
    """Whitespace table with '#' comments -> (n, ncols) float array."""
    text = _read_text(path)
    complete = text.endswith("\n")
    rows, linenos = [], []
    for no, line in enumerate(text.split("\n"), start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            rows.append(s)
            linenos.append(no)
    if rows and not complete:
        msg = f"{path}, line {linenos[-1]}: the last line is incomplete (no newline): {rows[-1]!r}"
        if not allow_truncated:
            raise Cp2kFormatError(f"{msg}. The file was cut off; pass allow_truncated=True "
                                  "(CLI: --allow-truncated) to drop the incomplete line.")
        warnings.warn(f"{msg}; dropped it", stacklevel=3)
        rows.pop()
        linenos.pop()
    if not rows:
        raise Cp2kFormatError(f"{path}: no data lines in this {what} file")
    tokens = " ".join(rows).split()
    values = None
    if len(tokens) == ncols * len(rows):
        try:
            values = np.array(tokens, dtype=np.float64).reshape(len(rows), ncols)
        except ValueError:
            values = None
    if values is None or not np.isfinite(values).all():
        for row, no in zip(rows, linenos):
            parts = row.split()
            if len(parts) != ncols:
                raise Cp2kFormatError(f"{path}, line {no}: expected {ncols} columns in a {what} "
                                      f"file, found {len(parts)}: {row!r}")
            for p in parts:
                try:
                    ok = math.isfinite(float(p))
                except ValueError:
                    raise Cp2kFormatError(f"{path}, line {no}: non-numeric value {p!r}: {row!r}") from None
                if not ok:
                    raise Cp2kFormatError(f"{path}, line {no}: non-finite value {p!r}: {row!r}. "
                                          "The run blew up here; use only the steps before it.")
    return values


def _read_ener(path: Path, allow_truncated: bool) -> dict[str, np.ndarray]:
    t = _read_table(path, 7, ".ener", allow_truncated)
    ha = units.HARTREE_KJMOL
    return {
        "step": np.rint(t[:, 0]).astype(np.int64),
        "time_ps": t[:, 1] * units.FS_PS,
        "kinetic": t[:, 2] * ha,
        "temperature": t[:, 3],
        "potential": t[:, 4] * ha,
        "conserved": t[:, 5] * ha,
        "used_time": t[:, 6],
    }


def _box_from_cell_file(path: Path, steps: np.ndarray, allow_truncated: bool) -> np.ndarray:
    """Box edges (nm) at each step, from the last .cell row at or before it."""
    t = _read_table(path, 12, ".cell", allow_truncated)
    cell_steps = np.rint(t[:, 0]).astype(np.int64)
    vecs = t[:, 2:11].reshape(-1, 3, 3)
    off = vecs.copy()
    off[:, [0, 1, 2], [0, 1, 2]] = 0.0
    bad = np.abs(off).max(axis=(1, 2)) > 1e-6
    if bad.any():
        k = int(np.argmax(bad))
        raise Cp2kFormatError(f"{path}: step {cell_steps[k]}: the cell is not orthorhombic "
                              f"(A, B, C = {vecs[k].tolist()} Angstrom); only orthorhombic boxes "
                              "are supported")
    uniq, last = _last_occurrence(cell_steps)
    edges = vecs[last][:, [0, 1, 2], [0, 1, 2]] * units.ANGSTROM_NM
    pos = np.searchsorted(uniq, steps, side="right") - 1
    if (pos < 0).any():
        s = int(steps[np.argmax(pos < 0)])
        raise Cp2kFormatError(f"{path}: no cell for step {s} (the file starts at step {uniq[0]})")
    return edges[pos]


# --------------------------------------------------------------------------- input parsing
