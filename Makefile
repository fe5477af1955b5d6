# Two commands: `make run` and `make test`. Both set up .venv from the lock file first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# The project's CLI (cli/main.py), installed by setup; `tfx-template COMMAND --help`.
CLI := $(VENV)/bin/tfx-template
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
# The first python3.10 that actually runs: PATH (pyenv shims may exist but fail), then pyenv's folder.
PYTHON310 ?= $(shell for p in python3.10 $$HOME/.pyenv/versions/3.10*/bin/python3.10; do \
	$$p -c 'import sys' >/dev/null 2>&1 && { command -v $$p || echo $$p; } && break; done)
# Keras 2 (tf_keras) everywhere: see docs/decisions.md, "Keras 2 (tf_keras), not Keras 3".
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup run test test-fast lock schema data clean benchmark

setup: $(VENV)/.installed

# Re-installs whenever the lock file or pyproject.toml is newer than the last install.
$(VENV)/.installed: requirements.lock pyproject.toml
	@test -n "$(PYTHON310)" || { echo "error: python3.10 not found on PATH or under ~/.pyenv/versions" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON310) -m venv $(VENV)
	@test -x $(UV) || $(VENV)/bin/pip install --quiet uv==$(UV_VERSION)
	$(UV) pip sync --python $(PY) --compile-bytecode requirements.lock
	$(UV) pip install --python $(PY) --no-deps -e .
	@touch $@

# Re-resolves the whole stack; run after editing dependencies in pyproject.toml.
lock:
	@test -x $(UV) || $(MAKE) setup
	$(UV) pip compile --python-version 3.10 --extra dev pyproject.toml -o requirements.lock

run: setup
	$(CLI) run $(ARGS)

# The suite's files on TEST_WORKERS processes (pytest-xdist; a file stays on one process, so
# its fixtures are made once): a pipeline run is mostly one-core work, and the Airflow stack's
# test mostly waits. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
test: setup browser airflow-packages
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30

# The quick loop (about 2 minutes): unit and construction tests, no pipeline, server or
# subprocess runs (markers `integration` and `slow`; `make test` runs every tier).
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not integration" --durations=10

# ruff: lint and format check (configured in pyproject.toml); `make format` rewrites.
.PHONY: lint format
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Re-creates data/span-*/ from the CSV shipped inside the tfx wheel.
data: setup
	$(CLI) data $(ARGS)

# From a raw CSV to a ready project: spans in data/, models/features.py, schema/schema.pbtxt,
# e.g. ARGS="--csv flights.csv --label 'arr_delay > 15' --time-column time_hour --span-by month".
.PHONY: new-dataset
new-dataset: setup
	$(CLI) new-dataset $(ARGS)

# Writes a starting schema from the latest SchemaGen output (after PIPELINE_INFER_SCHEMA=1 make run).
schema: setup
	$(CLI) schema $(ARGS)

benchmark: setup
	$(PY) benchmarks/pipeline_vs_official.py

# Serving: the local TF Serving-compatible server, batch predictions, skew check, serving
# strategy, benchmark.
.PHONY: serve batch-predict serving-skew serving-strategy benchmark-serving
serve: setup
	$(CLI) serve $(ARGS)

batch-predict: setup
	$(CLI) batch-predict $(ARGS)

serving-skew: setup
	$(CLI) skew $(ARGS)

# Static, dynamic or hybrid: the request log's key cardinality and peakedness (ARGS="--span N").
serving-strategy: setup
	$(CLI) serving-strategy $(ARGS)

benchmark-serving: setup
	$(PY) benchmarks/serving_speed.py $(ARGS)

.PHONY: watch replay stream
# Continuous training: run the pipeline whenever a new complete span lands in the data location.
watch: setup
	$(CLI) watch $(ARGS)

# Replays the shipped spans one at a time (warm vs fresh start): outputs/replay/report.md.
replay: setup
	$(CLI) replay $(ARGS)

# Streaming ingestion: events (JSON lines) -> complete spans, e.g. ARGS="--input 'events/*.jsonl'".
stream: setup
	$(CLI) stream $(ARGS)

# Exploring results: the HTML run report, the served model's lineage (MODEL=<path> for another
# model), and the headless Chromium that tests/test_report.py renders the report in.
.PHONY: report lineage browser
report: setup
	$(CLI) report $(ARGS)

lineage: setup
	$(CLI) lineage $(MODEL) $(ARGS)

browser:
	@test -x /usr/bin/chromium || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "make: installing Debian's chromium with apt-get (the run report's test renders it headless)"; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends chromium; }

# Scale: larger generated datasets, the growth benchmark (15k/150k/1.5M rows, both Beam modes;
# an hour or more on 2 cores), the input-path and the distribution-strategy benchmarks.
# ROWS/DIR for data-large.
.PHONY: data-large benchmark-growth benchmark-input benchmark-strategies
ROWS ?= 1500000
data-large: setup
	$(CLI) generate-data $(or $(DIR),outputs/data-$(ROWS)) --rows $(ROWS) $(ARGS)

benchmark-growth: setup
	$(PY) benchmarks/growth.py $(ARGS)

benchmark-input: setup
	$(PY) benchmarks/input_path.py $(ARGS)

benchmark-strategies: setup
	$(PY) benchmarks/strategies.py $(ARGS)

# The documentation site (docs/, mkdocs.yml) with strict link checking: outputs/site/index.html.
.PHONY: docs
docs: setup
	$(PY) -m mkdocs build --strict --site-dir outputs/site

clean:
	rm -rf outputs

# Airflow as it runs in production, on this machine (deploy/airflow/stack.py): PostgreSQL
# (Airflow's database), MariaDB (ML Metadata), Redis, the scheduler, the web UI and two Celery
# workers, on loopback under outputs/airflow/ (STACK_DIR=... for another place). Prints the UI
# address and login; `make airflow-down` stops exactly what airflow-up started.
.PHONY: airflow-up airflow-down airflow-status airflow-packages airflow-trigger
airflow-up: setup airflow-packages
	$(PY) deploy/airflow/stack.py up $(ARGS)

airflow-down:
	$(PY) deploy/airflow/stack.py down $(ARGS)

airflow-status:
	$(PY) deploy/airflow/stack.py status $(ARGS)

# A training run now, through Airflow's REST API, e.g. ARGS="--train-steps 2000"; waits for it.
airflow-trigger: setup
	$(CLI) airflow-trigger $(ARGS)

# Debian's PostgreSQL 15, MariaDB 10.11 and Redis 7, if missing. Their packages would start
# system-wide services on install: a policy-rc.d stops that (the stack runs its own, as you).
AIRFLOW_PACKAGES := postgresql-15:/usr/lib/postgresql/15/bin/postgres \
	mariadb-server:/usr/sbin/mariadbd redis-server:/usr/bin/redis-server
airflow-packages:
	@missing=$$(for p in $(AIRFLOW_PACKAGES); do test -x $${p#*:} || echo $${p%%:*}; done); \
	test -z "$$missing" || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "make: installing Debian's" $$missing "with apt-get (the Airflow stack's databases and broker; no system service is started)"; \
		policy=/usr/sbin/policy-rc.d; own=; test -e $$policy || { own=1; \
			printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $$policy >/dev/null; $$SUDO chmod +x $$policy; }; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
		status=$$?; test -z "$$own" || $$SUDO rm -f $$policy; exit $$status; }
