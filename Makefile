# `make demo`: set up .venv and run the demo grid. `make test`: set up .venv and run the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= 2
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup demo test test-fast lint bench bench-peers clean

setup: $(VENV)/.installed

# torch first: with a GPU, PyPI's default build; without one, the CPU build (a local wheel that
# pip's find-links offer, else PyTorch's CPU index) so that no multi-GB CUDA build is pulled.
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "kdgrid needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/pip install torch==2.13.0; \
	else \
	  $(BIN)/pip install --no-index --no-deps torch==2.13.0 2>/dev/null \
	  || $(BIN)/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install --no-deps -e .
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

# The tests on CORES processes (pytest-xdist; a file's tests stay on one worker, so a module's
# toy grid runs once), the 25 slowest listed at the end. `make test-fast`: the inner loop, without
# the tests marked slow (real toy-grid runs) and without the lint.
PYTEST := $(BIN)/python -m pytest -q -n $(CORES) --dist loadfile --durations=25

test: setup lint
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

# Python (ruff), the Snakefile's formatting (snakefmt, settings in pyproject.toml) and Snakemake's
# own best-practice lints; `make test` runs it first.
lint: setup
	$(BIN)/ruff check src tests bench workflow/config_check.py workflow/filter_check.py
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

clean:
	rm -rf results/demo .snakemake
