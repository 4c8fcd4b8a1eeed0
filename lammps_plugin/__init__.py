"""LAMMPS side of openmm-learning: pair_style python class, table and deck writers, agent-mode driver."""
