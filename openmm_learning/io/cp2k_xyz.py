"""CP2K trajectory files (pos/frc/vel .xyz, plain or compressed): frames matched by MD step."""

from __future__ import annotations

import gzip
import lzma
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import _TRUNCATED_HINT, Cp2kFormatError

_COMPRESSION = ("", ".xz", ".gz")


def _read_text(path: Path) -> str:
    """Whole file as text, xz / gz decompressed by suffix."""
    try:
        if path.suffix == ".xz":
            with lzma.open(path, "rt") as f:
                return f.read()
        if path.suffix == ".gz":
            with gzip.open(path, "rt") as f:
                return f.read()
        return path.read_text()
    except (lzma.LZMAError, gzip.BadGzipFile, EOFError, UnicodeDecodeError) as exc:
        raise Cp2kFormatError(f"{path}: cannot be read ({exc}); the file is damaged or not text") from exc


def _strip_compression(name: str) -> str:
    for ext in (".xz", ".gz"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _project_of(role: str, path: Path) -> str | None:
    """Project name encoded in a CP2K output file name (P-pos-1.xyz, P-1.ener)."""
    name = _strip_compression(path.name)
    if role in ("pos", "frc", "vel"):
        stem = name[: -len(".xyz")]
        cut = stem.rfind(f"-{role}-")
        return stem[:cut] if cut > 0 else None
    if role in ("ener", "cell"):
        stem = name.rsplit(".", 1)[0]
        head, _, index = stem.rpartition("-")
        return head if head and index.isdigit() else stem
    return None


# --------------------------------------------------------------------------- xyz frames


@dataclass
class _Xyz:
    path: Path
    steps: np.ndarray  # (n,) int64
    times_fs: np.ndarray  # (n,) float, NaN where the comment has no time
    elements: list[str]
    values: np.ndarray  # (n, n_atoms, 3), file units
    first_line: np.ndarray  # (n,) 1-based line number of each frame's atom-count line

    def where(self, k: int) -> str:
        return f"{self.path}, line {int(self.first_line[k])}, frame {k} (step {int(self.steps[k])})"


def _comment_fields(comment: str) -> dict[str, str]:
    """`i = 5, time = 2.5, E = -1.0` -> {'i': '5', 'time': '2.5', 'e': '-1.0'}."""
    out = {}
    for part in comment.split(","):
        key, eq, value = part.partition("=")
        if eq:
            out[key.strip().lower()] = value.strip()
    return out


def _bad_atom_line(path, line: str, lineno: int, where: str) -> Cp2kFormatError | None:
    """The error for one atom line, or None when it is fine."""
    parts = line.split()
    if len(parts) != 4:
        return Cp2kFormatError(
            f"{path}, line {lineno}, {where}: expected 4 columns 'El x y z', found {len(parts)}: "
            f"{line.strip()!r}. The file is damaged or is not a CP2K xyz trajectory; regenerate it.")
    if not parts[0][:1].isalpha():
        return Cp2kFormatError(
            f"{path}, line {lineno}, {where}: {parts[0]!r} is not an element symbol: {line.strip()!r}. "
            "The file is damaged; regenerate it.")
    for p in parts[1:]:
        try:
            v = float(p)
        except ValueError:
            return Cp2kFormatError(
                f"{path}, line {lineno}, {where}: non-numeric value {p!r}: {line.strip()!r}. "
                "The file is damaged; regenerate it or cut the run before this frame.")
        if not math.isfinite(v):
            return Cp2kFormatError(
                f"{path}, line {lineno}, {where}: non-finite value {p!r}: {line.strip()!r}. "
                "The CP2K run blew up here (check timestep and SCF convergence); use only the "
                "steps before it.")
    return None


def _read_xyz(path: Path, allow_truncated: bool) -> _Xyz:
    """Parse a CP2K xyz trajectory: a loop over frames, numbers parsed in bulk."""
    text = _read_text(path)
    if not text.strip():
        raise Cp2kFormatError(f"{path}: the file is empty: no frames. Check that CP2K printed "
                              f"this file (&MOTION/&PRINT) and that the run got past step 0.")
    # CP2K ends every line with a newline: a missing one means the writer was cut off
    complete = text.endswith("\n")
    lines = text.split("\n")
    n_lines = len(lines)
    while n_lines and not lines[n_lines - 1].strip():
        n_lines -= 1

    starts, steps, times = [], [], []
    n_atoms = None
    i = 0
    while i < n_lines:
        k = len(starts)
        head = lines[i].strip()
        last_line = i == n_lines - 1
        try:
            n = int(head)
        except ValueError:
            if last_line and not complete:
                _truncated(path, i + 1, k, None, f"the atom-count line is cut: {head!r}", allow_truncated)
                break
            raise Cp2kFormatError(
                f"{path}, line {i + 1}, frame {k}: expected the atom count of a frame, found "
                f"{head!r}. The file is damaged or is not a CP2K xyz trajectory.") from None
        if n <= 0:
            raise Cp2kFormatError(f"{path}, line {i + 1}, frame {k}: atom count {n} is not positive")
        end = i + 2 + n
        if end > n_lines or (end == n_lines and not complete):
            found = max(0, min(n_lines, end) - i - 2)
            step = None
            if i + 1 < n_lines:
                step = _comment_fields(lines[i + 1]).get("i")
            why = (f"expected {n} atom lines, found {found}" if end > n_lines
                   else "its last line has no newline (cut while being written)")
            _truncated(path, i + 1, k, step, why, allow_truncated)
            break
        fields = _comment_fields(lines[i + 1])
        try:
            step = int(fields["i"])
        except (KeyError, ValueError):
            raise Cp2kFormatError(
                f"{path}, line {i + 2}, frame {k}: the comment line has no 'i = <step>': "
                f"{lines[i + 1].strip()!r}. Frames are matched by step, so CP2K's comment line "
                "('i = step, time = fs, E = Ha') is needed.") from None
        if n_atoms is None:
            n_atoms = n
        elif n != n_atoms:
            raise Cp2kFormatError(
                f"{path}, line {i + 1}, frame {k} (step {step}): {n} atoms, but frame 0 has "
                f"{n_atoms}. A file must hold one system; split it or cut the run before this frame.")
        try:
            times.append(float(fields.get("time", "nan")))
        except ValueError:
            times.append(math.nan)
        starts.append(i)
        steps.append(step)
        i = end

    if not starts:
        raise Cp2kFormatError(f"{path}: no complete frame in the file (truncated at its first frame)")

    n_frames = len(starts)
    atom_lines = []
    for s in starts:
        atom_lines.extend(lines[s + 2: s + 2 + n_atoms])
    tokens = "\n".join(atom_lines).split()
    values = None
    elements = None
    if len(tokens) == 4 * n_frames * n_atoms:
        elements = np.array(tokens[0::4]).reshape(n_frames, n_atoms)
        try:
            values = np.array([tokens[1::4], tokens[2::4], tokens[3::4]], dtype=np.float64)
        except ValueError:
            values = None
    # a misplaced column shows up as a non-number value or an element (or kind name, with
    # PRINT_ATOM_KIND) that does not start with a letter
    if values is None or not all(e[:1].isalpha() for e in elements[0]):
        _raise_first_bad_line(path, lines, starts, steps, n_atoms)
    values = np.ascontiguousarray(values.T.reshape(n_frames, n_atoms, 3))
    first_line = np.asarray(starts, dtype=np.int64) + 1
    data = _Xyz(path, np.asarray(steps, dtype=np.int64), np.asarray(times, dtype=np.float64),
                [str(e) for e in elements[0]], values, first_line)

    differ = elements != elements[0]
    if differ.any():
        k, a = np.argwhere(differ)[0]
        raise Cp2kFormatError(
            f"{path}, line {starts[k] + 3 + a}, frame {k} (step {steps[k]}): atom {a} is "
            f"{str(elements[k, a])!r} but {str(elements[0, a])!r} in frame 0. The atom order must "
            "be the same in every frame; the file mixes runs of different systems.")
    bad = ~np.isfinite(values)
    if bad.any():
        k, a, _ = np.argwhere(bad)[0]
        raise _bad_atom_line(path, lines[starts[k] + 2 + a], starts[k] + 3 + a,
                             f"frame {k} (step {steps[k]})")
    return data


def _raise_first_bad_line(path, lines, starts, steps, n_atoms):
    """Slow path, only on error: find and report the first malformed atom line."""
    for k, s in enumerate(starts):
        for a in range(n_atoms):
            err = _bad_atom_line(path, lines[s + 2 + a], s + 3 + a, f"frame {k} (step {steps[k]})")
            if err is not None:
                raise err
    raise Cp2kFormatError(f"{path}: malformed atom lines (could not locate them)")


def _truncated(path, lineno, frame, step, why, allow):
    at = f"frame {frame}" + (f" (step {step})" if step is not None else "")
    msg = f"{path}, line {lineno}, {at}: the last frame is incomplete: {why}"
    if not allow:
        raise Cp2kFormatError(f"{msg}. The file was cut off (CP2K still running or killed); "
                              f"{_TRUNCATED_HINT}.")
    warnings.warn(f"{msg}; dropped it", stacklevel=4)


def _last_occurrence(steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique steps (sorted) and the index of each one's last occurrence."""
    rev = steps[::-1]
    uniq, first_in_rev = np.unique(rev, return_index=True)
    return uniq, len(steps) - 1 - first_in_rev


# --------------------------------------------------------------------------- tables (.ener, .cell)
