# One entry point locally and in CI. `make test` sets up .venv and runs every test.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# Every dependency, dev tools and build tools included, is pinned in requirements.lock
# (used as pip constraints: the extras pick what to install, the lock picks the version).
LOCK := requirements.lock
PIN := $(BIN)/pip install --quiet --no-build-isolation -c $(LOCK)

.PHONY: buf setup test check protos demo bench soak fuzz faults lock lock-upgrade clean

$(BIN)/ccbridge: pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -c $(LOCK) pip setuptools wheel
	$(PIN) -e '.[dev,local]'
	touch $(BIN)/ccbridge

setup: $(BIN)/ccbridge

# scripts/test-tools.sh first: RT, Chromium, promtool and buf where missing (root + apt).
test: setup
	bash scripts/test-tools.sh
	$(BIN)/pytest

check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p ccbridge

protos: setup
	$(BIN)/python scripts/gen_protos.py

# The gRPC API's compatibility gate: buf lint + buf breaking against the last release tag
# (docs/grpc.md; buf: npm install --prefix .tools @bufbuild/buf, as .ci/run does).
buf:
	scripts/buf-check.sh

demo: setup
	$(BIN)/ccbridge up --demo

# The benchmark (about 3 minutes): mesh vs. the floor, results in bench/results/.
bench: setup
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(PIN) -e '.[dev,local,bench]'
	$(BIN)/python -m bench

# 30 minutes of handovers and abuse: memory of every component and of Redis stays flat
# (< 1 % growth per 10 minutes); results in bench/results/soak-*.
soak: setup
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(PIN) -e '.[dev,local,bench]'
	$(BIN)/python -m bench.soak --minutes 30

# Fuzzing (about 25 minutes; docs/fuzzing.md): schemathesis sends FUZZ_EXAMPLES cases to
# the gateway's /openapi.json (its RSS must stay flat), hypothesis as many to each parser.
# `make test` runs the same suites on a small fixed sample.
FUZZ_EXAMPLES ?= 10000
fuzz: setup
	CCBRIDGE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -m fuzz -s --timeout=3600 tests/fuzz

# The whole fault matrix (docs/faults.md; about 25 minutes on 2 cores): every case with thousands of
# messages both ways; figures in bench/results/faults.{json,txt}. `make test` runs a
# fast subset. FAULTS_CONVERSATIONS x FAULTS_MESSAGES end-user messages per case (and an
# agent reply after every second one); the CCaaS outage lasts FAULTS_OUTAGE_S.
FAULTS_CONVERSATIONS ?= 20
FAULTS_MESSAGES ?= 100
FAULTS_OUTAGE_S ?= 60
faults: setup
	CCBRIDGE_FAULTS_CONVERSATIONS=$(FAULTS_CONVERSATIONS) CCBRIDGE_FAULTS_MESSAGES=$(FAULTS_MESSAGES) \
	CCBRIDGE_FAULTS_OUTAGE_S=$(FAULTS_OUTAGE_S) CCBRIDGE_FAULTS_REPORT=bench/results/faults.json \
	$(BIN)/pytest -m faults -s --timeout=3600 tests/faults

# Re-pin after editing pyproject.toml's dependencies (keeps every other pin as it is);
# lock-upgrade moves every pin to the newest version pyproject.toml allows.
LOCK_ARGS := --quiet --all-extras --strip-extras --allow-unsafe --no-emit-find-links \
	--no-emit-index-url --no-emit-trusted-host -o $(LOCK) pyproject.toml
lock: setup
	$(BIN)/pip-compile $(LOCK_ARGS)

lock-upgrade: setup
	$(BIN)/pip-compile --upgrade $(LOCK_ARGS)

clean:
	rm -rf $(VENV) .ccbridge build *.egg-info
