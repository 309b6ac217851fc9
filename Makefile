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
BENCH_ARGS ?= --n 2000 --repeats 3
bench: install
	$(BIN)/pip install --quiet -r benchmarks/requirements.txt
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf out build *.egg-info
