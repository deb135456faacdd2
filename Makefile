# Two commands on a fresh machine:  `make demo` (main job on the embedded offline default)  and  `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/demo.yaml

# No analytics/telemetry calls (they hang where traffic is dropped), no model-hub look-ups.
export ZENML_ANALYTICS_OPT_IN := false
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_EVALUATE_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-llamacpp install-team install-kubeflow team-stack team-stack-down setup demo test smoke ui bench clean
TEAM_STACK_DIR ?= .cache/team-stack

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: here pip takes the local CPU wheel; elsewhere the normal one.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# the team stack's Python side; its PostgreSQL server comes from Debian (apt-get install postgresql)
$(VENV)/.installed-team: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[dev,team]"
	touch $@

install-team: $(VENV)/.installed-team

team-stack: install-team
	$(BIN)/distill-ner team-stack up --state-dir $(TEAM_STACK_DIR)

team-stack-down:
	$(BIN)/distill-ner team-stack down --state-dir $(TEAM_STACK_DIR)

# The llamacpp backend and q4_k_m export: llama-cpp-python from its PyPI source distribution, built here
# for this CPU (a C/C++ compiler and CMake; minutes on 2 cores).
install-llamacpp: install
	$(BIN)/python -m pip install -q -e ".[dev,llamacpp]"

# kfp for the Kubeflow commands, pinned in distill_ner/kubeflow.py (KFP_REQUIREMENTS): not a pip extra, since every
# kfp release pins protobuf<7, which the environment's transformers cannot import with; it goes into a folder of
# its own that only the Kubeflow processes put on their path (done on first use anyway)
install-kubeflow: install
	$(BIN)/python -c "from distill_ner.kubeflow import ensure_kfp; print(ensure_kfp())"

setup: install
	[ -d .zen ] || $(BIN)/zenml init
	$(BIN)/distill-ner setup

demo: setup
	$(BIN)/zenml pipeline run pipelines.distill_ner.distill_ner -c $(CONFIG)

smoke: setup
	$(BIN)/zenml pipeline run pipelines.distill_ner.distill_ner -c configs/smoke.yaml

# Two workers, each taking whole test files (module fixtures such as the team stack's servers stay in one
# process); most of the suite waits on subprocesses and servers, so two workers fit two cores.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

ui: install
	$(BIN)/distill-ner ui

bench: install
	$(BIN)/python benchmarks/bench_teacher.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_eval.py
	$(BIN)/python benchmarks/bench_serve.py

clean:
	rm -rf $(VENV) .cache
