"""Bottom layer: CP2K files (read, write, run) and the water topology; imports nothing above it."""

from .cp2k_exec import find_cp2k_executable, run_cp2k
from .cp2k_input import Cp2kSettings, read_cp2k_settings
from .cp2k_reader import Cp2kRun, read_cp2k_run
from .cp2k_writer import write_water_input
from .errors import Cp2kFormatError, Cp2kRunError

__all__ = ["Cp2kFormatError", "Cp2kRunError", "Cp2kSettings", "Cp2kRun", "read_cp2k_run",
           "read_cp2k_settings", "write_water_input", "run_cp2k", "find_cp2k_executable"]
