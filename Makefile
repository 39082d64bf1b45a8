# shiftlab set-up and entry points. Both main targets are idempotent: on a machine
# that is already set up they skip straight to the work.
#
#   make demo   install what is needed, then run the pipeline (dvc repro) on the embedded default data
#   make test   install what is needed, then run the test suite
#
# Works as root or as a user with sudo on Debian 12 (bookworm) or newer.

SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Data (BRIEF.md section 4) and tools the default scenario uses.
APT_PKGS := dataset-fashion-mnist trigger-rally-data asterisk-core-sounds-en-wav saytime \
            dustracing2d-data openttd-opensfx espeak-ng flite git
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo test setup system venv repro clean-data

demo: setup repro

repro:
	dvc repro

test: setup
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

setup: system venv

# Debian packages: installed only when one is missing (apt-get update only then too).
system:
	@missing=""; \
	command -v $(PY) >/dev/null 2>&1 || missing="python3"; \
	$(PY) -c "import venv, ensurepip" >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$${missing// /}" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	else echo "setup: Debian packages present"; fi

# The virtualenv: rebuilt only when pyproject.toml changes.
venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "setup: virtualenv $(VENV) ready"

clean-data:
	rm -rf data/prepared data/splits
