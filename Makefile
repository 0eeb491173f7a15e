# asg-optimizer. `make demo` and `make test` are the two commands a new user needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
CARGO ?= cargo
export SAM_CLI_TELEMETRY := 0

.PHONY: demo test unit soak lint bench validate build tools fmt clean install-cli

## Install the emulator and show the pipeline replacing On-Demand instances on an emulated account.
demo: $(VENV)/.dev
	$(CARGO) build --quiet -p asg-optimizer
	$(CARGO) run --quiet -p e2e --bin demo

## Unit tests, the simulated account (its own tests, scripted scenarios, a few hundred seeds),
## and integration tests against moto (started by the tests on loopback).
test: $(VENV)/.dev
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

## The command line (`asg-optimizer plan` / `status`) into ~/.cargo/bin.
install-cli:
	$(CARGO) install --locked --path crates/cli

## Unit tests only: no emulator needed.
unit:
	$(CARGO) test --workspace --lib --bins

## Many seeds through the simulation, optimised: seeds per second, calls simulated, invariants
## checked, every failing seed. SEEDS=20000 from FIRST=1.
SEEDS ?= 20000
FIRST ?= 1
soak:
	$(CARGO) run --quiet --profile soak -p asg-sim --bin soak -- $(SEEDS) $(FIRST)

## Formatting and lints, as CI runs them: rustfmt, and clippy with warnings as errors.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Figures, not tests: API calls per scan and per replacement, bootstrap sizes, peak memory.
bench: $(VENV)/.dev build
	$(CARGO) run --quiet -p e2e --bin bench

## sam validate --lint on template.yaml.
validate: $(VENV)/.deploy
	$(VENV)/bin/sam validate --lint --region us-east-1

## sam build: the four bootstrap binaries for arm64 with cargo-lambda (into .aws-sam/).
build: $(VENV)/.deploy
	rustup target add aarch64-unknown-linux-gnu
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/sam build --beta-features

tools: $(VENV)/.deploy

fmt:
	$(CARGO) fmt --all

$(VENV)/bin/pip:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.dev: requirements-dev.txt | $(VENV)/bin/pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(VENV)/.deploy: requirements-deploy.txt | $(VENV)/bin/pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-deploy.txt
	touch $@

clean:
	rm -rf $(VENV) .aws-sam target
