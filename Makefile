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

.PHONY: setup test test-slow test-slow-images test-slow-docs test-slow-services test-all lint format clean docs docs-reference

setup:            ## install Debian packages (as root) and the Python env (.venv); idempotent
	bash scripts/setup-system.sh
	bash scripts/setup-python.sh

# The fast suite runs on up to 4 cores (pytest-xdist); tests that use this machine's one SLURM share a
# worker (tests/conftest.py). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$(( n > 4 ? 4 : n )))

test:             ## the default test suite: all but the long end-to-end tests (marked slow)
	$(BIN)/pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadgroup

test-slow:        ## the long end-to-end tests (marked slow); CI runs them as a step after `make test`
	$(BIN)/pytest -q -m slow

test-slow-images: ## the slow tests of VM and container images (QEMU, podman); CI runs them beside services
	$(BIN)/pytest -q -m slow tests/provision tests/containers

test-slow-docs:   ## the docs' runnable pages (getting started, tutorial 08 part 1); CI runs them after images
	$(BIN)/pytest -q -m slow tests/docs

test-slow-services: ## the other slow tests (SLURM, MLflow, S3, Prometheus end to end)
	$(BIN)/pytest -q -m slow --ignore=tests/provision --ignore=tests/containers --ignore=tests/docs

test-all:         ## both suites, one after the other (what CI runs)
	$(MAKE) test
	$(MAKE) test-slow

lint:             ## ruff + mypy
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format:           ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

docs:             ## the docs site into site/ (mkdocs --strict: broken links, missing pages and anchors fail)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

docs-reference:   ## regenerate docs/reference/{configuration,cli}.md from the config models and the CLI
	$(BIN)/python -m ai_how.docs_gen

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist src/*.egg-info site

# ---- the seed's MLOps targets (MLOPS-5.2) on the configured stack: `make mlops-e2e-test CONFIG=... WORKLOAD=...`
AI_HOW := $(BIN)/ai-how
.PHONY: mlops-stack mlops-train mlops-register mlops-sync mlops-deploy mlops-e2e-test mlops-monitor

mlops-stack:      ## start the local MLflow (and S3) services
	$(AI_HOW) stack up -c $(CONFIG)

mlops-train: mlops-stack   ## start a pipeline run and stop after training
	$(AI_HOW) pipeline run -c $(CONFIG) --workload $(WORKLOAD) --stop-after train

mlops-register:   ## register the latest run's model in MLflow (@production)
	$(AI_HOW) pipeline run --resume latest --stop-after register

mlops-sync:       ## sync the latest run's model version to the object store (sha256-verified)
	$(AI_HOW) pipeline run --resume latest --stop-after sync

mlops-deploy:     ## deploy the latest run's model version and verify it
	$(AI_HOW) pipeline run --resume latest

mlops-e2e-test: mlops-stack   ## the whole workflow in one run, then the e2e checks
	$(AI_HOW) pipeline run -c $(CONFIG) --workload $(WORKLOAD)
	$(AI_HOW) pipeline verify -c $(CONFIG) --model-name $(WORKLOAD)

mlops-monitor:    ## open what runs: MLflow UI, Prometheus, Alertmanager, the latest run report (prints them without a browser)
	$(AI_HOW) monitoring open -c $(CONFIG)
