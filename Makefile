# The README's commands. Needs only Python 3.11 and make: everything else goes into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint clean bench bench-large

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

run: $(BIN)/.installed
	$(BIN)/python scripts/run_service.py

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Issue 6's benchmark (docs/benchmarks.md): its own service, database and Redis; ~10 minutes.
$(VENV)/.bench-installed: $(BIN)/.installed bench/requirements.txt
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-large: $(VENV)/.bench-installed
	$(BIN)/python -m bench pending --pending 1000000 $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
