# The two commands: `make run` (serve on http://localhost:12800) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 12800

.PHONY: run test bench deps clean

run: deps
	PORT=$(PORT) $(PY) -m devhost run

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

# Warm scoring against the floor, side by side (needs wrk: apt-get install wrk); prints the table
# and writes bench/results.json.
bench: deps
	$(PY) bench/consume.py --json bench/results.json $(BENCH_ARGS)

deps: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) node_modules .azurite .pytest_cache
