# `make demo`: set up .venv and run the demo grid. `make test`: set up .venv and run the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= 2
export PATH := $(CURDIR)/$(BIN):$(PATH)

# Byte code: setup installs with pip's --no-compile (below), so a module is compiled on its first
# import. With PYTHONDONTWRITEBYTECODE set (it is on our CI machines) nothing was ever written, and
# each of the hundreds of job processes of a grid or of the tests compiled torch's modules again:
# make test's CPU time on a fresh clone was twice that of a venv with byte code. The make targets
# write it, into .venv/pycache, so that no __pycache__ appears in the source tree.
unexport PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX := $(CURDIR)/$(VENV)/pycache

.PHONY: setup demo test test-fast lint bench bench-peers clean gpu-check gpu-wheels gpu-venv

setup: $(VENV)/.installed

# torch first: with a GPU, PyPI's default build; without one, the CPU build (a local wheel that
# pip's find-links offer, else PyTorch's CPU index) so that no multi-GB CUDA build is pulled.
# --no-compile: pip would byte-compile every module of every package (torch's alone took 35 of
# the 56 s of its install here); Python compiles the modules a run imports, once, on first use.
PIP := $(BIN)/pip install --no-compile
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "kdgrid needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1; then \
	  $(PIP) torch==2.13.0; \
	else \
	  $(PIP) --no-index --no-deps torch==2.13.0 2>/dev/null \
	  || $(PIP) torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -e .
	$(BIN)/python -c 'import torch, sentencepiece, sacrebleu, eflomal, snakemake; print("torch", torch.__version__)'
	touch $@

demo: setup
	$(BIN)/snakemake --cores $(CORES) --show-failed-logs
	@echo
	@cat results/demo/grid.md
	@echo
	$(BIN)/snakemake --report results/demo/report.html
	@echo "Report files: results/demo/grid.md, results/demo/grid.csv, results/demo/scores.csv, results/demo/grid.png"
	@echo "Costs: results/demo/costs.csv (and the last section of grid.md)"
	@echo "Per-job logs: results/demo/logs/   timings: results/demo/benchmarks/"
	@echo "HTML report (open in a browser): $(CURDIR)/results/demo/report.html"

# The tests on CORES processes (pytest-xdist), a module's tests on one worker (--dist loadfile: a
# module-scoped fixture such as a toy grid is built once; see tests/conftest.py for the order), the
# 25 slowest listed at the end.
# `make test-fast`: the inner loop, without
# the tests marked slow (real toy-grid runs) and without the lint.
PYTEST := $(BIN)/python -m pytest -q -n $(CORES) --dist loadfile --no-loadscope-reorder --durations=25

test: setup lint
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

# Python (ruff), the Snakefile's formatting (snakefmt, settings in pyproject.toml) and Snakemake's
# own best-practice lints; `make test` runs it first.
lint: setup
	$(BIN)/ruff check src tests bench workflow/config_check.py workflow/filter_check.py workflow/teacher_check.py
	$(BIN)/snakefmt --check Snakefile workflow/
	$(BIN)/snakemake --lint

bench: setup
	$(BIN)/python bench/teacher_speed.py

# The peers (fairseq, CTranslate2) in their own venv, never kdgrid's dependencies; bench/peers.py
# trains and decodes the same synthetic data with kdgrid and each peer, alternating, and prints
# medians and kdgrid/peer ratios. fairseq-fixed builds from source (a few minutes, once).
PEERS := bench/.peers-venv
bench-peers: setup $(PEERS)/.installed
	$(PEERS)/bin/python bench/peers.py

$(PEERS)/.installed: bench/peers-requirements.txt
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --no-index --no-deps torch==2.13.0 2>/dev/null \
	  || $(PEERS)/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
	$(PEERS)/bin/pip install -r bench/peers-requirements.txt
	$(PEERS)/bin/pip install --no-build-isolation --no-deps fairseq-fixed==0.12.3.1
	$(PEERS)/bin/pip install --no-deps -e .
	$(PEERS)/bin/python -c 'import fairseq, ctranslate2, kdgrid; print("fairseq", fairseq.__version__, "ctranslate2", ctranslate2.__version__)'
	touch $@

