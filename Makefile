# The two commands that matter: `make demo` and `make test`. `make help` lists the rest.
SHELL := bash
ENGINE := target/release/engine

.PHONY: help build demo test test-faults test-scaleout test-interop test-unit bench bench-metrics bench-compaction bench-scaleout stack-up stack-down stack-status fmt lint

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

build: ## Build target/release/engine
	cargo build --release --locked -p engine

demo: build stack-up ## Build, start the stack, produce demo data, run the three pipelines in batch, report
	scripts/demo

test: ## Lints, unit tests, then integration tests against the real local stack
	scripts/test

test-faults: build stack-up ## The fault-injection suite (kill -9 x FAULT_KILLS, failpoints, fencing) against the real stack
	FAULT_KILLS=$${FAULT_KILLS:-20} cargo test --release --locked --workspace --test faults -- --nocapture --test-threads 1

test-scaleout: build stack-up ## Scale-out against the real stack: the conditional-PUT preflight (PREFLIGHT_ROUNDS, default 5), the zombie, the churn (SCALEOUT_ROUNDS, default 24), then every scale-out test of make test
	PREFLIGHT_ROUNDS=$${PREFLIGHT_ROUNDS:-5} cargo test --release --locked --workspace --test integration -- --ignored --nocapture --test-threads 1 preflight a_paused_instance
	SCALEOUT_ROUNDS=$${SCALEOUT_ROUNDS:-24} cargo test --release --locked --workspace --test integration -- --nocapture --test-threads 1 scaleout:: churn:: gold_tables_stay_exact_while
	cargo test --release --locked --workspace --test faults -- --nocapture --test-threads 1 two_engines_on_one_checkpoint

test-interop: stack-up ## Delta and partitioned tables read by DuckDB and Spark, row for row as delta-rs and pyarrow read them (installs both readers; minutes)
	scripts/install-readers
	scripts/install-interop
	cargo test --release --locked --workspace --test integration -- --ignored --nocapture --test-threads 1 interop::

bench: ## Throughput side by side: raw Kafka read, the engine, Spark (if installed); results in bench/results/
	bench/run
	cargo bench --locked --workspace --bench operators --bench parquet

bench-metrics: ## The orders backfill with and without the metrics endpoint, runs interleaved; results in bench/results/
	bench/run --only metrics

bench-compaction: ## A Delta table streamed for 5 min with and without compaction: files and CPU; results in bench/results/
	bench/run --only compaction

bench-scaleout: ## One, two and three streaming instances on a 6-partition topic; results in bench/results/
	bench/run --only scaleout

test-unit: ## Every test that needs no services (operators, connectors, config, graph, examples)
	scripts/test unit

stack-up: ## Start Kafka and the S3 server (installs them on first use)
	scripts/stack up

stack-down: ## Stop what stack-up started
	scripts/stack down

stack-status: ## Show what runs where
	scripts/stack status

fmt: ## Format the code
	cargo fmt --all

lint: ## cargo fmt --check and clippy -D warnings
	cargo fmt --all -- --check
	cargo clippy --release --workspace --all-targets --locked -- -D warnings
