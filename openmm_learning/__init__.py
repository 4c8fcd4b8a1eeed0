"""openmm-learning: molecular learning dynamics from CP2K runs, executed in OpenMM and LAMMPS."""

__version__ = "0.1.0"
