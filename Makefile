# The two commands a newcomer needs: `make run` (the service) and `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install run migrate test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null

install: $(PY)
	$(PY) -m pip install -e '.[test]'

run: install
	$(PY) -m wallet serve

migrate: install
	$(PY) -m wallet migrate

test: install
	bash scripts/ensure-services.sh
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check wallet tests
	$(VENV)/bin/mypy wallet

bench: install
	$(PY) -m wallet bench --markdown

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
