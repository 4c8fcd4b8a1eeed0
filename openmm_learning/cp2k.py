"""Read CP2K molecular-dynamics runs; write and run CP2K inputs for boxes of water.

Everything returned is in OpenMM units (nm, ps, kJ/mol); CP2K's own units (Angstrom,
fs, Hartree, Bohr, atomic time) are converted where the files are read.

Inputs are parsed and generated with cp2k-input-tools, never by regular expressions
or string templates. Trajectory frames are matched across the pos/frc/vel files by
MD step number, so restarted runs (repeated or skipped steps) are read correctly.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import io
import lzma
import math
import os
import re
import shutil
import subprocess
import time
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import units

__all__ = [
    "Cp2kFormatError",
    "Cp2kRunError",
    "Cp2kSettings",
    "Cp2kRun",
    "read_cp2k_run",
    "read_cp2k_settings",
    "write_water_input",
    "run_cp2k",
    "find_cp2k_executable",
]

_ROLES = ("pos", "frc", "vel", "ener", "cell", "inp")
_GLOBS = {
    "pos": "*-pos-*.xyz",
    "frc": "*-frc-*.xyz",
    "vel": "*-vel-*.xyz",
    "ener": "*.ener",
    "cell": "*.cell",
    "inp": "*.inp",
}
_COMPRESSION = ("", ".xz", ".gz")
_XYZ_UNIT = {
    "pos": units.ANGSTROM_NM,
    "frc": units.HARTREE_PER_BOHR_KJMOL_NM,
    "vel": units.BOHR_PER_AU_TIME_NM_PS,
}
_ENER_COLUMNS = ("step", "time_ps", "kinetic", "temperature", "potential", "conserved", "used_time")
_TRUNCATED_HINT = "pass allow_truncated=True (CLI: --allow-truncated) to drop the incomplete frame"
_EXECUTABLES = ("cp2k.psmp", "cp2k.popt", "cp2k", "cp2k.ssmp", "cp2k.sopt")


class Cp2kFormatError(ValueError):
    """A CP2K file that cannot be read as asked; the message says where and what to do."""


class Cp2kRunError(RuntimeError):
    """CP2K is missing, failed, or timed out."""


# --------------------------------------------------------------------------- data


@dataclass
class Cp2kSettings:
    """What a CP2K input says about an MD run (OpenMM units)."""

    project: str
    run_type: str
    method: str
    ensemble: str
    thermostat: str | None
    timestep_ps: float
    temperature_k: float
    steps: int
    cell_nm: np.ndarray
    #: element -> mass (amu): standard masses, overridden by &SUBSYS/&KIND MASS
    masses_amu: dict = field(default_factory=lambda: dict(units.MASSES_AMU))
    #: &THERMOSTAT REGION (GLOBAL, MOLECULE, MASSIVE) when a &THERMOSTAT applies, else None
    thermostat_region: str | None = None
    #: friction of ENSEMBLE LANGEVIN (1/ps), else None
    langevin_gamma_per_ps: float | None = None


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

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.steps.shape[0])

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return len(self.elements)

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


@functools.lru_cache(maxsize=1)
def _spec_tree() -> ET.ElementTree:
    """cp2k-input-tools' keyword spec, parsed once (it takes seconds)."""
    from cp2k_input_tools import DEFAULT_CP2K_INPUT_XML

    return ET.parse(DEFAULT_CP2K_INPUT_XML)


def _spec_keyword(section_path: tuple[str, ...], name: str):
    node = _spec_tree().getroot()
    for sec in section_path:
        node = next(s for s in node.iterfind("./SECTION") if s.findtext("./NAME") == sec)
    for kw in node.iterfind("./KEYWORD"):
        if name in [n.text for n in kw.iterfind("./NAME")]:
            return kw
    raise KeyError(name)


def _default(section_path, name):
    """A keyword's default value (as text) and its default unit from the spec."""
    kw = _spec_keyword(section_path, name)
    return kw.findtext("./DEFAULT_VALUE"), kw.findtext("./DEFAULT_UNIT")


