"""CP2K inputs parsed with cp2k-input-tools: what an MD input says (method, ensemble, masses, cell)."""

from __future__ import annotations

import functools
import io
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import units
from .cp2k_xyz import _read_text
from .errors import Cp2kFormatError


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
    #: TIMECON of a CSVR or NOSE thermostat (ps), else None
    thermostat_time_ps: float | None = None

    @property
    def csvr_time_ps(self) -> float | None:
        """The run's CSVR time constant (ps), None when it used another thermostat."""
        return self.thermostat_time_ps if self.thermostat == "CSVR" else None

    @property
    def langevin_friction_per_ps(self) -> float | None:
        """The run's Langevin friction (1/ps), None when it used another thermostat."""
        return self.langevin_gamma_per_ps if self.thermostat == "LANGEVIN" else None


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
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:  # the parser's own slips
        raise Cp2kFormatError(f"{inp_path}: cannot be parsed as a CP2K input ({type(exc).__name__}: {exc}). "
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
    thermostat = region = gamma = timecon = None
    if ensemble in _THERMOSTATTED:
        th = md + ("THERMOSTAT",)
        thermostat, region = (str(_get(tree, "motion", "md", "thermostat", k.lower(),
                                       default=_default(th, k)[0])).upper() for k in ("TYPE", "REGION"))
        if thermostat in ("CSVR", "NOSE"):
            sec = th + (thermostat,)
            timecon = _convert(_get(tree, "motion", "md", "thermostat", thermostat.lower(), "timecon",
                                    default=_default(sec, "TIMECON")[0]), sec, "TIMECON", "ps")
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
        thermostat_time_ps=timecon,
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
    box = np.asarray(edges_a, dtype=np.float64) * factor * units.ANGSTROM_NM
    if box.shape != (3,) or not np.all(np.isfinite(box)) or np.any(box <= 0):
        line = _input_line(inp_path, {"ABC", "A", "B", "C", "MULTIPLE_UNIT_CELL"})
        raise Cp2kFormatError(f"{inp_path}{f', line {line}' if line else ''}: the cell edges {box.tolist()} nm are "
                              "not three finite positive lengths")
    return box


# --------------------------------------------------------------------------- reading runs
