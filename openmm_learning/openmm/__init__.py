"""The fitted losses in OpenMM: forces from the term plan, the learning integrator, simulation."""
