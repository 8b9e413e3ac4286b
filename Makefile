# The whole set-up on a fresh machine: `make demo`, then `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/readapt demo

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest

bench: install
	bash benchmarks/glue.sh

clean:
	rm -rf $(VENV) runs .pytest_cache
