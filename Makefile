# ai-how developer entry points. `make setup && make test` works on a fresh Debian 12 machine.
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config/local.yaml
WORKLOAD ?= digits-cnn

# Offline is the default: nothing may download weights, data or telemetry at run time.
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup test test-all lint format clean

setup:            ## install Debian packages (as root) and the Python env (.venv); idempotent
	bash scripts/setup-system.sh
	bash scripts/setup-python.sh

test:             ## the default test suite (what CI runs)
	$(BIN)/pytest -q

lint:             ## ruff + mypy
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format:           ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist src/*.egg-info
