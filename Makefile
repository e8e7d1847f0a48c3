# Developer entry points. Every target sets up the virtual environment on first use:
#   .venv (python3.11) with `pip install -e ".[test,demo,explore]"`; the stamp file skips the install until
#   pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3.11)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all venv test demo lint clean distclean

all: test

venv: $(STAMP)

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; dlproc needs Python 3.11 (set PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --disable-pip-version-check -e ".[test,demo,explore]"
	touch $@

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m dlproc.runtime.demo --force

lint: $(STAMP)
	$(PY) -m ruff check .

# Generated files of the working tree (the Verilator build cache lives in ${DLPROC_CACHE:-~/.cache/dlproc}).
clean:
	rm -rf build out sim_build .pytest_cache .ruff_cache .hypothesis results.xml
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
