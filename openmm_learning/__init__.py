"""openmm-learning: molecular learning dynamics from CP2K runs, executed in OpenMM and LAMMPS.

The front door (imported on first use, so `import openmm_learning` stays light):

    LossModel       a fitted model file (openmm_learning.losses.model)
    LearnedWater    the model as OpenMM forces and integrator for any water topology
    read_cp2k_run   a CP2K MD run folder in OpenMM units
    example_run_dir, example_pdb   the bundled CP2K examples and a 64-water PDB
"""

__version__ = "0.1.0"

_EXPORTS = {"LossModel": "losses.model", "LearnedWater": "openmm.api", "read_cp2k_run": "io",
            "example_run_dir": "io.water_run", "example_pdb": "io.water_run", "load_water_run": "io.water_run"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'openmm_learning' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