def _convert(value, section_path, name, target):
    """A parsed value (cp2k-input-tools converts to the keyword's default unit) -> target unit."""
    from cp2k_input_tools.keyword_helpers import UREG

    _, unit = _default(section_path, name)
    if isinstance(value, str) and value.lstrip().startswith("["):
        # a value kept raw by _Parser: "[unit] number"
        unit, _, value = value.strip()[1:].partition("]")
        unit = unit.strip()
    try:
        if not unit or unit == target:
            return float(value)
        return float(UREG.Quantity(float(value), UREG.parse_expression(unit)).to(target).magnitude)
    except Exception as exc:
        raise Cp2kFormatError(f"{'/'.join(section_path)}/{name}: cannot read {value!r} "
                              f"[{unit}] as {target} ({exc})") from exc


def _convert_all(value, section_path, name, target) -> list[float]:
    """Like _convert for a keyword with several values (ABC, A, ALPHA_BETA_GAMMA)."""
    if isinstance(value, str):
        # kept raw by _Parser: "[unit] x y z", a unit applying to the numbers after it
        out, unit = [], None
        for token in value.split():
            if token.startswith("["):
                unit = token
            else:
                out.append(_convert(f"{unit} {token}" if unit else token, section_path, name, target))
        return out
    if isinstance(value, (list, tuple)):
        return [_convert(v, section_path, name, target) for v in value]
    return [_convert(value, section_path, name, target)]


def _make_parser(base_dir):
    from cp2k_input_tools.keyword_helpers import Keyword
    from cp2k_input_tools.parser import CP2KInputParserSimplified
    from cp2k_input_tools.parser_errors import InvalidParameterError
    from cp2k_input_tools.tokenizer import Context
    from pint.errors import PintError

    class _Parser(CP2KInputParserSimplified):
        """Simplified parser sharing one parsed spec, tolerant of units it cannot convert."""

        def __init__(self, base_dir):
            # hand the base class a stub spec, then swap in the shared one (saves ~2.5 s a parse)
            super().__init__(xmlspec=io.StringIO("<CP2K_INPUT/>"), base_dir=base_dir)
            self._spec = _spec_tree()

        def _parse_as_keyword(self, line):
            # cp2k-input-tools refuses units it cannot convert that CP2K accepts: any unit on
            # a keyword whose default unit is 'internal_cp2k' (FIST &BOND K [kcalmol*angstrom^-2]),
            # kcalmol vs hartree (&BEND K [kcalmol*rad^-2]), [nm] (read as number*meter).
            # Such a value is kept as raw text ("[unit] value"); _convert reads it.
            try:
                super()._parse_as_keyword(line)
                return
            except InvalidParameterError as exc:
                error, unit_problem = exc, "internal_cp2k" in str(exc.__cause__)
            except PintError as exc:
                error, unit_problem = exc, True
            except ValueError as exc:
                # a bad number escapes cp2k-input-tools unwrapped; wrap it so that parse()
                # adds the file and line number
                raise InvalidParameterError("invalid value", Context()) from exc
            name, _, value = line.strip().partition(" ")
            node = self._treerefs[-1].find_node_by_name("KEYWORD", name.upper())
            if not unit_problem or "[" not in value or node is None:
                raise error
            self._add_tree_keyword(Keyword(node.find("./NAME[@type='default']").text,
                                           value.strip(), node.get("repeats") == "yes", node))

    return _Parser(base_dir)


