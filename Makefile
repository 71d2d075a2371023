# The two front-door commands: `make demo` (the main job) and `make test`.
# Each sets itself up: a virtualenv in .venv with the pinned dependencies.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= demo-data

.PHONY: install demo airflow test lint typecheck check clean

install: $(STAMP)

# torch first and alone, pinned: pip then takes the local CPU build where the
# machine offers one instead of resolving a CUDA build from the index.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,airflow]"
	touch $(STAMP)

# The main job: sample images -> Airflow build DAG -> query service -> queries.
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/vsearch demo --dir $(DEMO_DIR)

# A local Airflow 3 (API server + UI on 127.0.0.1:8080, scheduler, DAG processor,
# triggerer; its own PostgreSQL under the data dir's airflow/), set up and started; one
# Ctrl-C stops it all. The data dir: DATA_DIR=..., else $VSEARCH_DATA_DIR, else
# ./vsearch-data, the same rule every vsearch command follows.
airflow: $(STAMP)
	$(VENV)/bin/vsearch $(if $(DATA_DIR),--data-dir $(DATA_DIR)) airflow up

# pytest exits 5 when it collects nothing; that is not a failure of the suite.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
