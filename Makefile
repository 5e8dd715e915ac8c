# piivault — the two commands a new user needs are `make run` and `make test`; both bootstrap .venv from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint protos check-protos buf-lint bench soak clean

$(STAMP): pyproject.toml clients/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "piivault needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The client SDK first: the server's distribution depends on it (piivault-client, clients/pyproject.toml).
	$(PY) -m pip install --quiet -e ./clients
	$(PY) -m pip install --quiet -e '.[dev]'
	# Only for its CDNOW_master.txt (the public purchase data set the analytics tests replay); not its dependencies.
	$(PY) -m pip install --quiet --no-deps lifetimes==0.11.3
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/piivault migrate
	$(VENV)/bin/piivault serve

test: $(STAMP) lint
	$(PY) -m pytest

lint: $(STAMP) check-protos buf-lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

buf-lint: $(STAMP)
	cd proto && ../$(VENV)/bin/buf lint

protos: $(STAMP)
	$(PY) scripts/gen_protos.py

check-protos: $(STAMP)
	$(PY) scripts/gen_protos.py --check

bench: $(STAMP)
	$(PY) -m bench.run
	$(PY) -m bench.audit_verify --events 1000000
	$(PY) -m bench.dsar --purchases 10000 --reads 10000 --consents 200
	$(PY) -m bench.imports --customers 5000 --purchases 50000
	$(PY) -m bench.lookup_timing --customers 300 --lookups 4000

# Long runs that do not belong in `make test`: crash safety (SIGKILL rounds on SQLite and PostgreSQL), 1,000,000 fuzzed requests, online KEK rotation over 100,000 customers with a concurrent reader,
# on the local keyring and on Vault Transit (the Transit-API test server).
soak: $(STAMP)
	$(PY) -m bench.crash_soak --backend sqlite --rounds 1000
	$(PY) -m bench.crash_soak --backend postgresql --rounds 100 --clients 8 --max-load-seconds 1.5
	$(PY) -m tests.fuzz.soak --direct 600000 --grpc 400000
	$(PY) -m bench.rotation_soak --customers 100000 --provider local
	$(PY) -m bench.rotation_soak --customers 100000 --provider vault-transit
	PIIVAULT_TEST_CDNOW=all $(PY) -m pytest tests/integration/test_cdnow.py
	PIIVAULT_TEST_AUDIT_SECONDS=30 PIIVAULT_TEST_POSTGRES_URL=$${PIIVAULT_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/postgres} \
		$(PY) -m pytest tests/e2e/test_audit_multiprocess.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
