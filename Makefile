# The two commands of the README: `make run` and `make test`, both from a fresh machine.
#
# PyTorch is the reference the tests compare against. TORCH_SPEC picks the CPU
# build that this project's machines hold on local disk (torch==2.13.0); any
# other version from the package index is a multi-gigabyte CUDA build. Elsewhere,
# install PyTorch's CPU-only wheel the way PyTorch's install guide describes, or
# run e.g. `make test TORCH_SPEC='torch>=2.3'`.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
# The main job needs the project alone; the tests and the book also need PyTorch and the test extra (pydensecrf2
# builds from source, about a minute where pip has no wheel of it cached), so each command installs what it uses.
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test book install clean

run: $(STAMP)
	$(BIN)/minidl run

# The CUDA kernels are tested on the CPU by Numba's simulator, which must be
# switched on before Numba is imported: a second pytest process.
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q
	NUMBA_ENABLE_CUDASIM=1 $(BIN)/python -m pytest -q tests/cudasim

# Re-execute every chapter of the book and its exercise solutions in place (normal mode), saving the outputs.
book: $(TEST_STAMP)
	$(BIN)/python book/build.py

install: $(TEST_STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(TEST_STAMP)

clean:
	rm -rf $(VENV) .pytest_cache
