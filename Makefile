# The README's commands. Needs only Python 3.11 and make: everything else goes into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# The subset without real processes, injected faults, odd receivers or a browser (pytest.ini's markers).
FAST_MARKERS := not e2e and not faults and not browser and not hostile

.PHONY: run test test-fast lint clean bench bench-large

# Stamps: each is rebuilt when a file it lists changes, so an edited requirements file reinstalls.
# make run needs only the runtime (requirements.txt, what the image installs); the tests and lint
# add requirements-dev.txt on top.
$(VENV)/.runtime-installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: $(VENV)/.runtime-installed requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime-installed
	$(BIN)/python scripts/run_service.py

# mypy.ini names the files mypy checks.
lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

# Issue 6's benchmark (docs/benchmarks.md): its own service, database and Redis; ~10 minutes.
$(VENV)/.bench-installed: $(VENV)/.runtime-installed bench/requirements.txt
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-large: $(VENV)/.bench-installed
	$(BIN)/python -m bench pending --pending 1000000 $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
