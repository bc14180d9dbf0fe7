# danet-bench entry points. `make sweep` and `make test` work on a fresh machine: the first
# call creates .venv and installs the pinned dependencies from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
GRID ?= experiments/ablation.yaml
CLUSTER ?= local
PARTITION ?=
ARGS ?=

.PHONY: sweep status test tables bench-attention clean-runs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -e '.[dev]'
	touch $(STAMP)

sweep: $(STAMP)  ## run the grid GRID (default: the DANet ablation on the built-in dataset)
	$(BIN)/danet sweep $(GRID) --cluster $(CLUSTER) $(if $(PARTITION),launcher.partition=$(PARTITION)) $(ARGS)

status: $(STAMP)  ## the state of each run of GRID's sweep
	$(BIN)/danet status $(GRID)

test: $(STAMP)  ## lint, then the test suite (what .ci/run calls)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

tables: $(STAMP)  ## ablation tables and figure from every run under runs/
	$(BIN)/danet tables runs --out reports/all

bench-attention: $(STAMP)  ## PAM naive vs memory-efficient: peak memory and time side by side
	$(BIN)/python -m analysis.bench_attention

clean-runs:
	rm -rf runs