# `make gpu-check`: does kdgrid work on this GPU, and how fast (bench/gpu_check.py: training
# tokens/s and MFU, distillation GPU vs CPU, the toy grid through profiles/workstation, the tests
# marked cuda; a PASS/FAIL summary). It runs with GPU_PYTHON: bench/.gpu-venv's if there is one
# (the machine's own torch, the rest installed from wheel files, nothing downloaded), else .venv's.
# Without CUDA it runs at toy size on the CPU. GPU_CHECK_ARGS, e.g. --parts train,distill --keep.
# Not on `setup`: that would install the pinned torch from PyPI over the cluster's own build.
GPU_VENV   := bench/.gpu-venv
GPU_WHEELS := bench/.gpu-wheels
GPU_PYTHON ?= $(firstword $(wildcard $(GPU_VENV)/bin/python $(BIN)/python) python3)
gpu-check:
	$(GPU_PYTHON) bench/gpu_check.py $(GPU_CHECK_ARGS)

# On a machine that reaches PyPI, run by the GPU machine's Python version (PYTHON=python3.12 ...):
# every package but torch as wheels (pip builds the few pure-Python ones PyPI has only as
# sources), and eflomal as its source (built on the GPU machine: -march=native) with its build
# requirements. Copy bench/.gpu-wheels to the GPU machine with the repository.
gpu-wheels:
	mkdir -p $(GPU_WHEELS)
	sed -e '/^torch==/d' -e '/^eflomal==/d' requirements.txt > $(GPU_WHEELS)/requirements.txt
	$(PYTHON) -m pip wheel -w $(GPU_WHEELS) -r $(GPU_WHEELS)/requirements.txt setuptools wheel Cython
	$(PYTHON) -m pip download -d $(GPU_WHEELS) --no-deps --no-binary eflomal $$(grep '^eflomal==' requirements.txt)
	grep '^eflomal==' requirements.txt >> $(GPU_WHEELS)/requirements.txt
	$(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' > $(GPU_WHEELS)/python-version
	@echo "$(GPU_WHEELS): wheels for Python $$(cat $(GPU_WHEELS)/python-version), $$(du -sh $(GPU_WHEELS) | cut -f1)"

# On the GPU machine, offline: a venv that sees GPU_BASE_PYTHON's packages (the cluster's torch:
# e.g. after `module load pytorch`, or a conda env's python) plus the wheels. Needs gcc and make
# for eflomal.
GPU_BASE_PYTHON ?= python3
gpu-venv:
	$(GPU_BASE_PYTHON) -c 'import sys; sys.exit(sys.prefix != sys.base_prefix and "GPU_BASE_PYTHON is a venv'"'"'s python, whose packages a venv cannot see: give the python of the cluster'"'"'s torch")'
	$(GPU_BASE_PYTHON) -c 'import torch' || { echo "GPU_BASE_PYTHON=$(GPU_BASE_PYTHON) has no torch: give the python of the cluster's torch"; exit 1; }
	$(GPU_BASE_PYTHON) -c 'import sys; v = "%d.%d" % sys.version_info[:2]; w = open("$(GPU_WHEELS)/python-version").read().strip(); sys.exit(v != w and f"the wheels are for Python {w}, GPU_BASE_PYTHON is {v}: make gpu-wheels with PYTHON=python{v}")'
	$(GPU_BASE_PYTHON) -m venv --system-site-packages $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install --no-index --find-links $(GPU_WHEELS) -r $(GPU_WHEELS)/requirements.txt
	$(GPU_VENV)/bin/python -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.is_available())'

clean:
	rm -rf results/demo .snakemake
