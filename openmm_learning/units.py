"""Unit conversions between CP2K's atomic units and OpenMM's (nm, ps, kJ/mol, amu).

Everything inside the package is in OpenMM units; these factors are applied only
where files are read or written.
"""

BOHR_NM = 0.0529177210903
HARTREE_KJMOL = 2625.4996394799
ATOMIC_TIME_PS = 2.4188843265857e-5
ANGSTROM_NM = 0.1
FS_PS = 1.0e-3
#: thermochemical kcal in kJ (LAMMPS `units real`, force fields in kcal/mol)
KCAL_KJ = 4.184
#: 1 eV per particle in kJ/mol (LAMMPS `units metal`)
EV_KJMOL = 96.48533212331

#: 1 Ha/Bohr in kJ/mol/nm (= 49614.75)
HARTREE_PER_BOHR_KJMOL_NM = HARTREE_KJMOL / BOHR_NM
#: 1 Bohr per atomic time unit in nm/ps (= 2187.691)
BOHR_PER_AU_TIME_NM_PS = BOHR_NM / ATOMIC_TIME_PS
#: Boltzmann constant in kJ/mol/K
KB_KJMOL_K = 0.00831446261815324

MASSES_AMU = {"H": 1.00794, "O": 15.9994}
