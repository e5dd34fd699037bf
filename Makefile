# Two commands on a fresh machine: `make demo` and `make test` (each installs what it needs).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: install demo test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# The test suite also runs the peer benchmark's test, which needs the bench extra (torch's
# CPU build and MONAI), and the export's, which needs the onnx extra (tf2onnx, ONNX Runtime);
# the demo and the jobs never do.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench,onnx]'
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/python -m brats.devtools.demo $(ARGS)

test: $(BENCH_STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

lint: install
	$(BIN)/ruff check brats jobs tests examples
	$(BIN)/ruff format --check brats jobs tests examples
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix brats jobs tests examples
	$(BIN)/ruff format brats jobs tests examples

bench: $(BENCH_STAMP)
	$(BIN)/python jobs/benchmark.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-out bench-out
