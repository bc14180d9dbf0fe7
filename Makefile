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

.PHONY: help sweep status cancel test system-packages docs tables plots report profile bench bench-attention clean-runs

help:  ## this list: each target and what it does
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  make \1\t/' | expand -t 24

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -e '.[dev]'
	touch $(STAMP)

sweep: $(STAMP)  ## run the grid GRID (default: the DANet ablation on the built-in dataset)
	$(BIN)/danet sweep $(GRID) --cluster $(CLUSTER) $(if $(PARTITION),launcher.partition=$(PARTITION)) $(ARGS)

status: $(STAMP)  ## the state of each run of GRID's sweep
	$(BIN)/danet status $(GRID)

cancel: $(STAMP)  ## cancel GRID's queued and running runs (checkpointed; `make sweep` resumes them)
	$(BIN)/danet cancel $(GRID)

test: $(STAMP)  ## lint, then the test suite (what .ci/run calls)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# What the Chromium, LaTeX (pdflatex with booktabs) and Slurm tests use; the tests never install
# anything themselves and skip without these (or fail where DANET_REQUIRE_*=1, as in .ci/run).
TOOLS := chromium pdflatex sbatch slurmctld slurmd munged rsync
system-packages:  ## as root on Debian: install what the Chromium, LaTeX and Slurm tests use
	@missing=; for t in $(TOOLS); do command -v $$t >/dev/null || [ -x /usr/sbin/$$t ] || missing="$$missing $$t"; done; \
	if [ -z "$$missing" ]; then echo "system packages: all installed"; exit 0; fi; \
	echo "system packages: missing$$missing; installing with apt-get"; \
	export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
	apt-get install -y -qq --no-install-recommends chromium texlive-latex-recommended && \
	apt-get install -y -qq slurmctld slurmd slurm-client munge rsync

docs: $(STAMP)  ## rewrite the generated blocks of the docs (variant, config and launcher tables)
	$(BIN)/python -m danet.generated_docs

tables: $(STAMP)  ## markdown, LaTeX and CSV tables (mIoU and Δ with 95 % CIs, verdicts, cost) from runs/
	$(BIN)/danet tables runs --out reports/tables

plots: $(STAMP)  ## seaborn figures (PNG and SVG) from runs/ and reports/profile.csv
	$(BIN)/danet plots runs --out reports/plots --profile reports/profile.csv

report: $(STAMP)  ## reports/report.html: tables, figures, configs, versions in one file
	$(BIN)/danet report runs --out reports/report.html --profile reports/profile.csv

profile: $(STAMP)  ## params, FLOPs, peak memory, latency of every variant -> reports/profile.csv
	$(BIN)/danet profile --out reports/profile.csv

bench: $(STAMP)  ## speed against the matmul ceiling, every speed option side by side -> reports/bench.csv/.md
	$(BIN)/danet bench --out reports/bench.csv $(ARGS)

bench-attention: $(STAMP)  ## PAM naive vs memory-efficient: peak memory and time side by side
	$(BIN)/python -m analysis.bench_attention

clean-runs:  ## delete runs/ (every run's folder: results, checkpoints, logs)
	rm -rf runs
