"""CI's quality gate: a reproduced run must really have run, and may not score below the committed one.

``nmt check-metrics`` reads ``dvc metrics diff --json --all REV`` (the committed metrics against the
workspace's). Gated are the reported test split's exact match and BLEU (``metrics/eval.json``): each
may not fall more than the tolerance below its committed value. Nothing else is compared: settings
are not results, timings and FLOP rates belong to the machine, and a score that rises is no failure
(committing it raises the bar).

Outputs that were already up to date prove nothing, so the gate can also require every metrics file
to have been written after a given moment: CI passes the time it started ``dvc repro``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

GATED = {"metrics/eval.json": ("exact_match", "bleu")}
RUN_OUTPUTS = (Path("metrics/train.json"), Path("metrics/eval.json"))  # what every pipeline run rewrites


def score_drops(diff: dict[str, Any], tolerance: float) -> tuple[list[str], list[str]]:
    """(problems, one line per gated metric) for a ``dvc metrics diff --json --all`` result."""
    changes = diff.get("diff", diff)
    problems, checked = [], []
    for path, keys in GATED.items():
        for key in keys:
            change = changes.get(path, {}).get(key)
            old = change.get("old") if isinstance(change, dict) else None
            new = change.get("new") if isinstance(change, dict) else None
            if not isinstance(old, (int, float)):
                problems.append(f"{path}: {key} has no committed value to compare with (commit metrics/ first)")
            elif not isinstance(new, (int, float)):
                problems.append(f"{path}: {key} is missing from the workspace's file (did the evaluate stage run?)")
            elif new < old - tolerance:
                problems.append(f"{path}: {key} fell from {old:.2f} to {new:.2f}, more than {tolerance} below")
            else:
                checked.append(f"{path}: {key} {old:.2f} -> {new:.2f}")
    return problems, checked


def stale_files(paths: tuple[Path, ...] | list[Path], since: float) -> list[str]:
    """The files of ``paths`` that are missing or were last written before ``since`` (a Unix time)."""
    stale = []
    for path in paths:
        if not path.is_file():
            stale.append(f"{path}: missing")
        elif path.stat().st_mtime < since:
            stale.append(f"{path}: last written before the run began, so its stage did not run")
    return stale
