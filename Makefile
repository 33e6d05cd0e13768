# The two commands a newcomer needs: `make run` (the service) and `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install run migrate test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null

install: $(PY)
	$(PY) -m pip install -e '.[test,embedded]'

# With no DATABASE_URL, REDIS_URL, RABBITMQ_URL: embedded PostgreSQL and Redis in .data/, events
# in-process (README, "Embedded mode"). Against real services: set the URLs, run `$(VENV)/bin/wallet serve`.
run: install
	env -u DATABASE_URL -u REDIS_URL -u RABBITMQ_URL $(PY) -m wallet serve

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
