# One entry point locally and in CI. `make test` sets up .venv and runs every test.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test check protos demo bench clean

$(BIN)/ccbridge: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/ccbridge

setup: $(BIN)/ccbridge

test: setup
	$(BIN)/pytest

check: setup
	$(BIN)/ruff check .
	$(BIN)/mypy -p ccbridge

protos: setup
	$(BIN)/python scripts/gen_protos.py

demo: setup
	$(BIN)/ccbridge up --demo

# The benchmark (about 3 minutes): mesh vs. the floor, results in bench/results/.
bench: setup
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .ccbridge build *.egg-info
