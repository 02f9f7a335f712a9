# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install demo test lint bench clean

# The venv, with the pinned versions that shape the pickles (constraints.txt).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[build,publish,dev]'
	touch $(STAMP)

install: $(STAMP)

# The demo release end to end: train, quantize, validate (gates), report, manifest,
# publish to the local store (artifacts/releases), then fetch it back, load it and smoke-test it.
demo: $(STAMP)
	$(BIN)/release build
	$(BIN)/release publish
	$(BIN)/release fetch erp-intent --version latest --cache-dir artifacts/cache --load
	$(BIN)/release info artifacts/releases/erp-intent/$$(cat artifacts/releases/erp-intent/latest)

test: $(STAMP)
	$(BIN)/ruff check pipeline tests benchmarks && $(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -ra

# Every benchmark row side by side (about 20 minutes on 2 cores, 12 of them a forced rebuild); writes benchmarks/results.{md,json}.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests benchmarks
	$(BIN)/ruff format --check pipeline tests benchmarks
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf artifacts/build artifacts/releases artifacts/cache