def _parse_input(inp_path: Path) -> dict:
    from cp2k_input_tools.parser_errors import ParserError
    from cp2k_input_tools.tokenizer import TokenizerError

    inp_path = Path(inp_path)
    if not inp_path.is_file():
        raise Cp2kFormatError(f"{inp_path}: input file not found")
    parser = _make_parser(str(inp_path.parent))
    try:
        return parser.parse(io.StringIO(_read_text(inp_path)))
    except (ParserError, TokenizerError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        ctx = exc.args[1] if len(exc.args) > 1 else None
        line = getattr(ctx, "linenr", None)
        fname = getattr(ctx, "filename", None) or inp_path
        if not isinstance(fname, (str, Path)) or not Path(fname).is_file():
            fname = inp_path  # the top file is parsed from a buffer (it may be compressed)
        text = getattr(ctx, "line", None)
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise Cp2kFormatError(f"{fname}, line {line}: {msg}{cause}: {text!r}. "
                              "Fix the input (CP2K would reject it too).") from exc


def _get(tree: dict, *keys, default=None):
    """Nested lookup in a simplified tree; a section may carry a '+' prefix; lists -> first."""
    node = tree
    for key in keys:
        if isinstance(node, list):
            node = node[0] if node else None
        if not isinstance(node, dict):
            return default
        node = node.get(key, node.get(f"+{key}"))
        if node is None:
            return default
    return node


def _input_line(path: Path, names) -> int | None:
    """Line number of the first line starting with one of `names` (for messages only)."""
    try:
        for no, line in enumerate(_read_text(path).split("\n"), start=1):
            first = line.split(None, 1)
            if first and first[0].upper() in names:
                return no
    except (OSError, Cp2kFormatError):
        pass
    return None


_QS_DFT = {"GPW", "GAPW", "GAPW_XC", "LRIGPW", "RIGPW", "OFGPW"}
_THERMOSTATTED = {"NVT", "NPT_I", "NPT_F", "NPT_IA", "NVT_ADIABATIC"}


def read_cp2k_settings(inp_path) -> Cp2kSettings:
    """Read an MD input's project, method, ensemble, timestep, temperature, steps and cell.

    Keywords left out take CP2K's defaults; values given with units (``[angstrom]``) are
    converted. A cell that is not orthorhombic raises Cp2kFormatError.
    """
    inp_path = Path(inp_path)
    tree = _parse_input(inp_path)
    g = ("GLOBAL",)
    md = ("MOTION", "MD")

    project = _get(tree, "global", "project_name", default=_default(g, "PROJECT_NAME")[0])
    run_type = str(_get(tree, "global", "run_type", default=_default(g, "RUN_TYPE")[0])).upper()

    fe_method = str(_get(tree, "force_eval", "method",
                         default=_default(("FORCE_EVAL",), "METHOD")[0])).upper()
    if fe_method in ("QS", "QUICKSTEP"):
        qs = str(_get(tree, "force_eval", "dft", "qs", "method",
                      default=_default(("FORCE_EVAL", "DFT", "QS"), "METHOD")[0])).upper()
        method = "QS/DFT" if qs in _QS_DFT else ("QS/xTB" if qs == "XTB" else f"QS/{qs}")
    else:
        method = fe_method

    ensemble = str(_get(tree, "motion", "md", "ensemble", default=_default(md, "ENSEMBLE")[0])).upper()
    thermostat = region = gamma = None
    if ensemble in _THERMOSTATTED:
        th = md + ("THERMOSTAT",)
        thermostat, region = (str(_get(tree, "motion", "md", "thermostat", k.lower(),
                                       default=_default(th, k)[0])).upper() for k in ("TYPE", "REGION"))
    elif ensemble == "LANGEVIN":
        thermostat = "LANGEVIN"
        lv = md + ("LANGEVIN",)
        gamma = _convert(_get(tree, "motion", "md", "langevin", "gamma", default=_default(lv, "GAMMA")[0]),
                         lv, "GAMMA", "1/ps")
    timestep = _get(tree, "motion", "md", "timestep", default=_default(md, "TIMESTEP")[0])
    temperature = _get(tree, "motion", "md", "temperature", default=_default(md, "TEMPERATURE")[0])
    steps = _get(tree, "motion", "md", "steps", default=_default(md, "STEPS")[0])

    return Cp2kSettings(
        project=str(project),
        run_type=run_type,
        method=method,
        ensemble=ensemble,
        thermostat=thermostat,
        timestep_ps=_convert(timestep, md, "TIMESTEP", "ps"),
        temperature_k=_convert(temperature, md, "TEMPERATURE", "K"),
        steps=int(steps),
        cell_nm=_cell_nm(tree, inp_path),
        masses_amu=_masses_amu(tree, inp_path),
        thermostat_region=region,
        langevin_gamma_per_ps=gamma,
    )


def _kind_element(name: str, kind: dict) -> str:
    """A kind's element: its ELEMENT keyword, else the kind name's leading letters (H1, Ow -> O)."""
    if kind.get("element"):
        return str(kind["element"]).capitalize()
    letters = re.match(r"[A-Za-z]*", name).group()
    return next((e for e in (letters[:2].capitalize(), letters[:1].upper()) if e in units.MASSES_AMU),
                letters.capitalize())


def _masses_amu(tree: dict, inp_path: Path) -> dict:
    """Element -> mass (amu): units.MASSES_AMU, overridden by &SUBSYS/&KIND MASS."""
    kinds = _get(tree, "force_eval", "subsys", "kind") or []
    # the simplified tree holds repeated &KIND sections as {name: {...}}, or, when a name
    # clashes with a keyword or repeats, as a list of {"_": name, ...} (one alone: a dict)
    if isinstance(kinds, dict):
        kinds = [kinds] if "_" in kinds else [{"_": k, **(v or {})} for k, v in kinds.items()]
    masses, given = dict(units.MASSES_AMU), {}
    for kind in kinds:
        if kind.get("mass") is None:
            continue
        name = str(kind.get("_", ""))
        el = _kind_element(name, kind)
        mass = _convert(kind["mass"], ("FORCE_EVAL", "SUBSYS", "KIND"), "MASS", "amu")
        if el in given and given[el][1] != mass:
            warnings.warn(f"{inp_path}: kinds {given[el][0]} and {name} of element {el} have masses "
                          f"{given[el][1]:g} and {mass:g} amu; masses_amu keeps {mass:g}", stacklevel=3)
        given[el] = (name, mass)
        masses[el] = mass
    return masses


def _cell_nm(tree: dict, inp_path: Path) -> np.ndarray:
    cp = ("FORCE_EVAL", "SUBSYS", "CELL")
    cell = _get(tree, "force_eval", "subsys", "cell")
    if not isinstance(cell, dict):
        raise Cp2kFormatError(f"{inp_path}: no &FORCE_EVAL/&SUBSYS/&CELL section: the box is unknown")

    def unsupported(what, names):
        line = _input_line(inp_path, names)
        at = f", line {line}" if line else ""
        return Cp2kFormatError(f"{inp_path}{at}: {what}: unsupported, only orthorhombic boxes "
                               "(ABC, or diagonal A, B, C, with angles of 90 degrees) can be used")

    abc = cell.get("abc")
    vectors = [cell.get(k) for k in ("a", "b", "c")]
    if abc is not None:
        angles = cell.get("alpha_beta_gamma")
        if angles is not None:
            deg = _convert_all(angles, cp, "ALPHA_BETA_GAMMA", "degree")
            if any(abs(d - 90.0) > 1e-6 for d in deg):
                raise unsupported(f"the cell angles are {deg} degrees (not orthorhombic)",
                                  {"ALPHA_BETA_GAMMA", "ANGLES"})
        edges_a = _convert_all(abc, cp, "ABC", "angstrom")
    elif all(v is not None for v in vectors):
        m = np.array([_convert_all(v, cp, k.upper(), "angstrom") for k, v in zip("abc", vectors)])
        if np.abs(m - np.diag(np.diag(m))).max() > 1e-6:
            raise unsupported(f"the cell vectors A, B, C = {m.tolist()} Angstrom are not diagonal "
                              "(not orthorhombic)", {"A", "B", "C"})
        edges_a = list(np.diag(m))
    elif cell.get("cell_file_name") is not None:
        raise unsupported("the cell is read from CELL_FILE_NAME, which is not supported", {"CELL_FILE_NAME"})
    else:
        raise Cp2kFormatError(f"{inp_path}: &CELL has neither ABC nor A, B, C: the box is unknown")
    mult = cell.get("multiple_unit_cell")
    factor = np.asarray(mult, dtype=np.float64) if mult is not None else np.ones(3)
    return np.asarray(edges_a, dtype=np.float64) * factor * units.ANGSTROM_NM


# --------------------------------------------------------------------------- reading runs


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

_WATER_MASS_AMU = 2 * units.MASSES_AMU["H"] + units.MASSES_AMU["O"]
_AVOGADRO = 6.02214076e23
_OH_NM = 0.0957
_HOH_DEG = 104.5
#: closest allowed approach (nm) of atoms of different molecules in a generated start
_MIN_CONTACT_NM = 0.17


def water_box_edge_nm(n_molecules: int, density_g_cm3: float) -> float:
    """Cubic box edge (nm) holding n water molecules at the given density."""
    grams = n_molecules * _WATER_MASS_AMU / _AVOGADRO
    return (grams / density_g_cm3) ** (1.0 / 3.0) * 1e7  # cm -> nm


def _lattice_sites(n: int, edge: float, rng) -> tuple[np.ndarray, float]:
    """n sites (nm) of the simple-cubic, bcc or fcc lattice with the widest spacing, and that spacing."""
    best = None
    for basis, spacing in (
        (np.zeros((1, 3)), 1.0),
        (np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), math.sqrt(3) / 2),
        (np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]), math.sqrt(0.5)),
    ):
        m = 1
        while len(basis) * m**3 < n:
            m += 1
        nearest = edge / m * spacing
        if best is None or nearest > best[0] + 1e-12:
            best = (nearest, basis, m)
    nearest, basis, m = best
    cells = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    sites = ((cells + basis[None]).reshape(-1, 3) + 0.25) * (edge / m)
    keep = np.sort(rng.choice(len(sites), size=n, replace=False))
    return sites[keep], nearest


