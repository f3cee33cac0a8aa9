# One command each: `make repro` (install + the whole pipeline), `make test` (install + tests).
# Everything installs into .venv with every dependency pinned by constraints.txt.

PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Stages run `python -m pipeline.<stage>`: put the venv first so that is our interpreter.
export PATH := $(BIN):$(PATH)

.PHONY: install repro django test bench ui lock clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

repro: install  ## run (or bring up to date) the whole DVC pipeline, then show its metrics
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

# `make django EXP_ARGS=-f` runs it again (overwriting the experiment); any `dvc exp run` option fits.
EXP_ARGS ?=
django: install  ## the Django recipe (recipes/django.yaml) as the DVC experiment `django`, then its metrics
	$(BIN)/python -m nmt.recipes django --run $(EXP_ARGS)
	$(BIN)/dvc metrics show

test: install  ## run the test suite
	$(BIN)/python -m pytest -q

bench: install  ## decoding speed ratios -> benchmarks/decode_results.json
	$(BIN)/python -m benchmarks.decode_speed

ui: install  ## browse the MLflow runs on http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

lock:  ## re-pin constraints.txt from the current .venv (after changing dependencies)
	$(BIN)/python -m pip freeze --exclude-editable | sed -e 's/^torch==.*/torch==2.13.0/' > constraints.txt

clean:  ## remove the virtualenv (pipeline outputs stay: `dvc gc` / `rm -r data models` for those)
	rm -rf $(VENV)
