"""Fail when a reproduced quality metric moves from its committed value by more than a tolerance.

Reads the JSON of `dvc metrics diff --json` (committed HEAD vs the workspace). Timing figures
(seconds, tokens/s, FLOP/s, MFU) and the fp16 loss scaler's skips vary from machine to machine and
are never compared.
"""

from __future__ import annotations

from typing import Any

UNCOMPARED = ("train_seconds", "train_tokens_per_s", "train_flops_per_s", "peak_flops", "mfu",
              "scaler_skipped_steps")


def metric_moves(diff: dict[str, Any], tolerance: float) -> tuple[list[str], int]:
    """(problems, number of metrics compared) for a `dvc metrics diff --json` result."""
    problems, compared = [], 0
    for path, metrics in sorted(diff.get("diff", diff).items()):
        for key, change in sorted(metrics.items()):
            if key in UNCOMPARED or not isinstance(change, dict):
                continue
            old, new = change.get("old"), change.get("new")
            if not isinstance(old, (int, float)) and not isinstance(new, (int, float)):
                continue
            compared += 1
            if old is None or new is None:
                problems.append(f"{path}: {key} is {'new' if old is None else 'gone'} (old {old}, new {new})")
            elif abs(new - old) > tolerance:
                problems.append(f"{path}: {key} moved from {old} to {new} (tolerance {tolerance})")
    return problems, compared
