# Two commands: `make demo` and `make test`. Both create .venv when missing and
# (re)install the project whenever pyproject.toml changed or a previous install failed
# (the stamp file is written only after a successful install).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg
# One torch/OpenMP thread per test process: with TEST_WORKERS processes on as many cores, a
# second intra-op thread only waits at barriers (a small fusion fit took 13-19 s instead of
# 0.5 s on a busy 2-core machine).
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
# Test processes (pytest-xdist). --dist loadfile keeps each test file in one process, so the
# fitted models a module-scoped fixture shares are built once. The notebooks and the longest
# test files are handed out first (tests/conftest.py orders them; --no-loadscope-reorder keeps
# that order, where pytest-xdist would sort files by their number of tests and hand the
# one-test notebooks out last, ending the run on one worker while the other waits).
TEST_WORKERS ?= 2

# pip byte-compiles what it installs (keep it: where PYTHONDONTWRITEBYTECODE is set, as on this
# machine, nothing is compiled later, and --no-compile made every test process compile torch:
# 265 s -> 381 s of tests). The toolkit itself is an editable install, never compiled by pip:
# `make test` compiles it first, so its ~40 processes (workers, kernels, loky, dask) read it.

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.stamp-embed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[embed]"
	touch $@

$(VENV)/.stamp-dev: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[embed,dev,distributed]"
	touch $@

demo: $(VENV)/.stamp-embed
	$(VENV)/bin/mmtk run pipelines/sentiment.yaml --out runs/

test: $(VENV)/.stamp-dev
	$(PY) -m compileall -q toolkit
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder notebooks tests toolkit --doctest-modules --nbmake
	$(PY) -m ruff check toolkit tests benchmarks

lint: $(VENV)/.stamp-dev
	$(PY) -m ruff check toolkit tests benchmarks
	$(PY) -m ruff format --check toolkit tests benchmarks

bench: $(VENV)/.stamp-dev
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
