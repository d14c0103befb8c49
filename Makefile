# The two commands: `make run` (serve on http://localhost:12800) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 12800

.PHONY: run test bench soak checkov deps clean

run: deps
	PORT=$(PORT) $(PY) -m devhost run

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

# Warm scoring against the floor, side by side (needs wrk: apt-get install wrk); prints the table
# and writes bench/results.json. Then batch throughput with one and two hosts (bench/batch.json).
bench: deps
	$(PY) bench/consume.py --json bench/results.json $(BENCH_ARGS)
	$(PY) bench/batch.py --json bench/batch.json

# Many concurrent clients against the app served as `make run` serves it (its own port and
# Azurite), then checks answers, lost updates, memory bounds and leftovers; prints the table and
# writes bench/soak.json. Locust lives in .venv-soak: `make test` and CI never install it.
# SOAK_ARGS='--users 50 --seconds 600' for a longer run.
SOAK_VENV := .venv-soak
soak: deps $(SOAK_VENV)/.installed
	$(PY) bench/soak.py --locust $(SOAK_VENV)/bin/locust --json bench/soak.json $(SOAK_ARGS)

$(SOAK_VENV)/.installed: bench/soak-requirements.txt
	test -x $(SOAK_VENV)/bin/python || $(PYTHON) -m venv $(SOAK_VENV)
	$(SOAK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/soak-requirements.txt
	touch $@

# Policy scan of infra/ (Bicep) with checkov, which lives in .venv-checkov (it pins an older
# pycep-parser than the tests use): `make test` and CI never install it. Each suppressed check
# has its reason beside it in the template (//checkov:skip=ID:reason).
CHECKOV_VENV := .venv-checkov
checkov: $(CHECKOV_VENV)/.installed
	$(CHECKOV_VENV)/bin/checkov -d infra --framework bicep --compact --quiet --skip-download

$(CHECKOV_VENV)/.installed:
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'checkov>=3.2,<4'
	touch $@

deps: $(VENV)/.installed $(VENV)/.client-installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	touch $@

# The client and CLI (client/), installed as its users install it: `pip install ./client`.
$(VENV)/.client-installed: $(VENV)/.installed $(wildcard client/pyproject.toml client/o16n/*.py)
	$(PY) -m pip install --quiet --disable-pip-version-check ./client -c constraints.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) $(SOAK_VENV) $(CHECKOV_VENV) node_modules .azurite .pytest_cache
