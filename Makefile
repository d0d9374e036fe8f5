# Two commands on a fresh machine: `make demo` (the whole pipeline) and `make test`.
# Both bootstrap .venv from nothing; a second call reuses it.

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Offline and quiet for the tools make starts itself (dvc, the UIs): the switches of
# radiodiff/offline.py, which every Python entry point applies; caches inside the repo.
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export MLFLOW_LOGGING_LEVEL := WARNING
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_LOGGING_LEVEL := WARNING
export PREFECT_HOME := $(CURDIR)/.prefect
export DVC_NO_ANALYTICS := 1
export DVC_SITE_CACHE_DIR := $(CURDIR)/.cache/dvc-site
export TORCHINDUCTOR_CACHE_DIR := $(CURDIR)/.cache/inductor
export MPLCONFIGDIR := $(CURDIR)/.cache/mpl
export PATH := $(BIN):$(PATH)

.PHONY: venv demo test test-fast bench ui clean-outputs

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing radiodiff and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/python -m pip install --upgrade pip > $(VENV)/install.log 2>&1 \
	  && $(BIN)/python -m pip install -e '.[dev,ui]' >> $(VENV)/install.log 2>&1 \
	  || (tail -n 40 $(VENV)/install.log; exit 1)
	@touch $(STAMP)

# One Prefect server for the whole run (not a temporary one per stage and Dask worker), then the
# pipeline; the results are in docs/RESULTS.md, written by its last stage.
demo: $(STAMP)
	$(BIN)/python -m pipelines.prefect_server -- dvc repro
	dvc metrics show
	@echo "results: docs/RESULTS.md (figures in plots/; browse runs with 'make ui')"

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/simulate.py
	$(BIN)/python benchmarks/models.py

# The three UIs on loopback: Prefect's server and the Optuna dashboard (the study of
# `radiodiff tune`, tune/study.db) in the background, MLflow's in the foreground (one worker,
# no GenAI job runner: light on 2 cores); Ctrl-C stops all three (after a hard kill:
# `prefect server stop`).
MLFLOW_UI_PORT ?= 5000
PREFECT_UI_PORT ?= 4200
OPTUNA_UI_PORT ?= 8080
OPTUNA_STORAGE ?= sqlite:///tune/study.db
ui: $(STAMP)
	@mkdir -p mlruns tune .cache
	@prefect server start --host 127.0.0.1 --port $(PREFECT_UI_PORT) --background > /dev/null
	@echo "Prefect UI on http://127.0.0.1:$(PREFECT_UI_PORT), MLflow UI on http://127.0.0.1:$(MLFLOW_UI_PORT), Optuna dashboard on http://127.0.0.1:$(OPTUNA_UI_PORT) (Ctrl-C stops all)"
	@optuna-dashboard $(OPTUNA_STORAGE) --host 127.0.0.1 --port $(OPTUNA_UI_PORT) > .cache/optuna-dashboard.log 2>&1 & \
	  dashboard=$$!; \
	  trap 'kill $$dashboard 2> /dev/null; prefect server stop > /dev/null' EXIT INT TERM; \
	  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db \
	    --host 127.0.0.1 --port $(MLFLOW_UI_PORT) --workers 1
