# The two commands: `make report` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PRESET ?= paper
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: install test report clean-venv

# (Re)install when pyproject.toml changes; the stamp file records a finished install.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $@

install: $(VENV)/.installed

# Unit tests, then the committed notebooks regressed against their stored outputs.
test: install
	$(PY) -m pytest tests
ifneq ($(NOTEBOOKS),)
	$(PY) -m pytest --nbval $(NOTEBOOKS)
endif

# Until the report site lands: execute every notebook in place with the chosen preset.
report: install
ifeq ($(NOTEBOOKS),)
	@echo "No notebooks yet: nothing to report."
else
	@for nb in $(NOTEBOOKS); do \
	  echo "executing $$nb (preset=$(PRESET))"; \
	  (cd notebooks && ../$(PY) -m papermill --cwd . $$(basename $$nb) $$(basename $$nb) -p preset $(PRESET)) || exit 1; \
	done
endif

clean-venv:
	rm -rf $(VENV)
