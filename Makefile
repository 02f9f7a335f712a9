# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

# Python code ruff checks; the docs site is built into $(SITE) (git-ignored).
PY_DIRS = pipeline tests benchmarks scripts
SITE   ?= site
MKDOCS  = NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs

.PHONY: install demo test test-fast lint docs docs-check docs-serve docs-cli docs-config bench clean

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

# What CI runs (.ci/run): lint, the docs, then the whole suite (about 10 minutes on 2 cores, install included).
test: lint docs-check
	$(BIN)/python -m pytest -ra

# While changing code: lint, the docs, and the tests that train nothing and start no emulator
# (tests/unit, tests/cli, tests/docs); see docs/testing.md for which to run when.
test-fast: lint docs-check
	$(BIN)/python -m pytest -ra tests/unit tests/cli tests/docs

# Every benchmark row side by side (about 20 minutes on 2 cores, 12 of them a forced rebuild); writes benchmarks/results.{md,json}.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

lint: $(STAMP)
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/python scripts/check_architecture.py
	$(BIN)/lint-imports --no-cache

# The docs site (mkdocs.yml, docs/): --strict fails on a broken link or anchor and on a page
# missing from the nav; then the Python examples of README.md and docs/ run (pytest-markdown-docs;
# a block preceded by `<!-- not run: reason -->` is skipped with that reason).
docs-check: $(STAMP)
	$(MKDOCS) build --strict --quiet --site-dir $(SITE)
	$(BIN)/python -m pytest -q -rs -p tests.docs.markdown_plugin --markdown-docs -m markdown-docs README.md docs

docs: $(STAMP)
	$(MKDOCS) build --strict --site-dir $(SITE)

docs-serve: $(STAMP)
	$(MKDOCS) serve

# After changing a command or an option: rewrite docs/cli.md from the commands' --help.
docs-cli: $(STAMP)
	$(BIN)/python scripts/cli_reference.py

# After changing a release.toml key (pipeline/config/): rewrite docs/config.md from the declaration.
docs-config: $(STAMP)
	$(BIN)/python scripts/config_reference.py

clean:
	rm -rf artifacts/build artifacts/releases artifacts/cache $(SITE)
