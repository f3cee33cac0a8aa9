"""A queued sweep's results, kept as a file the README renders: `dvc exp show` plus the queue's wall times.

    bash benchmarks/sweep_walltime.sh        # runs the README's 3-point sweep with --jobs 2, then --jobs 1,
                                             # each in a fresh clone, and calls this to write results/sweep.json
    .venv/bin/python -m benchmarks.sweep_record REPO --wall 2=701.8 --wall 1=900.0 [--out results/sweep.json]

REPO is a repository whose queued experiments have run (``dvc queue start``); each of its
experiments becomes one row: its name, the parameters the sweep set, and its scores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from datetime import date
from pathlib import Path

from nmt.io import atomic_write_json
from nmt.results import machine

PARAMS = ("train.lr", "train.max_steps")
METRICS = {"metrics/train.json": ("best_dev_bleu", "train_seconds"), "metrics/eval.json": ("bleu", "exact_match")}


def _param(params: dict, dotted: str):
    value = params
    for key in dotted.split("."):
        value = value[key]
    return value


def experiments(show: list[dict]) -> list[dict]:
    """One row per experiment of ``dvc exp show --json``'s output, oldest first."""
    rows = []
    for baseline in show:
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            params = rev["data"]["params"]["params.yaml"]["data"]
            metrics = rev["data"]["metrics"]
            rows.append({"name": exp["name"], "timestamp": rev["data"]["timestamp"],
                         **{p: _param(params, p) for p in PARAMS},
                         **{m: metrics[f]["data"][m] for f, names in METRICS.items() for m in names}})
    return sorted(rows, key=lambda r: r["timestamp"] or "")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sweep_record", description=__doc__.split("\n\n")[0])
    ap.add_argument("repo", type=Path, help="the repository the sweep ran in")
    ap.add_argument("--wall", action="append", default=[], metavar="JOBS=SECONDS",
                    help="the queue's wall time with --jobs JOBS (repeatable)")
    ap.add_argument("--command", default="", help="the sweep's command, recorded")
    ap.add_argument("--out", type=Path, default=Path("results/sweep.json"))
    args = ap.parse_args(argv)
    show = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=args.repo, check=True,
                                     capture_output=True, text=True).stdout)
    walls = {}
    for item in args.wall:
        jobs, _, seconds = item.partition("=")
        walls[jobs] = float(seconds)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=args.repo, check=True, capture_output=True,
                            text=True).stdout.strip()
    atomic_write_json(args.out, {"command": args.command, "commit": commit, "date": date.today().isoformat(),
                                 "machine": machine(), "wall_seconds_by_jobs": walls,
                                 "experiments": experiments(show)})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
