# The two commands: `make report` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PRESET ?=
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: install chromium test report train clean-venv

# The warnings filtered in the tests (pyproject.toml) are filtered in the notebooks' kernels too
export PYTHONWARNINGS := ignore:The image decoding and encoding capabilities of TorchVision are deprecated:DeprecationWarning

# (Re)install when pyproject.toml or the pinned versions change; the stamp file records a finished
# install. constraints.txt pins every package's version, so a new release changes nothing here.
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	@touch $@

install: $(VENV)/.installed

# Headless Chromium, which tests/test_report.py opens the report in (CI runs as root on Debian).
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

# Unit tests, then the committed notebooks regressed against their stored outputs (the figures
# they save while re-running go to a temporary folder, not over the committed ones).
test: install chromium
	$(PY) -m pytest tests
ifneq ($(NOTEBOOKS),)
	$(PY) -m pytest --nbval --nbval-current-env $(NOTEBOOKS)
endif

# Execute every notebook in place (by default with the parameters it was committed with, which
# read the committed results store, so nothing stored is trained; PRESET=smoke recomputes
# everything small on CPU), generate the report's include files, then render _site/ with Quarto,
# or offline HTML where Quarto is missing.
report: install
	$(PY) -m shared.report --execute $(if $(PRESET),--preset $(PRESET))

# Train grids of runs into the results store (resumable): make train GRIDS="fig1 sweep" PRESET=quick SEEDS="0 1"
# As jobs: LAUNCHER=slurm (a job array), local (worker processes) or debug; ARGS="--partition gpu ..."
GRIDS ?= fig1 divergence
SEEDS ?= 0
LAUNCHER ?=
ARGS ?=
train: install
	$(PY) -m shared.train $(GRIDS) --preset $(or $(PRESET),cpu) --seeds $(SEEDS) $(if $(LAUNCHER),--launcher $(LAUNCHER)) $(ARGS)

clean-venv:
	rm -rf $(VENV)
