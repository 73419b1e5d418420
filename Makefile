# make run  : set everything up and boot a local sandbox node (the main job)
# make test : set everything up and pass the tests (ruff, mypy, pytest)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PKGS := events storage fsm sequencer config image api node
# bytecode, as an installed wheel has it: every agent, supervisor and gravenctl process starts ~100 ms sooner
# (this machine sets PYTHONDONTWRITEBYTECODE, so nothing else writes it; stale files are ignored by mtime)
BYTECODE := $(BIN)/python -m compileall -q -j 0 $(PKGS) bench >/dev/null

.PHONY: run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

run: $(STAMP)
	$(BYTECODE)
	$(BIN)/python -m node.demo

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy $(PKGS)

pytest: $(STAMP)
	$(BYTECODE)
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BYTECODE)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
	find $(PKGS) bench tests -name __pycache__ -prune -exec rm -rf {} +
