PYTHON ?= python

.PHONY: install test lint demo

install:
	$(PYTHON) -m pip install -q -e ".[dev]"

test: install
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check src tests benchmarks scripts

demo: install
	crossgate demo
