# make run  : set everything up and boot a local sandbox node (the main job)
# make test : set everything up and pass the tests (ruff, mypy, pytest)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PKGS := errors lazy pki events boot storage fsm sequencer config service image api node provision cli
# bytecode, as an installed wheel has it: every agent, supervisor and gravenctl process starts ~100 ms sooner
# (this machine sets PYTHONDONTWRITEBYTECODE, so nothing else writes it; stale files are ignored by mtime)
BYTECODE := $(BIN)/python -m compileall -q -j 0 $(PKGS) bench >/dev/null

.PHONY: run test system system-test lint typecheck pytest bench clean

# the system tools (squashfs-tools, fdisk, e2fsprogs, mount, iproute2): installed with apt-get when root and
# missing, else one line per missing tool with the command to run; a few PATH look-ups when all are present
system:
	@$(PY) storage/_systools.py ensure

# the same, plus what only the tests run (prometheus, which scrapes a real node)
system-test:
	@$(PY) storage/_systools.py ensure --tests

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

run: system $(STAMP)
	$(BYTECODE)
	$(BIN)/python -m node.demo

test: system-test $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy $(PKGS)

pytest: system-test $(STAMP)
	$(BYTECODE)
	$(BIN)/pytest -q $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]' --config-settings editable_mode=compat
	touch $(BENCH_STAMP)

bench: system $(STAMP) $(BENCH_STAMP)
	$(BYTECODE)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
	find $(PKGS) bench tests -name __pycache__ -prune -exec rm -rf {} +
