# The two quick-start commands: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit integration lab bench setup system-deps clean deb

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "installing python3-venv"; apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,test]'
	@touch $(STAMP)

setup: $(STAMP)

## Debian packages started for real by tests and demo (Redis, PostgreSQL, Knot, Unbound, Postfix).
system-deps:
	@bash scripts/install-system-deps.sh

## Run the main job: the lab (DNSSEC DNS, policy hosts, MXes, a real Postfix sending through mxsec daemon).
demo: $(STAMP) system-deps
	$(BIN)/python -m mxsec.cli.demo

## Run every test: ruff and mypy first, then unit, integration (local servers), lab (namespaces).
test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest -p no:cacheprovider tests

## Lint only: ruff and mypy with the rules in pyproject.toml ([tool.ruff], [tool.mypy]; strict on the core).
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests/unit

integration: $(STAMP) system-deps
	$(BIN)/python -m pytest -p no:cacheprovider tests/integration

## Side-by-side benchmark against postfix-mta-sts-resolver (needs root: it creates a network namespace).
bench: $(STAMP)
	$(BIN)/python bench/socketmap.py

## Man pages written from the command line's own help (mxsec.1, mxsec-COMMAND.1) into build/man.
.PHONY: man
man: $(STAMP)
	$(BIN)/python -m mxsec.cli.manpages build/man

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

## The Debian package: dist/mxsec_<version>-1_<arch>.deb (scripts/build-deb.py; offline, from this environment).
deb: $(STAMP) system-deps
	$(BIN)/python scripts/build-deb.py --out dist
	lintian --fail-on error dist/mxsec_*.deb
