"""Accuracies that README.md states, as the tests assert them (tests/test_readme.py checks
that README says exactly these numbers)."""

#: relative RMS difference of forces between engines and the numba reference evaluator
OPENMM_REFERENCE = 1e-13
OPENMM_CPU = 2e-6
#: the same for a model compiled to Chebyshev series: OpenMM evaluates each as a polynomial
#: in Horner form, whose coefficients are larger than its values (single precision on the CPU)
OPENMM_REFERENCE_SERIES = 1e-12
OPENMM_CPU_SERIES = 2e-4
#: what compiling a model's splines to Chebyshev series may add to its held-out force
#: RMSE, in percent of the RMS reference force
COMPILED_ADDED_PERCENT = 0.1
LAMMPS_PAIR_PYTHON = 1e-6
LAMMPS_TABLES = 1e-6
#: models with point charges: OpenMM's PME at error tolerance PME_ERROR_TOLERANCE and LAMMPS's
#: pppm at accuracy PPPM_ACCURACY (the engines' Ewald accuracy is then the limit)
PME_ERROR_TOLERANCE = 1e-7
OPENMM_PME = 2e-6
PPPM_ACCURACY = 1e-8
#: largest relative difference of thermo output between 1 and 2 MPI ranks
LAMMPS_MPI = 1e-8
#: SPC/Fw known truth: held-out relative force RMSE of the reciprocal fit, as README states it (%)
SPCFW_HELD_OUT_PERCENT = {"O": 3.4, "H": 2.6}
#: SPC/Fw known truth fitted with point charges: the fitted q_H within this many percent of
#: 0.41 e, held-out relative force RMSE below this many percent (both species, both modes)
SPCFW_CHARGE_PERCENT = 0.5
SPCFW_CHARGED_HELD_OUT_PERCENT = 0.2
