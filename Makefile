# `make train` and `make test` do all the set-up on a fresh clone: a .venv with rnnlab
# installed (editable) and its dev tools. Re-running only reinstalls when pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install train test test-fast lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

train: install
	$(PY) train.py $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

# The inner loop: everything but the tests marked slow (real CLI runs, sweeps, servers).
test-fast: install
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The CPU benchmarks of README "Speed": step vs the textbook, threads, start-up (~10 min).
bench: install
	$(PY) benchmarks/throughput.py --cells
	$(PY) benchmarks/threads.py
	$(PY) benchmarks/threads.py --busy
	$(PY) benchmarks/startup.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
