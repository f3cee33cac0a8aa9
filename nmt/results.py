"""Committed result files: what a run measured, where, with which code.

``python -m nmt.recipes NAME --run`` writes ``results/NAME-YYYY-MM-DD.json`` (a later run that day
``...-2.json``, ``-3``: none overwrites another) when its
``dvc exp run`` succeeds; ``make report`` renders README tables from these files, so a figure in the
README is always one a command wrote. A result file holds

- ``recipe``, ``overrides`` (the recipe's keys), ``command``: what ran;
- ``commit``, ``dirty``, ``date``, ``machine``: where and with which code;
- ``wall_seconds``: the whole ``dvc exp run`` and each training stage;
- ``metrics``: every measurement of the run's metrics files (``train``, ``eval``, ``reverse``),
  ``curve``: the dev curve (``metrics/train_curve.csv``), and ``run``: facts of the run that are
  not measurements (steps, epochs, best step, parameter count), kept apart so that no setting is
  ever read as a result.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
import re
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from nmt.io import atomic_write_json, read_json

RESULTS = Path("results")
# Facts of a run that older metrics files carried beside the measurements; never reported as results.
RUN_FACTS = ("split", "beam_size", "n", "parameters", "steps", "best_step", "epochs", "world_size",
             "mlflow_run_id", "device", "precision")
METRIC_FILES = {"train": Path("metrics/train.json"), "eval": Path("metrics/eval.json"),
                "reverse": Path("models/reverse/train.json")}
RUN_FILES = {"train": Path("models/train_run.json"), "reverse": Path("models/reverse/train_run.json")}
CURVE = Path("metrics/train_curve.csv")
# What `dvc exp run` itself rewrites (the recipe's params, the stages' committed outputs): not a sign
# that the code differed from the commit.
EXPERIMENT_WRITES = (":!params.yaml", ":!dvc.lock", ":!metrics", ":!plots")


def machine() -> dict[str, Any]:
    """The processor, core count and the versions a timing depends on."""
    from nmt.tracking.provenance import cpu_model

    out: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()}
    return out | installed_versions(("torch", "tiktoken", "transformers"))


def installed_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each of ``packages`` that is installed (the benchmarks' record too)."""
    out = {}
    for package in packages:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def split_facts(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(measurements, facts)``: a metrics file's numbers apart from the run facts it may carry."""
    measured = {k: v for k, v in metrics.items() if k not in RUN_FACTS}
    return measured, {k: v for k, v in metrics.items() if k in RUN_FACTS}


def read_curve(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def collect_run(root: Path) -> dict[str, Any]:
    """Metrics, run facts and dev curve of the pipeline run whose outputs are in ``root``."""
    metrics: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    for name, path in METRIC_FILES.items():
        if (root / path).is_file():
            metrics[name], facts[name] = split_facts(read_json(root / path))
    for name, path in RUN_FILES.items():
        if (root / path).is_file():
            facts.setdefault(name, {}).update(read_json(root / path))
    return {"metrics": metrics, "run": {k: v for k, v in facts.items() if v}, "curve": read_curve(root / CURVE)}


def recipe_result(name: str, overrides: dict, command: list[str], wall_seconds: float, root: Path,
                  today: dt.date | None = None) -> dict[str, Any]:
    """The result file's content for recipe ``name`` whose ``dvc exp run`` just finished in ``root``."""
    run = collect_run(root)
    stage_seconds = {stage: metrics["train_seconds"] for stage, metrics in run["metrics"].items()
                     if "train_seconds" in metrics}
    return {
        "recipe": name,
        "overrides": overrides,
        "command": command,
        "commit": git(root, "rev-parse", "HEAD"),
        "dirty": bool(git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *EXPERIMENT_WRITES)),
        "date": (today or dt.date.today()).isoformat(),
        "machine": machine(),
        "wall_seconds": {"dvc_exp_run": round(wall_seconds, 1), **stage_seconds},
        **run,
    }


def result_name(name: str, day: dt.date, n: int = 1) -> str:
    """``NAME-YYYY-MM-DD.json`` for the day's first run, ``NAME-YYYY-MM-DD-n.json`` for its n-th."""
    return f"{name}-{day.isoformat()}{f'-{n}' if n > 1 else ''}.json"


def result_path(name: str, today: dt.date, root: Path = Path(".")) -> Path:
    """The day's first free :func:`result_name`: a second run on the same day never overwrites the
    first (which may be committed)."""
    n = 1
    while (path := root / RESULTS / result_name(name, today, n)).exists():
        n += 1
    return path


def write_recipe_result(name: str, overrides: dict, command: list[str], wall_seconds: float,
                        root: Path = Path("."), today: dt.date | None = None) -> Path:
    today = today or dt.date.today()
    path = result_path(name, today, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, recipe_result(name, overrides, command, wall_seconds, root, today))
    return path


def run_order(name: str, path: Path) -> tuple[str, int] | None:
    """``(date, n)`` of a :func:`result_name` of recipe ``name``, or None for another file:
    ``django-fp32-2026-11-29.json`` is not a run of recipe ``django``."""
    match = re.fullmatch(rf"{re.escape(name)}-(\d{{4}}-\d{{2}}-\d{{2}})(?:-(\d+))?\.json", path.name)
    return (match[1], int(match[2] or 1)) if match else None


def latest_result(name: str, root: Path = Path(".")) -> Path | None:
    """The newest committed ``results/NAME-YYYY-MM-DD[-n].json`` (the day's last run), or None."""
    found = [(order, path) for path in (root / RESULTS).glob(f"{name}-*.json")
             if (order := run_order(name, path)) is not None]
    return max(found)[1] if found else None
