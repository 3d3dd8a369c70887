# One command each: `make test` (everything, from a fresh clone) and `make demo`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup system-deps lint format test unit estate-up estate-down estate-status demo demo-down clean

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check "uv==0.13.9"
	$(VENV)/bin/uv pip install -q --python $(PY) -r requirements-dev.txt -c constraints.txt
	$(PY) -c "import sysconfig, pathlib; p = pathlib.Path(sysconfig.get_paths()['purelib']) / 'managed_upgrade_paths.pth'; p.write_text(''.join(str(pathlib.Path(d).resolve()) + '\n' for d in ('include', 'plugins', 'scripts')))"
	touch $(STAMP)

setup: system-deps $(STAMP)

system-deps:
	scripts/install-system-deps

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy include/managed_upgrade
	$(VENV)/bin/mypy plugins/managed_upgrade_airflow

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

estate-up: setup
	scripts/estate up

estate-down:
	scripts/estate down

estate-status:
	scripts/estate status

# `make demo` triggers the demo customer's upgrade in rehearsal mode; `make demo AUTO=1` also answers
# every gate as the assigned users and waits for the outcome.
demo: setup
	$(PY) -m upgrade_demo $(if $(AUTO),--auto,) $(DEMO_ARGS)

demo-down:
	-$(PY) -m upgrade_demo.mail_sink .airflow/mail
	-scripts/airflow-local down
	-scripts/estate down

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit -q

test: setup
	scripts/run-tests

clean:
	-scripts/estate down
	rm -rf $(VENV) .estate .airflow
