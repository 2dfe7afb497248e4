# metafab: every target that needs Python depends on the project's own venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test prove demo bench lint clean report-screenshot

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@echo "compiling the WebAssembly tools once per machine (YoWASP Yosys and nextpnr, Amaranth's Yosys)"
	@echo "and Verilator's run-time library once per build folder: ~2 min"
	$(VENV)/bin/metafab doctor --prepare
	touch $(STAMP)

# two workers: simulator builds are shared through the build folder's locks
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# the front end's formal proof (k-induction) and covers, docs/formal.md
prove: $(STAMP)
	$(VENV)/bin/metafab prove

demo: $(STAMP)
	$(VENV)/bin/metafab demo

bench: $(STAMP)
	$(VENV)/bin/metafab bench --synth

# the README's picture of a report page, from the sample reports the tests use
report-screenshot: $(STAMP)
	$(VENV)/bin/metafab report tests/data/report_build -o build/report-sample --screenshot docs/report_maml.png

lint: $(STAMP)
	$(VENV)/bin/ruff check reference hw gen sim tests

clean:
	rm -rf build sim_build .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
