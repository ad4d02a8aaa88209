# One command to set up and run, one to set up and test. Everything lives in .venv and the project folder.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | cksum | cut -d' ' -f1)

# No telemetry, and every library's state inside the project (see src/lifecycle/runtime.py for the same list).
export PATH                             := $(CURDIR)/$(BIN):$(PATH)
export DO_NOT_TRACK                     := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export BENTOML_DO_NOT_TRACK             := true
export DVC_NO_ANALYTICS                 := 1
export ITERATIVE_DO_NOT_TRACK           := 1
export GX_ANALYTICS_ENABLED             := false
export HF_HUB_OFFLINE                   := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export PREFECT_HOME                     ?= $(CURDIR)/.prefect
export BENTOML_HOME                     ?= $(CURDIR)/.bentoml
export DVC_SITE_CACHE_DIR               ?= $(CURDIR)/.dvc/site-cache
export MPLCONFIGDIR                     ?= $(CURDIR)/.cache/matplotlib

.PHONY: setup run lint test chromium report dvc-yaml serve bento schedule bench bench-serve clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

run: setup  ## the whole lifecycle for every task in params.yaml, through the Prefect flow
	$(BIN)/python flows/training.py

lint: setup  ## ruff (lint and format), the import-linter layer contracts, mypy; any finding fails
	$(BIN)/ruff check src flows tests bench
	$(BIN)/ruff format --check src flows tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

# Tests run in one process per core (at most 4), a file's tests in the same process (its module fixtures are shared).
test: lint chromium
	$(BIN)/python -m pytest -n logical --maxprocesses 4 --dist loadfile --durations 25

# The browser test opens the reports in Debian's headless Chromium; as root, install it when missing (else it skips).
chromium:
	@if ! command -v chromium >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; fi

report: setup  ## rebuild the report site reports/index.html from the reports on disk
	$(BIN)/lifecycle report

dvc-yaml: setup  ## regenerate dvc.yaml from the pipeline definition, for params.yaml's tasks
	$(BIN)/lifecycle dvc-yaml

HOST ?= 127.0.0.1
PORT ?= 3000
serve: setup  ## serve the production models (after `make run`): POST /classify ... on $(HOST):$(PORT)
	$(BIN)/bentoml serve lifecycle.service:Lifecycle --host $(HOST) --port $(PORT)

bento: setup  ## build the Bento (service, code, params.yaml, production models, generated Dockerfile)
	$(BIN)/bentoml build

bench: setup  ## trainer throughput against a bare PyTorch loop and Lightning
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[bench]'
	$(BIN)/python bench/train_throughput.py

schedule: setup  ## serve the retrain-<task> and monitor-<task> deployments on their crons (params.yaml monitoring)
	$(BIN)/python -m flows.deployments

bench-serve: setup  ## served requests/s and latency with and without adaptive batching (after `make run`)
	$(BIN)/python bench/serve_load.py

clean:  ## remove generated data, models and reports (DVC's cache keeps their versions)
	rm -rf data/raw data/prepared models reports .prefect
