# churnwatch — run `make help` for the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.install.stamp
NATIVE := services/scoring/.native.stamp
DEMO   ?= 1
PYTEST_ARGS ?=
# make test runs the suite in this many pytest workers (pytest-xdist), a test file per worker
# at a time; each worker starts its own broker and Redis. Most tests wait on processes (a
# scorer joining its group, a restart, a retry schedule), so two overlap well on 2 cores:
# 10 minutes where one took 20. TEST_WORKERS=0 runs them in this process, one at a time.
TEST_WORKERS ?= 2
# QUICK=1 (make bench, make soak): a short run that still fails on a lost or doubled event; it
# writes to a temporary directory and leaves the committed results (docs/reliability/, README).
QUICK  ?= 0

.DEFAULT_GOAL := help
.PHONY: help install native tools run test smoke lint format bench schemas model clean ops-check lock audit reliability

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

install: $(STAMP) $(NATIVE) tools ## Create .venv/ and install churnwatch with its embedded stack and dev tools

# Debian packages the tests use: prometheus + promtool (tests/ops: alert-rule unit tests,
# `promtool check metrics`, a real Prometheus scraping the stack), chromium + chromedriver (the
# console's browser tests) and a CJK font (zh-CN pages render, screenshots are legible).
# Installed here when missing and we are root with apt-get; otherwise the tests that need them
# fail saying how to install them.
DEBIAN_TOOLS := prometheus chromium chromium-driver fonts-wqy-microhei
tools: ## Install the Debian packages the tests use (prometheus, chromium, chromedriver, a CJK font)
	@missing=""; \
	command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	fc-list 2>/dev/null | grep -qi "wqy\|noto sans cjk" || missing="$$missing fonts-wqy-microhei"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y --no-install-recommends $$missing >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y --no-install-recommends $$missing; }; \
	else \
	  echo "warning: missing Debian packages:$$missing; they cannot be installed here (needs" \
	       "root and apt-get); the tests that use them fail until you run:" \
	       "sudo apt-get install -y --no-install-recommends$$missing" >&2; \
	fi

# The exact versions of requirements.lock (what `make audit` checks) are what gets installed.
# To move a pin: `$(BIN)/pip install -U <package>` in .venv, run the tests, then `make lock`.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=78.1.1"  # older: CVE-2022-40897, CVE-2024-6345, CVE-2025-47273
	@# setuptools's "Editable installation" notice is informational (it names no problem): not printed
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e '.[embedded,dev]' -c requirements.lock
	@touch $(STAMP)

# The customer summary compiled with mypyc (scripts/native.py): the same code, each scorer step
# about twice as fast. Rebuilt when summary.py changes; without a C compiler it stays pure Python
# (a warning; nothing fails, and an out-of-date build is never run: see _load_native).
$(NATIVE): services/scoring/summary.py $(STAMP)
	@$(BIN)/python scripts/native.py || echo "warning: the customer summary runs as pure Python (see above; \`make native\` retries)" >&2
	@touch $@

native: $(STAMP) ## Compile the customer summary with mypyc (make install does; needs a C compiler)
	$(BIN)/python scripts/native.py && touch $(NATIVE)

run: $(STAMP) $(NATIVE) ## Start the embedded stack with a demo POS feed (DEMO=0: without the feed)
ifeq ($(DEMO),0)
	$(BIN)/churnwatch up --no-demo
else
	$(BIN)/churnwatch up
endif

test: $(STAMP) $(NATIVE) tools ## Run the whole test suite against a real broker and Redis it starts itself
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)
	$(BIN)/python -m bench.reliability

# Every documented command, from this clone, in a quick mode where it is long (scripts/smoke.py):
# lint, schemas check, generate, train, the stack with `model activate` and the README's own
# commands against it, a quick bench and a one-minute soak. .ci/run calls it after `make test`.
smoke: $(STAMP) $(NATIVE) ## Run every documented command quickly (CI, after make test; ~4 min)
	$(BIN)/python scripts/smoke.py

reliability: $(STAMP) ## Re-render README's reliability table from docs/reliability/ (tests and bench write it)
	$(BIN)/python -m bench.reliability

lint: $(STAMP) ## Check formatting, lint and types (changes nothing)
	$(BIN)/ruff check services tests bench scripts
	$(BIN)/mypy

