# One command each: `make repro` (install + the whole pipeline), `make test` (install + tests).
# Everything installs into .venv with every dependency pinned by constraints.txt.

PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Stages run `python3 -m pipeline.<stage>`: put the venv first so that is our interpreter.
export PATH := $(BIN):$(PATH)

.PHONY: install repro django sweep test bench ablation report fuzz ui server serve demo lock clean

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
BENCH_ARGS ?=
DEMO_ARGS ?=
django: install  ## the Django recipe (recipes/django.yaml) as the DVC experiment `django`, then its metrics
	$(BIN)/python -m nmt.recipes django --run $(EXP_ARGS)
	$(BIN)/dvc metrics show

# `make sweep SWEEP='train.lr=1e-3,2e-3,4e-3 train.max_steps=300' JOBS=2`: one queued DVC experiment per
# point (python -m nmt.sweep), then DVC's queue runs them JOBS at a time; `dvc exp show` lists them.
SWEEP ?=
JOBS ?= 2
sweep: install  ## queue SWEEP's points as DVC experiments and start the queue (JOBS at a time)
	@test -n "$(SWEEP)" || { echo "error: set SWEEP, e.g. make sweep SWEEP='train.lr=1e-3,2e-3 train.max_steps=300'" >&2; exit 2; }
	$(BIN)/python -m nmt.sweep $(SWEEP) --queue
	$(BIN)/dvc queue start --jobs $(JOBS)

test: install  ## run the test suite
	$(BIN)/python -m pytest -q

bench: install  ## speed vs nn.Transformer, HF BART, CTranslate2, tiktoken; MFU; int8 decoding and the served model under load (needs make repro) -> benchmarks/results.json (~15 min; BENCH_ARGS=--quick < 4)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

ablation: install  ## each lever of the default, off in turn, from scratch as temporary DVC experiments -> results/ (~30 min)
	$(BIN)/python -m benchmarks.ablation

report: install  ## render the README's measured tables from metrics/, plots/ and results/
	$(BIN)/python -m nmt.report

fuzz: install  ## the hypothesis fuzz tests (pytest -m fuzz) at 10,000 examples each instead of a few hundred (~5 min)
	NMT_FUZZ_EXAMPLES=10000 $(BIN)/python -m pytest -q -m fuzz

ui: install  ## MLflow UI on 127.0.0.1:5000, opening on this project's runs (prints the URL)
	$(BIN)/nmt ui --port 5000

server: install  ## a shared MLflow tracking server on 127.0.0.1:5000 (sqlite, artifacts proxied) in mlflow-server/
	mkdir -p mlflow-server
	$(BIN)/mlflow server --backend-store-uri sqlite:///$(CURDIR)/mlflow-server/mlflow.db \
	    --artifacts-destination $(CURDIR)/mlflow-server/artifacts --host 127.0.0.1 --port 5000

serve: install  ## serve the registered champion model on 127.0.0.1:5001 (POST /invocations)
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} \
	$(BIN)/mlflow models serve -m models:/nmt-text2code@champion --env-manager local -h 127.0.0.1 -p 5001

demo: install  ## a web page on 127.0.0.1:7860 (DEMO_ARGS=--port ...): n-best code lines beside the retrieval baseline
	$(BIN)/nmt demo --model models/export --port 7860 $(DEMO_ARGS)

lock:  ## re-pin constraints.txt from the current .venv (after changing dependencies)
	$(BIN)/python -m pip freeze --exclude-editable | sed -e 's/^torch==.*/torch==2.13.0/' > constraints.txt

clean:  ## remove the virtualenv (pipeline outputs stay: `dvc gc` / `rm -r data models` for those)
	rm -rf $(VENV)
