# Every target installs what it needs first (venv, pip, npm ci), so each works on a fresh machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := true
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: setup demo demo-down synth test lint typecheck bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed

## demo: deploy the kit into a local AWS emulator with the real cdk CLI, write the Metaflow profile, run doctor
demo: setup
	$(PY) -m kit demo

## demo-down: stop the local AWS emulator
demo-down: setup
	$(PY) -m kit sandbox down

## synth: print the CloudFormation template of the config in cdk.json (no AWS credentials needed)
synth: setup
	npx cdk synth --quiet
	cat cdk.out/*.template.json

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/shellcheck launch_templates/*.sh kit/*.sh .ci/run

typecheck: setup
	$(VENV)/bin/mypy

## test: lint, type checks and every test tier
test: setup lint typecheck
	$(PY) -m pytest

## bench: synth/validate/test timings, bandwidth provisioned, idle cost -> bench/results.md
bench: setup
	$(PY) bench/run.py

clean:
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache
