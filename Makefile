# twocol: every target calls the `twocol` CLI or pytest inside .venv.
# Override any of these on the command line, e.g. `make install TORCH=torch==2.5.1`.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
DALI   ?= nvidia-dali-cuda130
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.twocol-installed

# make train [CONFIG=...] [DATA=...] [GPUS=0,1] [ARGS="key=value ..."]
# More than two GPU ids start one process per pair under torchrun (GPUS=0,1,2,3: 2 processes);
# NPROC=2 GPUS=cpu runs two CPU-simulated pairs.
CONFIG ?=
DATA   ?=
GPUS   ?=
ARGS   ?=
comma  := ,
NPROC  ?= $(shell echo $$(( ($(words $(subst $(comma), ,$(GPUS))) + 1) / 2 )))
LAUNCH := $(if $(filter-out 0 1,$(NPROC)),$(VENV)/bin/torchrun --standalone --nproc-per-node=$(NPROC) -m twocol,$(VENV)/bin/twocol)

.PHONY: install test test-all train

install: $(STAMP)

# Re-run when the package's build inputs change (pyproject.toml, setup.py, the kernels of twocol._C).
$(STAMP): pyproject.toml setup.py $(wildcard kernels/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)" numpy pillow pyyaml matplotlib scipy pytest ninja setuptools wheel
	$(if $(DALI),$(PY) -m pip install --quiet "$(DALI)")
	$(PY) -m pip install --quiet --no-build-isolation -e .
	touch $@

test: install
	$(PY) -m pytest -q -m "not slow"

test-all: install
	$(PY) -m pytest -q

# Fused ReLU+LRN kernels vs torch: CUDA if there is a GPU, else the CPU (bench/kernels.py).
.PHONY: bench-kernels
bench-kernels: install
	$(PY) -m bench.kernels

# Data loaders, DALI vs torch + Pillow, images/s on the same prepared sets (bench/data.py).
.PHONY: bench-data
bench-data: install
	$(PY) -m bench.data $(ARGS)

# Training from JPEG files end to end, per feed: synthetic tensors, DALI GPU / CPU decode, torch +
# Pillow (bench/e2e.py; the paper net on a GPU, a CPU preset otherwise; makes its 10,000-image set
# under data/ once).
.PHONY: bench-e2e
bench-e2e: install
	$(PY) -m bench.e2e $(if $(GPUS),--gpus $(firstword $(subst $(comma), ,$(GPUS))))

# make bench [PROTOCOL=...] [DATA=...] [GPUS=...] [CONFIG=...] [ARGS="..."]: the paper's comparisons as the
# protocol file says (default bench/protocols/cpu.yaml, the CPU scale model; ARGS go to bench/paper.py,
# e.g. ARGS="--seeds 2" for a quick look), training throughput (of CONFIG), kernels, data loaders and
# end to end, then bench/results/latest.md and latest.png (python -m bench.report).
PROTOCOL ?=
.PHONY: bench
bench: install
	$(PY) -m bench.paper $(if $(PROTOCOL),--protocol $(PROTOCOL)) $(if $(DATA),--data $(DATA)) $(if $(GPUS),--gpus $(GPUS)) $(ARGS)
	$(PY) -m bench.throughput $(if $(CONFIG),--config $(CONFIG)) $(if $(GPUS),--gpus $(GPUS))
	$(PY) -m bench.kernels
	$(PY) -m bench.data $(if $(GPUS),--gpus $(firstword $(subst $(comma), ,$(GPUS))))
	$(PY) -m bench.e2e $(if $(GPUS),--gpus $(firstword $(subst $(comma), ,$(GPUS))))
	$(PY) -m bench.report

train: install
	$(LAUNCH) train $(if $(CONFIG),-c $(CONFIG)) $(if $(GPUS),--gpus $(GPUS)) $(if $(DATA),--data $(DATA)) $(ARGS)
