"""What each lever of the default pipeline buys at its ten-minute budget -> results/default-ablation.json.

Each variant is the committed params.yaml with a few keys changed, run from scratch as a temporary
DVC experiment (``dvc exp run --temp -f -n ablation-NAME -S key=value ...``), so the workspace is
left as it is and ``dvc exp show`` lists the runs. The ``default`` variant changes nothing: it
times the whole pipeline and should reproduce the committed metrics. Decoding levers (beam search,
reranking) need no run of their own: the evaluate stage scores greedy, the beam's top hypothesis
and the reranked choice side by side (``greedy_*``, ``top1_*``).

    .venv/bin/python -m benchmarks.ablation                  # every variant, one after another (~30 min)
    .venv/bin/python -m benchmarks.ablation --only no_copy   # some of them (the others' rows are kept)

Run it with nothing else on the machine: the wall times are part of the result.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from nmt.config import DEFAULT_PARAMS
from nmt.dvc import find_dvc, stage_environment
from nmt.errors import fail
from nmt.io import atomic_write_json
from nmt.recipes import recipe_params, set_args
from nmt.results import machine

OUT = Path("results/default-ablation.json")
PLACEHOLDERS_OFF = {"tokenize": {"string_placeholders": False, "name_placeholders": False, "rare_words": 0,
                                 "placeholder_tokens": False}}
VARIANTS: dict[str, tuple[str, dict]] = {
    "default": ("params.yaml as committed", {}),
    "no_copy": ("without the pointer-generator (model.copy: false)", {"model": {"copy": False}}),
    "no_placeholders": ("without string, name and rare-word placeholders", PLACEHOLDERS_OFF),
    "two_layers": ("2+2 layers instead of 3+3, same steps", {"model": {"enc_layers": 2, "dec_layers": 2}}),
}
METRIC_FILES = ("metrics/eval.json", "metrics/train.json")


def run_variant(dvc: str, name: str, overrides: dict) -> dict:
    """Run one variant as a temporary experiment; its metrics (read from the experiment's commit) and wall time."""
    recipe_params(overrides, DEFAULT_PARAMS, f"ablation variant {name}")  # bad keys fail before DVC starts
    exp = f"ablation-{name}"
    # The experiment runs in a copy without .venv: put this interpreter first for the stages, and log
    # into this repository's MLflow store rather than a throwaway one in the copy.
    env = stage_environment()
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{Path('mlflow.db').resolve()}")
    start = time.monotonic()
    proc = subprocess.run([dvc, "exp", "run", "--temp", "-f", "-n", exp, *set_args(overrides)], env=env)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        fail(f"variant {name}: `dvc exp run` exited {proc.returncode}", 1)
    ref = experiment_ref(exp)
    metrics = {path: json.loads(git("show", f"{ref}:{path}")) for path in METRIC_FILES}
    return {"overrides": overrides, "pipeline_seconds": round(wall, 1), "experiment": exp,
            "experiment_commit": git("rev-parse", ref).strip(), **metrics}


def experiment_ref(name: str) -> str:
    """The newest git ref DVC stored the experiment ``name`` under."""
    refs = git("for-each-ref", "--sort=-committerdate", "--format=%(refname)", "refs/exps").split()
    matching = [r for r in refs if r.rsplit("/", 1)[-1] == name]
    if not matching:
        fail(f"no experiment named {name} among DVC's refs", 1)
    return matching[0]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=VARIANTS, help="run these variants (default: all)")
    args = parser.parse_args(argv)
    dvc = find_dvc()
    if dvc is None:
        fail("dvc is not installed here (run `make install`)")
    if git("status", "--porcelain", "--untracked-files=no", "--", "params.yaml", "dvc.yaml", "nmt", "pipeline"):
        fail("commit params.yaml, dvc.yaml, nmt/ and pipeline/ first: the result names the commit it measured")
    previous = json.loads(OUT.read_text())["variants"] if OUT.is_file() else {}
    variants = dict(previous)
    for name in args.only or VARIANTS:
        description, overrides = VARIANTS[name]
        print(f"ablation: {name} ({description})", file=sys.stderr)
        variants[name] = {"description": description, **run_variant(dvc, name, overrides)}
    atomic_write_json(OUT, {"command": "python -m benchmarks.ablation", "commit": git("rev-parse", "HEAD").strip(),
                            "machine": machine(), "variants": variants})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
