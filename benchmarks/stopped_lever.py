"""The result file of a lever run stopped before its end (``results/lever-django-NAME.json``).

A lever run is ``python -m nmt.recipes django --run -S KEY=VALUE ...``; run to its end it writes its
own result file, renamed ``lever-django-NAME.json``. A run stopped early (Ctrl-C, once the rule fixed
before it started is out of reach) writes none: its dev curve is only in its MLflow run, which the
train stage names in ``models/mlflow_run.json`` when it starts. This reads that curve back and writes
the file ``make report`` renders as a lever row with a ``stopped`` line:

- ``command``: the recipe's ``dvc exp run`` with the lever's ``-S`` settings (``--set``), as
  ``nmt.recipes`` would have recorded it;
- ``stopped``: ``at_step`` (the last evaluation), ``of_steps`` (the run's ``train.max_steps``),
  ``why``;
- ``curve``: every evaluation the MLflow run logged (dev loss, BLEU, exact match, learning rate);
- ``speed``: the training tok/s of the recipe and of the lever on one machine (``benchmarks.recipe_speed``
  without and with the lever's ``--set``), as JSON with ``machine``, ``recipe_tok_s`` and ``lever_tok_s``:
  a stopped run wrote no training metrics of its own to compare.

Run it in the repository the lever ran in, after the stop::

    python -m benchmarks.stopped_lever rdrop --set train.rdrop=5 train.batch_tokens=2048 \\
        --wall 1657 --why "..." --baseline results/django-2026-11-30-2.json --speed speed.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from nmt.errors import NmtError, fail
from nmt.io import atomic_write_json, read_json
from nmt.layout import RUN_FILE
from nmt.recipes import command, load_recipe, recipe_params, setting_values
from nmt.results import EXPERIMENT_WRITES, git, machine

# The MLflow metrics of an evaluation, in the order of a result file's curve rows.
CURVE_METRICS = ("dev_loss", "dev_bleu", "dev_exact_match", "dev_exact_match_ast", "lr")
SPEED_KEYS = ("machine", "recipe_tok_s", "lever_tok_s")


def mlflow_curve(run_id: str, root: Path) -> list[dict[str, float]]:
    """One row per step at which the run logged a dev BLEU, with the run's other curve metrics there."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from nmt.tracking.store import tracking_uri

    uri = tracking_uri(root)
    client = MlflowClient(uri)
    try:
        client.get_run(run_id)
        history = {name: {m.step: m.value for m in client.get_metric_history(run_id, name)}
                   for name in CURVE_METRICS}
    except MlflowException as e:
        raise NmtError(f"MLflow run {run_id} (from {RUN_FILE}) cannot be read from {uri}: {e.message}; run this "
                       "in the repository the lever ran in (--root), with its MLFLOW_TRACKING_URI") from e
    return [{"step": float(step), **{name: history[name][step] for name in CURVE_METRICS
                                     if step in history[name]}}
            for step in sorted(history["dev_bleu"])]


def stopped_result(name: str, recipe_name: str, settings: list[str], why: str, wall_seconds: float,
                   baseline: str, root: Path, speed: dict) -> dict[str, Any]:
    """The content of ``results/lever-<recipe>-<name>.json`` for the stopped run whose outputs are in ``root``."""
    missing = [k for k in SPEED_KEYS if k not in speed]
    if missing:
        raise NmtError(f"the speed file lacks {', '.join(missing)} (both runs' tok/s of benchmarks.recipe_speed)")
    recipe = load_recipe(recipe_name, root)
    run_id = read_json(root / RUN_FILE)["run_id"]
    curve = mlflow_curve(run_id, root)
    if not curve:
        raise NmtError(f"MLflow run {run_id} logged no dev evaluation: nothing to record (stop after an eval)")
    sets = [arg for setting in settings for arg in ("-S", setting)]
    of_steps = _max_steps(recipe_name, recipe, settings, root)
    result = {
        "recipe": recipe_name,
        "overrides": recipe,
        "command": command(recipe_name, recipe) + sets,
        "baseline": baseline,
        "commit": git(root, "rev-parse", "HEAD"),
        "dirty": bool(git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *EXPERIMENT_WRITES)),
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "wall_seconds": {"until_stopped": round(wall_seconds, 1)},
        "metrics": {},
        "run": {"train": {"mlflow_run_id": run_id, "steps": int(curve[-1]["step"])}},
        "stopped": {"at_step": int(curve[-1]["step"]), "of_steps": of_steps, "why": why},
        "speed": speed,
        "curve": curve,
    }
    return result


def _max_steps(recipe_name: str, recipe: dict, settings: list[str], root: Path) -> int:
    """``train.max_steps`` of the lever run: a ``--set`` of it, else the recipe's (validated)."""
    value = setting_values(settings).get("train.max_steps")
    if value is not None:
        return int(value)
    return recipe_params(recipe, root / "params.yaml", f"recipes/{recipe_name}.yaml").train.max_steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stopped_lever", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the lever's name: writes results/lever-RECIPE-NAME.json")
    parser.add_argument("--recipe", default="django", help="the recipe the lever ran over (recipes/RECIPE.yaml)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="settings",
                        help="the lever run's -S settings, in the order it was given them")
    parser.add_argument("--why", required=True, help="why the run was stopped (the rule it could no longer meet)")
    parser.add_argument("--wall", type=float, required=True, help="seconds from the run's start to its stop")
    parser.add_argument("--baseline", required=True, help="the recipe run's result file the lever is held against")
    parser.add_argument("--speed", type=Path, required=True,
                        help="JSON of machine, recipe_tok_s and lever_tok_s: both settings' training tok/s on one "
                             "machine (benchmarks.recipe_speed without and with --set)")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository the lever ran in")
    args = parser.parse_args(argv)
    for setting in args.settings:
        if "=" not in setting:
            fail(f"--set {setting!r}: expected KEY=VALUE, e.g. train.rdrop=5")
    if not (args.root / args.baseline).is_file():
        fail(f"--baseline {args.baseline}: no such file under {args.root} (name a results/<recipe>-<date>.json)")
    try:
        speed = read_json(args.speed)
        result = stopped_result(args.name, args.recipe, args.settings, args.why, args.wall, args.baseline,
                                args.root, speed)
    except (NmtError, FileNotFoundError, KeyError) as e:
        fail(f"cannot write the stopped lever's result: {e}")
    out = args.root / "results" / f"lever-{args.recipe}-{args.name}.json"
    atomic_write_json(out, result)
    n = len(result["curve"])
    print(f"wrote {out}: {n} evaluation{'s' if n != 1 else ''}, stopped at step {result['stopped']['at_step']:,}")


if __name__ == "__main__":
    main(sys.argv[1:])