def _random_rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def water_lattice(n_molecules: int, edge_nm: float, seed: int = 1) -> np.ndarray:
    """Positions (n_molecules * 3, 3) in nm, O H H per molecule, randomly oriented on a lattice.

    Orientations are redrawn until no two atoms of different molecules (or periodic
    images) come closer than 0.17 nm.
    """
    rng = np.random.default_rng(seed)
    sites, nearest = _lattice_sites(n_molecules, edge_nm, rng)
    if nearest < 0.25:
        raise ValueError(f"{n_molecules} molecules in a {edge_nm:.3f} nm box: lattice spacing "
                         f"{nearest:.3f} nm is too tight for a start structure; lower the density")
    half = math.radians(_HOH_DEG) / 2
    body = _OH_NM * np.array([[0, 0, 0], [math.sin(half), math.cos(half), 0],
                              [-math.sin(half), math.cos(half), 0]])
    placed = np.empty((0, 3))
    for site in sites:
        for _ in range(10000):
            mol = site + body @ _random_rotation(rng).T
            if placed.size == 0:
                break
            d = mol[:, None, :] - placed[None, :, :]
            d -= edge_nm * np.rint(d / edge_nm)
            if np.sqrt((d**2).sum(-1)).min() >= _MIN_CONTACT_NM:
                break
        else:
            raise ValueError(f"could not place {n_molecules} water molecules without overlap in a "
                             f"{edge_nm:.3f} nm box; lower the density")
        placed = np.vstack([placed, mol])
    return placed


