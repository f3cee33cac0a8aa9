"""Run variants of a recipe side by side where DVC is not installed: the lent GPU machine.

Sweeps are DVC's experiment queue (``python -m nmt.sweep``, README "Sweeps"). What DVC cannot do is
run where it is not installed: the GPU machine lent for one-off checks gets a copy of the working
tree and torch, not this project's venv (no DVC, no MLflow) and no network to install them, so
``benchmarks/gpu_sweep.sh`` runs its sweeps through this module. It does nothing else::

    python -m benchmarks.sweep django --jobs 4 --out sweep.json \\
        --set train.device=cuda \\
        --variant base \\
        --variant rare5 tokenize.rare_words=5 \\
        --variant rare20 tokenize.rare_words=20 train.max_steps=8000

Each variant gets a directory ``<root>/<name>`` holding a params.yaml (params.yaml, then the
recipe, then every ``--set``, then the variant's own ``key=value`` overrides; validated like any
params.yaml) and links to this checkout's ``nmt`` and ``pipeline``, and runs the download,
tokenize, train and evaluate stages there with MLflow off. Variants run ``--jobs`` at a time; the
table prints as each ends.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import yaml

from nmt.config import DEFAULT_PARAMS
from nmt.params import params_from_dict
from nmt.recipes import load_recipe, merge

STAGES = ("download", "tokenize", "train", "evaluate")
REPO = Path(__file__).resolve().parent.parent


def parse_overrides(pairs: list[str]) -> dict:
    """``["train.lr=1e-3", ...]`` -> nested dict; values are read as YAML (``1e-3`` is a float)."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: override {pair!r} is not KEY=VALUE (e.g. train.lr=1e-3)")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _value(value)
    return out


def _value(text: str):
    """YAML's reading of ``text``, except that numbers YAML 1.1 leaves as strings (``1e-3``) are floats."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def variant_params(recipe: dict, common: dict, own: dict) -> dict:
    """params.yaml <- recipe <- --set <- the variant's overrides, with MLflow off; validated."""
    base = yaml.safe_load((REPO / DEFAULT_PARAMS).read_text(encoding="utf-8"))
    params = merge(merge(merge(merge(base, recipe), common), own), {"mlflow": {"enabled": False}})
    params_from_dict(params, "the sweep's variant")  # exits loudly on an unknown key or bad value
    return params


def prepare(directory: Path, params: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for package in ("nmt", "pipeline"):
        link = directory / package
        if not link.exists():
            link.symlink_to(REPO / package)
    (directory / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def run_variant(name: str, directory: Path) -> dict:
    """Run the stages in ``directory``; the scores of metrics/*.json, or the failing stage's log tail."""
    start = time.time()
    path = os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH", "")]))
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    with open(directory / "log.txt", "w", encoding="utf-8") as log:
        for stage in STAGES:
            code = subprocess.call([sys.executable, "-m", f"pipeline.{stage}"], cwd=directory, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
            if code:
                tail = (directory / "log.txt").read_text(encoding="utf-8")[-2000:]
                return {"name": name, "failed": stage, "exit": code, "log_tail": tail}
    result = {"name": name, "wall_s": round(time.time() - start, 1)}
    for metrics, path in (("train", "metrics/train.json"), ("eval", "metrics/eval.json"), ("run", "models/train_run.json")):
        if (directory / path).is_file():
            result[metrics] = json.loads((directory / path).read_text(encoding="utf-8"))
    return result


def row(r: dict) -> str:
    if "failed" in r:
        return f"| {r['name']} | failed in {r['failed']} (exit {r['exit']}) | | | | | | |"
    e, t = r.get("eval", {}), {**r.get("train", {}), **r.get("run", {})}
    return (f"| {r['name']} | {e.get('exact_match', float('nan')):.1f} | {e.get('bleu', float('nan')):.1f} "
            f"| {e.get('greedy_exact_match', float('nan')):.1f} | {e.get('syntax_valid', float('nan')):.1f} "
            f"| {t.get('steps', '')} | {t.get('train_seconds', '')} | {t.get('train_tokens_per_s', '')} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", help="recipes/NAME.yaml (or 'none' for params.yaml alone)")
    parser.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME [KEY=VALUE ...]",
                        help="a variant: its name, then its overrides (repeat for each variant)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every variant")
    parser.add_argument("--jobs", type=int, default=1, help="variants run at the same time")
    parser.add_argument("--root", type=Path, default=Path("sweep"), help="directory of the variants' directories")
    parser.add_argument("--out", type=Path, default=None, help="write every variant's metrics here as JSON")
    args = parser.parse_args(argv)

    recipe = {} if args.recipe == "none" else load_recipe(args.recipe, REPO)
    common = parse_overrides(args.set)
    names = [v[0] for v in args.variant]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: variant names must differ, got {names}")
    jobs = []
    for name, *pairs in args.variant:
        directory = args.root.resolve() / name
        prepare(directory, variant_params(recipe, common, parse_overrides(pairs)))
        jobs.append((name, directory))

    print("| variant | EM | BLEU | greedy EM | syntax-valid | steps | train s | tok/s |\n|---|---|---|---|---|---|---|---|",
          flush=True)
    results = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for future in as_completed([pool.submit(run_variant, *job) for job in jobs]):
            result = future.result()
            results.append(result)
            print(row(result), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if any("failed" in r for r in results):
        for r in results:
            if "failed" in r:
                print(f"--- {r['name']}: {r['failed']} failed\n{r['log_tail']}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
