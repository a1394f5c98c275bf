# Local development entry points. `make` (or `make help`) lists the targets.
# The local services are managed by scripts/stack.sh; see docs/local-stack.md.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

STACK := $(CURDIR)/scripts/stack.sh
CARGO ?= cargo

# Lets tests find the stack script (to stop/start Redis B and the broker) wherever they run from.
export MEMBER_STACK_SCRIPT := $(STACK)

.PHONY: help stack-up stack-down stack-status broker-restart build run test test-console console-screenshots lint fmt bench drill drill-kafka drill-centers run-centers pg-ha-up pg-ha-down pg-ha-status test-failover

help: ## List the targets
	@echo "usage: make TARGET"
	@echo
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-15s %s\n", $$1, $$2}'
	@echo
	@echo "environment: MEMBER_STACK_DIR (default .stack), MEMBER_CACHE_DIR (default ~/.cache/member-stack),"
	@echo "             MEMBER_STACK_TIMEOUT (seconds per service, default 60)"

stack-up: ## Install what is missing and start PostgreSQL, MariaDB, Redis A/B, Apache Kafka and the three Elasticsearch clusters; wait until all answer
	@$(STACK) up

stack-down: ## Stop only the services the scripts started (never one that was already running)
	@$(STACK) down

stack-status: ## Print each local service, its address, whether it answers and who started it
	@$(STACK) status

broker-restart: ## Stop and start the Kafka broker (only when the scripts started it)
	@$(STACK) restart-service kafka

build: ## cargo build --workspace
	$(CARGO) build --workspace

run: stack-up ## stack-up, then run everything in one process (member run, release build)
	$(CARGO) run --release -p member-api --bin member -- run

test: stack-up ## stack-up, build the member binary, then cargo test --workspace --all-targets (the console's browser test among them)
	@$(CURDIR)/scripts/clean-test-data.sh
	@# The console's browser test (tests/tests/console_browser.rs) drives Debian's chromium with
	@# playwright-core: install them when missing.
	@$(CURDIR)/scripts/console-test-deps.sh
	@# Tests that kill and restart processes run target/debug/member: build it first (cargo test
	@# builds bin targets only as test harnesses).
	$(CARGO) build -p member-api --bin member
	$(CARGO) test --workspace --all-targets --no-fail-fast

test-console: stack-up ## Only the console's tests: HTTP (sessions, CSRF, jobs) and the browser test in headless chromium
	@$(CURDIR)/scripts/console-test-deps.sh
	$(CARGO) test -p member-tests --test console --test console_browser

console-screenshots: stack-up ## Run the browser test and write its screenshots into docs/console/ (for docs/console.md)
	@$(CURDIR)/scripts/console-test-deps.sh
	CONSOLE_SCREENSHOTS=docs $(CARGO) test -p member-tests --test console_browser

bench: ## Benchmarks against same-run baselines (release build; BENCH=query,... for a subset); appends to docs/benchmarks.md
	@$(CURDIR)/scripts/bench.sh

drill: ## Fail-over drill under order-class load (release build; its own broker, DRILL_BROKER=shared for the shared one); appends to docs/benchmarks.md
	@$(CURDIR)/scripts/drill.sh

drill-kafka: ## Broker-loss drill: three private Kafka brokers, one SIGKILLed under a command load (release build); appends to docs/benchmarks.md
	@$(CURDIR)/scripts/drill-kafka.sh

drill-centers: ## Center-loss drill: two centers and a witness (pg-ha.sh, three brokers on racks a/b/w), all of A SIGKILLed under load on B, then brought back (release build, root); JSON last line; appends to docs/benchmarks.md
	@$(CURDIR)/scripts/drill-centers.sh

run-centers: stack-up ## The two-center topology on this machine (root): pg-ha.sh, three brokers (racks a, b, w), `member run` of center A (127.0.10.1) and of center B (127.0.20.1), config/centers/{a,b}.toml
	@$(CURDIR)/scripts/run-centers.sh

# The two-center event store (ADR 0037): Patroni + etcd (A, B, witness) + HAProxy, each center in a network
# namespace; data and logs in PG_HA_DIR. Needs root (network namespaces).
PG_HA_DIR ?= $(CURDIR)/.stack/pg-ha
PG_HA_PORT ?= 25400

pg-ha-up: ## Start the two-center event store in PG_HA_DIR (default .stack/pg-ha; installs Patroni from PyPI, etcd-server, haproxy); prints its endpoints
	@$(CURDIR)/scripts/pg-ha.sh up $(PG_HA_DIR) $(PG_HA_PORT)
	@echo "A: $$($(CURDIR)/scripts/pg-ha.sh url $(PG_HA_DIR) a)"
	@echo "B: $$($(CURDIR)/scripts/pg-ha.sh url $(PG_HA_DIR) b)"

pg-ha-down: ## Stop the two-center event store of PG_HA_DIR (its data stays)
	@$(CURDIR)/scripts/pg-ha.sh down $(PG_HA_DIR)

pg-ha-status: ## patronictl list of the two-center event store
	@$(CURDIR)/scripts/pg-ha.sh patronictl $(PG_HA_DIR) list

test-failover: ## Only the event store's fail-over tests (private Patroni clusters; about a minute)
	$(CARGO) test -p member-tests --test event_store_failover

lint: ## cargo fmt --check, cargo clippy -D warnings and cargo machete (unused dependencies; installed into the cache once)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@$(CURDIR)/scripts/lint-deps.sh

fmt: ## cargo fmt --all
	$(CARGO) fmt --all