def _generator():
    from cp2k_input_tools.generator import CP2KInputGenerator

    gen = CP2KInputGenerator.__new__(CP2KInputGenerator)
    try:
        # same trick as the parser: share the parsed spec instead of re-reading 27 MB
        CP2KInputGenerator.__init__(gen, xmlspec=io.StringIO("<CP2K_INPUT/>"))
        gen._parse_tree = _spec_tree()
    except Exception:  # pragma: no cover - other cp2k-input-tools versions
        gen = CP2KInputGenerator()
    return gen


def _natural_order(tree: dict) -> dict:
    """Reorder a tree so the generator writes sections in the order given.

    The generator writes a section's keywords first, then its subsections from a stack,
    i.e. last one first; reversing the subsections undoes that.
    """
    keywords = [(k, v) for k, v in tree.items() if not isinstance(v, dict)]
    sections = [(k, _natural_order(v)) for k, v in tree.items() if isinstance(v, dict)]
    return dict(keywords + sections[::-1])


def _choice(name: str, value, allowed: tuple[str, ...]) -> str:
    """`value` as spelled in `allowed` (case-insensitive), else a ValueError naming them."""
    for a in allowed:
        if str(value).upper() == a.upper():
            return a
    raise ValueError(f"{name} {value!r}: use one of {', '.join(repr(a) for a in allowed)}")


_ENSEMBLES = ("LANGEVIN", "NVT", "NVE")
_REGIONS = ("MASSIVE", "MOLECULE", "GLOBAL")
#: CSVR time constant (fs): a global thermostat acts on the total kinetic energy only; a
#: massive one kicks every velocity component, so a longer time keeps the dynamics
#: (O-H stretch ~9 fs, librations ~50 fs) less disturbed, still equilibrating in < 1 ps
_TIMECON_FS = {"GLOBAL": 50.0, "MOLECULE": 50.0, "MASSIVE": 100.0}


def _md_thermostat(ensemble, gamma_per_fs, region, timecon_fs) -> tuple[dict, str]:
    """The thermostat part of &MD and its description for the header comment."""
    if ensemble == "LANGEVIN":
        return {"langevin": {"gamma": float(gamma_per_fs)}}, f"LANGEVIN gamma {gamma_per_fs:g}/fs"
    if ensemble == "NVT":
        return ({"thermostat": {"type": "CSVR", "region": region, "csvr": {"timecon": float(timecon_fs)}}},
                f"NVT CSVR {region} {timecon_fs:g} fs")
    return {}, "NVE"


