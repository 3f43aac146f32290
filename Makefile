# neocloud: `make run` and `make test` each build the virtual environment they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8420
DATA_DIR ?= .data

.PHONY: run test test-fast lint typecheck fuzz bench bench-fleet bench-placement bench-placement-alibaba bench-placement-scale bench-placement-optimality bench-placement-gangs bench-compute bench-billing bench-economics bench-studio bench-studio-gpu bench-nodes bench-slurm venv clean chaos soak bench-databases bench-console bench-storage bench-studio-batches

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/neocloud up --port $(PORT) --data-dir $(DATA_DIR)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/python scripts/check_private_names.py src
	$(BIN)/lint-imports
	$(BIN)/mypy

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint
	@scripts/install-test-deps
	$(BIN)/pytest -n 2 -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -x -m "not postgres"

# Schemathesis, long run: EXAMPLES (default 4) per operation x caller x kind, about 2,200 cases
# and 2-3 min; `make test` runs the short seeded pass (one each, about 550 cases).
fuzz: $(STAMP)
	NEOCLOUD_FUZZ_EXAMPLES=$(or $(EXAMPLES),4) $(BIN)/pytest -q -s tests/fuzz/test_fuzz.py -m "not postgres"

# Faults (docs/reliability.md), PostgreSQL needed: failover under SIGKILL, then 10 min of chaos
# (DURATION=seconds) with the leader worker and API replicas SIGKILLed every 5 s; prints operations,
# kills survived, failover times and violations (target 0).
chaos: $(STAMP)
	NEOCLOUD_CHAOS_S=$(or $(DURATION),600) $(BIN)/pytest -q -s tests/chaos/test_failover.py tests/chaos/test_chaos.py

# 30 min of steady mixed load: memory slope (MiB/h) and p99 latency drift, violations.
soak: $(STAMP)
	NEOCLOUD_SOAK_S=$(or $(DURATION),1800) $(BIN)/pytest -q -s tests/chaos/test_soak.py

bench: bench-fleet bench-placement bench-compute bench-billing bench-economics bench-studio bench-nodes

bench-fleet: $(STAMP)
	$(BIN)/python bench/fleet/bench_fleet.py

bench-billing: $(STAMP)
	$(BIN)/python bench/billing/bench_rating.py
	$(BIN)/python bench/billing/bench_ingest.py

bench-compute: $(STAMP)
	$(BIN)/python bench/compute/bench_time_to_gpu.py

# Console: server render time of the fleet overview and heatmap at 31,250 nodes (PostgreSQL).
bench-console: $(STAMP)
	$(BIN)/python bench/console/bench_console.py

# Redraw docs/screenshots/ from the browser test (a plain test run leaves them as they are).
.PHONY: screenshots
screenshots: $(STAMP)
	NEOCLOUD_UPDATE_SCREENSHOTS=1 $(BIN)/pytest -q -n 0 tests/console/test_browser.py

# Create -> SSH login on real test hosts (root; about a minute).
bench-nodes: $(STAMP)
	@scripts/install-test-deps
	$(BIN)/python bench/nodes/bench_ssh_login.py

bench-slurm: $(STAMP)
	@scripts/install-test-deps
	$(BIN)/python bench/slurm/bench_slurm.py

bench-databases: $(STAMP)
	@scripts/install-test-deps
	$(BIN)/python bench/databases/bench_create_to_connect.py

# Shared filesystems on GlusterFS test hosts: mount time on a 2-node cluster, FUSE dd (root).
bench-storage: $(STAMP)
	@scripts/install-test-deps
	$(BIN)/python bench/storage/bench_storage.py

bench-economics: $(STAMP)
	$(BIN)/python bench/economics/bench_economics.py

# Gateway overhead: fake upstream alone, neocloud and LiteLLM's proxy in front of it (~3 min;
# installs litellm[proxy] into bench/studio/.litellm-venv once, and wrk from Debian if missing)
bench-studio: $(STAMP)
	$(BIN)/python bench/studio/bench_gateway.py

.PHONY: bench-studio-finetune
bench-studio-finetune: $(STAMP)
	$(BIN)/python bench/studio/bench_finetune.py

bench-studio-batches: $(STAMP)
	$(BIN)/python bench/studio/bench_batches.py

# Needs an NVIDIA GPU with a CUDA build of torch (not part of `make bench`); --smoke runs on CPU.
bench-studio-gpu:
	bash bench/studio/gpu.sh $(ARGS)

bench-placement: bench-placement-alibaba bench-placement-scale bench-placement-optimality bench-placement-gangs bench-placement-admission

# FGD paper replay (3 seeds, 351 runs, ~25 min on 2 cores: default, FGD with lookahead, is ~3x FGD); SEEDS=42-51 for the paper's grid.
bench-placement-alibaba: $(STAMP)
	$(BIN)/python bench/placement/alibaba.py --seeds $(or $(SEEDS),42-44) --jobs 2

bench-placement-scale: $(STAMP)
	$(BIN)/python bench/placement/scale.py

# ILP optimum (HiGHS) vs our admitted GPU-hours, 5 seeds, ~2.5 min
bench-placement-optimality: $(STAMP)
	$(BIN)/python bench/placement/optimality.py

# Admission of reservations (fcfs vs bid_price, with and without steering) beside the ILP, ~2 min
.PHONY: bench-placement-admission
bench-placement-admission: $(STAMP)
	nice -n 10 $(BIN)/python bench/placement/admission.py --seeds 1-5 --time-limit 10 --steer 6

# Gangs on a 2,048-node fabric/block/rack topology, trace-derived job sizes, ~3 min
bench-placement-gangs: $(STAMP)
	$(BIN)/python bench/placement/gangs.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
