# polycap: `make demo` runs the pipeline on the bundled sample data, `make test` runs the tests.
# Each creates .venv with Python 3.11 and installs the project from setup.py first.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed-$(shell cat setup.py | cksum | cut -d' ' -f1)

# Models come from installed packages only; never let a library reach for a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test bench clean

install: $(INSTALLED)

$(INSTALLED): setup.py
	@command -v $(PYTHON) >/dev/null || { echo "polycap needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(BIN)/polycap run --config configs/demo.yaml --output out/demo

test: install
	$(BIN)/python -m pytest tests

# The benchmark harness (benchmarks/README.md), not part of make test: prints a table and writes
# benchmarks/results.json. E.g. make bench BENCH_ARGS="--n 5000 --repeats 3".
# The baseline's pandas goes to a folder of its own that only the baseline's process reads:
# Beam imports pandas whenever it can (~0.5 s), which make demo's environment does not hold.
BENCH_ARGS ?= --n 2000 --repeats 3
BASELINE_LIBS := $(VENV)/baseline-libs
bench: install $(BASELINE_LIBS)/.installed
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

$(BASELINE_LIBS)/.installed: benchmarks/requirements.txt
	rm -rf $(BASELINE_LIBS)
	$(BIN)/pip install --quiet --no-deps --target $(BASELINE_LIBS) -r benchmarks/requirements.txt
	touch $@

clean:
	rm -rf out build *.egg-info