def _water_tree(*, project, coord_file, edge_a, method, temperature_k, steps, timestep_fs, seed,
                ensemble, thermostat, hydrogen_mass_amu, print_every) -> dict:
    # GMAX ~2 per Angstrom of edge, odd (an even grid count is not allowed)
    gmax = int(round(2 * edge_a))
    gmax += 1 - gmax % 2
    if method == "xtb":
        dft = {
            "qs": {
                "method": "xTB",
                "xtb": {
                    "do_ewald": True,
                    "check_atomic_charges": False,
                    "parameter": {"dispersion_parameter_file": "dftd3.dat",
                                  "param_file_name": "xTB_parameters"},
                },
            },
            # without ALPHA, CP2K 2023.1's xTB Ewald takes 1/bohr and is far from converged
            "poisson": {"periodic": "XYZ",
                        "ewald": {"ewald_type": "SPME", "alpha": "[angstrom^-1] 0.35",
                                  "gmax": gmax, "o_spline": 5}},
            "scf": {"scf_guess": "ATOMIC", "eps_scf": 1e-6, "max_scf": 30,
                    "ot": {"preconditioner": "FULL_SINGLE_INVERSE", "minimizer": "DIIS"},
                    "outer_scf": {"max_scf": 10, "eps_scf": 1e-6}},
        }
        kinds = None
    elif method == "dft":
        dft = {
            "basis_set_file_name": "BASIS_MOLOPT",
            "potential_file_name": "GTH_POTENTIALS",
            "mgrid": {"cutoff": 400, "rel_cutoff": 50},
            "qs": {"method": "GPW", "eps_default": 1e-12},
            "poisson": {"periodic": "XYZ"},
            "scf": {"scf_guess": "ATOMIC", "eps_scf": 1e-6, "max_scf": 30,
                    "ot": {"preconditioner": "FULL_SINGLE_INVERSE", "minimizer": "DIIS"},
                    "outer_scf": {"max_scf": 10, "eps_scf": 1e-6}},
            "xc": {
                "xc_functional": {"_": "BLYP"},
                "vdw_potential": {
                    "potential_type": "PAIR_POTENTIAL",
                    "pair_potential": {"type": "DFTD3", "parameter_file_name": "dftd3.dat",
                                       "reference_functional": "BLYP"},
                },
            },
        }
        kinds = {"O": {"basis_set": "DZVP-MOLOPT-SR-GTH", "potential": "GTH-BLYP-q6"},
                 "H": {"basis_set": "DZVP-MOLOPT-SR-GTH", "potential": "GTH-BLYP-q1"}}
    else:
        raise ValueError(f"method {method!r}: use 'xtb' or 'dft'")

    subsys = {
        "cell": {"abc": [edge_a] * 3, "periodic": "XYZ"},
        "topology": {"coord_file_name": coord_file, "coord_file_format": "XYZ"},
    }
    if hydrogen_mass_amu is not None:
        kinds = kinds or {}
        kinds.setdefault("H", {}).update(element="H", mass=float(hydrogen_mass_amu))
    if kinds:
        subsys["kind"] = kinds
    md = {"ensemble": ensemble, "steps": int(steps), "timestep": float(timestep_fs),
          "temperature": float(temperature_k), **thermostat}
    each = {"each": {"md": int(print_every)}}
    return {
        "global": {"project_name": project, "run_type": "MD", "print_level": "LOW", "seed": int(seed)},
        "force_eval": {"method": "QS", "dft": dft, "subsys": subsys},
        "motion": {
            "md": md,
            "print": {
                "trajectory": dict(each),
                "forces": dict(each),
                "velocities": dict(each),
                "restart": {"backup_copies": 0, "each": {"md": 100}},
            },
        },
    }


