"""The agent losses: spline tables, the term plan, numba kernels, the fit and the model file."""
