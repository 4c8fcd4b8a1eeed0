# The two commands of the README:
#   make example   set up, then fit + simulate + validate on the bundled CP2K water run
#   make test      set up, then run the test suite
PYTHON ?= python3
OUT ?= output

.PHONY: setup system-packages example test benchmark

# Debian packages the tests drive for real: CP2K (cp2k.psmp) and LAMMPS with its
# PYTHON package (/usr/bin/lmp, for pair_style python).
system-packages:
	@if ! command -v cp2k.psmp >/dev/null || ! test -x /usr/bin/lmp; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cp2k lammps; \
	fi

setup: system-packages
	$(PYTHON) -m pip install -q -e ".[test]"

example: setup
	openmm-learning example --out $(OUT)

# the linter first ([tool.ruff] in pyproject.toml); then one worker per core, a test file
# staying on one worker, so its fixtures are built once there
test: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q -n auto --dist loadfile --durations=15

benchmark: setup
	$(PYTHON) benchmarks/openmm_speed.py
	$(PYTHON) benchmarks/lammps_speed.py
