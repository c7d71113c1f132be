# Two commands: `make demo` and `make test`. Each installs what it needs on a fresh
# Debian machine (run as root, or with sudo available).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the device's install: `.[edge]`, no torch (docs/edge.md)
EDGE_VENV := .venv-edge
APT_PACKAGES := espeak-ng flite libsndfile1 wordnet-base
SHARED ?= ../shared
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint deps edge-venv system-deps corpus train eval bench-rtf proto clean

demo: deps
	$(BIN)/splitasr demo

test: deps edge-venv
	$(BIN)/ruff check splitasr tests
	$(BIN)/pytest

lint: deps
	$(BIN)/ruff check splitasr tests
	$(BIN)/ruff format --check splitasr tests

deps: system-deps $(VENV)/.stamp-deps

proto: deps  # regenerate splitasr/transport/splitasr_pb2*.py from splitasr.proto
	PYTHON=$(BIN)/python scripts/gen_proto.sh

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.stamp-deps: pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[cloud,edge,dev,ray]' numpy==1.26.4  # numpy pinned: ray must not move it
	touch $@

# The edge install in its own venv, as a device gets it: `pip install '.[edge]'` (editable,
# so the tests run this tree), and torch must not be importable there.
edge-venv: system-deps $(EDGE_VENV)/.stamp-deps

$(EDGE_VENV)/.stamp-deps: pyproject.toml
	[ -x $(EDGE_VENV)/bin/python ] || $(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/pip install -q -e '.[edge]'
	@if $(EDGE_VENV)/bin/python -c 'import torch' 2>/dev/null; then \
		echo "$(EDGE_VENV) can import torch: the edge install must not bring it" >&2; exit 1; fi
	touch $@

# The recipe behind the shipped model (not needed for demo or test).
corpus: deps
	$(BIN)/splitasr data build --out data/corpus --arctic $(SHARED)/data/text/cmuarctic.data --fsdd $(SHARED)/data/fsdd/recordings

train: corpus
	$(BIN)/splitasr train --config configs/ds2-default.toml

eval: deps
	$(BIN)/splitasr bench asr --model ds2 --out results/asr $(foreach m,test_sentences_seen_voices test_sentences_heldout_voices test_digits_heldout_speaker,--manifest data/corpus/$(m).jsonl)

bench-rtf: deps
	$(BIN)/splitasr bench rtf --model ds2 --manifest data/corpus/test_sentences_seen_voices.jsonl --out results/rtf

clean:
	rm -rf $(VENV) $(EDGE_VENV) .pytest_cache .ruff_cache results
