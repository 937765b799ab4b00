# twocol: every target calls the `twocol` CLI or pytest inside .venv.
# Override any of these on the command line, e.g. `make install TORCH=torch==2.5.1`.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
DALI   ?= nvidia-dali-cuda130
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.twocol-installed

.PHONY: install test test-all

install: $(STAMP)

# Re-run when the package's build inputs change.
$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)" numpy pillow pyyaml matplotlib pytest ninja setuptools wheel
	$(if $(DALI),$(PY) -m pip install --quiet "$(DALI)")
	$(PY) -m pip install --quiet --no-build-isolation -e .
	touch $@

test: install
	$(PY) -m pytest -q -m "not slow"

test-all: install
	$(PY) -m pytest -q