def write_water_input(directory, *, n_molecules=8, density_g_cm3=0.997, method="xtb",
                      temperature_k=300.0, steps=10, timestep_fs=0.5, seed=1, ensemble="LANGEVIN",
                      langevin_gamma_per_fs=0.002, thermostat_region="massive", thermostat_timecon_fs=None,
                      hydrogen_mass_amu=None, project=None, print_every=1, threads=None) -> Path:
    """Write a CP2K MD input for a cubic box of water, and its start coordinates.

    Parameters
    ----------
    directory : where the input and ``<project>-start.xyz`` go (created if needed)
    method : "xtb" (GFN1-xTB, SPME Ewald alpha 0.35/A) or "dft" (BLYP-D3,
        DZVP-MOLOPT-SR-GTH, GTH pseudopotentials, 400 Ry)
    ensemble : "LANGEVIN" (default; friction `langevin_gamma_per_fs`, 1/fs), "NVT" (CSVR
        thermostat) or "NVE". A thermostat must be local (LANGEVIN, or NVT with region
        "massive"): a global one scales all velocities by one factor, so flexible water
        keeps translation, rotation and vibration at different temperatures for tens of ps.
    thermostat_region : NVT only: "massive" (one thermostat per degree of freedom, default),
        "molecule" or "global"
    thermostat_timecon_fs : NVT only: CSVR time constant; default 100 fs massive, else 50 fs
    hydrogen_mass_amu : when given, &KIND H gets this MASS (e.g. 2 for a longer step in a
        structure-only reference: classical structure does not depend on the masses)
    seed : drives the start orientations and CP2K's initial velocities (&GLOBAL SEED)
    threads : OMP threads named in the input's header comment (the command to run it)

    Returns
    -------
    Path of the ``.inp`` file.
    """
    method = _choice("method", method, ("xtb", "dft"))
    ensemble = _choice("ensemble", ensemble, _ENSEMBLES)
    region = _choice("thermostat_region", thermostat_region, _REGIONS)
    timecon_fs = _TIMECON_FS[region] if thermostat_timecon_fs is None else thermostat_timecon_fs
    if n_molecules < 1 or steps < 1 or print_every < 1 or timestep_fs <= 0 or density_g_cm3 <= 0:
        raise ValueError("n_molecules, steps, print_every, timestep_fs and density_g_cm3 must be positive")
    if min(langevin_gamma_per_fs, timecon_fs, 1 if hydrogen_mass_amu is None else hydrogen_mass_amu) <= 0:
        raise ValueError("langevin_gamma_per_fs, thermostat_timecon_fs and hydrogen_mass_amu must be positive")
    thermostat, described = _md_thermostat(ensemble, langevin_gamma_per_fs, region, timecon_fs)
    if hydrogen_mass_amu is not None:
        described += f", H mass {hydrogen_mass_amu:g} amu"
    if project is None:
        project = f"water{n_molecules}-{method}-{ensemble.lower()}-{temperature_k:g}K"
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    edge_nm = water_box_edge_nm(n_molecules, density_g_cm3)
    edge_a = round(edge_nm / units.ANGSTROM_NM, 6)
    xyz = water_lattice(n_molecules, edge_nm, seed) / units.ANGSTROM_NM
    coord_file = f"{project}-start.xyz"
    lines = [str(len(xyz)),
             f"{n_molecules} H2O, cubic {edge_a} A, {density_g_cm3} g/cm3, lattice start seed {seed}"]
    lines += [f"{el}  {x:14.8f} {y:14.8f} {z:14.8f}"
              for el, (x, y, z) in zip(["O", "H", "H"] * n_molecules, xyz)]
    (directory / coord_file).write_text("\n".join(lines) + "\n")

    tree = _water_tree(project=project, coord_file=coord_file, edge_a=edge_a, method=method,
                       temperature_k=temperature_k, steps=steps, timestep_fs=timestep_fs,
                       seed=seed, ensemble=ensemble, thermostat=thermostat,
                       hydrogen_mass_amu=hydrogen_mass_amu, print_every=print_every)
    inp = directory / f"{project}.inp"
    header = [
        f"# {n_molecules} water molecules, {method}, {described}, {temperature_k:g} K, "
        f"{steps} steps of {timestep_fs:g} fs; written by openmm_learning.cp2k.write_water_input",
        f"# run: OMP_NUM_THREADS={threads or 2} cp2k.psmp -i {inp.name} -o {project}.out",
        "# beside other work: OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE (CP2K's threads spin-wait)",
    ]
    inp.write_text("\n".join(header + list(_generator().line_iter(_natural_order(tree)))) + "\n")
    return inp


# --------------------------------------------------------------------------- running CP2K


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