ops-check: $(STAMP) tools ## Check the deploy files and alert rules (promtool, tests/ops without the live stack)
	promtool check rules deploy/prometheus/rules.yml
	promtool test rules deploy/prometheus/tests/*.yml
	$(BIN)/python -m pytest -q tests/ops/test_ops_deploy_files.py tests/ops/test_ops_prometheus_rules.py

# Supply chain: requirements.lock pins every package churnwatch[embedded,dev] installs, exactly
# as in .venv; `make audit` checks those versions with pip-audit (scripts/supplychain.py). It
# needs a vulnerability service: PyPI's per-version JSON API (default) or OSV (AUDIT_SERVICE=osv,
# AUDIT_OSV_URL=...); no advisory database ships offline. When the service cannot be used
# (offline, a package mirror without PyPI's JSON API, a failure mid-run), or some package could
# not be checked, nothing passed: one line says NOT AUDITED and why, and AUDIT_IF_UNREACHABLE=fail
# (the default) exits 2; =warn exits 0 all the same (CI on a machine that reaches the package
# index but no advisory database). A finding always fails (exit 1). Every wait is bounded:
# AUDIT_TIMEOUT seconds per request (pip-audit as a whole: 900 s).
LOCK                 ?= requirements.lock
AUDIT_SERVICE        ?= pypi
AUDIT_OSV_URL        ?= https://api.osv.dev/v1/query
AUDIT_IF_UNREACHABLE ?= fail
AUDIT_TIMEOUT        ?= 20
# Findings that cannot be fixed are ignored one by one, each with its reason, e.g.
# AUDIT_IGNORE += --ignore GHSA-xxxx-xxxx-xxxx  # no fixed release; we never call the affected API
AUDIT_IGNORE         ?=

lock: $(STAMP) ## Rewrite requirements.lock from the exact versions installed in .venv
	$(BIN)/python scripts/supplychain.py lock > $(LOCK).tmp && mv $(LOCK).tmp $(LOCK)

# (pip-audit is a dev dependency pinned in the lock: make install brings it, nothing here
# downloads it, which offline would only wait for the index)
audit: $(STAMP) ## pip-audit the locked dependencies (requirements.lock; needs a vulnerability service)
	@$(BIN)/python scripts/supplychain.py audit --lock $(LOCK) --service $(AUDIT_SERVICE) \
	  --osv-url $(AUDIT_OSV_URL) --if-unreachable $(AUDIT_IF_UNREACHABLE) \
	  --timeout $(AUDIT_TIMEOUT) $(AUDIT_IGNORE)

bench: $(STAMP) $(NATIVE) ## Measure the pipeline against the bare clients (bench/results/latest.md, docs/reliability/bench.json; QUICK=1: ~1 min, nothing committed changes)
	@export BENCH_STAMP=$$(date -u +%Y%m%dT%H%M%SZ); \
	if [ "$(QUICK)" = 1 ]; then \
	  export $(BENCH_QUICK_ENV) BENCH_RESULTS=$${BENCH_RESULTS:-$$(mktemp -d -t churnwatch-bench-XXXXXX)}; \
	  echo "quick bench run $$BENCH_STAMP: results in $$BENCH_RESULTS, docs/reliability/ untouched"; \
	else echo "bench run $$BENCH_STAMP"; fi; \
	$(BIN)/python -m bench.run && $(BIN)/python -m bench.state_bench && $(BIN)/python -m bench.api_bench && \
	{ $(BIN)/python -m bench.pipeline; rc=$$?; $(BIN)/python -m bench.report || rc=1; exit $$rc; }
	@if [ "$(QUICK)" != 1 ]; then $(BIN)/python -m bench.reliability; fi

# Every part of the bench, small: a few thousand events, seconds of steady load.
BENCH_QUICK_ENV := BENCH_RECORD=0 BENCH_EVENTS=3000 BENCH_SECONDS=3 BENCH_NOTIFIER_DELIVERIES=200 \
  BENCH_CUSTOMERS=20000 BENCH_STATE_CUSTOMERS=2000 BENCH_STATE_EVENTS=2000 BENCH_PAGES=50 BENCH_READS=200 \
  BENCH_INGEST_EVENTS=5000 BENCH_E2E_EVENTS=3000 BENCH_LAT_RATE=200 BENCH_LAT_SECONDS=5

SOAK_MINUTES ?= 30
SOAK_RATE    ?= 300
.PHONY: soak
soak: $(STAMP) $(NATIVE) ## Soak the stack: SOAK_MINUTES at SOAK_RATE events/s, judge memory and lag (QUICK=1: one minute, nothing committed changes)
	@if [ "$(QUICK)" = 1 ]; then \
	  export BENCH_RECORD=0 SOAK_MINUTES=1 SOAK_RATE=100 SOAK_CUSTOMERS=50 SOAK_MAX_EVENTS=32 SOAK_SAMPLE_S=5 \
	    BENCH_RESULTS=$${BENCH_RESULTS:-$$(mktemp -d -t churnwatch-soak-XXXXXX)}; \
	  echo "quick soak: one minute, results in $$BENCH_RESULTS, docs/reliability/ untouched"; \
	  $(BIN)/python -m bench.soak; \
	else \
	  SOAK_MINUTES=$(SOAK_MINUTES) SOAK_RATE=$(SOAK_RATE) $(BIN)/python -m bench.soak; \
	  rc=$$?; $(BIN)/python -m bench.reliability; exit $$rc; \
	fi

schemas: $(STAMP) ## Regenerate schemas/*.json from the Python models (CHECK=1: only check they are current)
ifeq ($(CHECK),1)
	$(BIN)/churnwatch schemas
else
	$(BIN)/churnwatch schemas --write
endif

model: $(STAMP) ## Rebuild the shipped default model (services/scoring/default_model/) deterministically
	$(BIN)/python -m services.training.default_model

clean: ## Remove the virtualenv and local state
	rm -rf $(VENV) .churnwatch .pytest_cache .mypy_cache .ruff_cache $(NATIVE) services/scoring/_summary_native*
