"""The dvc program nmt drives: finding it, and asking it how the metrics moved.

The pipeline itself is run by dvc (``dvc repro``, ``dvc exp run``); nmt calls it as a program
rather than importing it, so the dvc that runs is the one installed beside this interpreter (the
venv's) when there is one, the same one `make` uses, else whichever is on PATH.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from nmt.errors import NmtError


class DvcError(NmtError):
    """dvc is not installed here, or a dvc command failed."""


def find_dvc() -> str | None:
    """The dvc installed beside this interpreter (the venv's), else whichever is on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.is_file() else shutil.which("dvc")


def metrics_diff(rev: str) -> dict:
    """``dvc metrics diff --json --all REV``, parsed: every metric of the workspace against ``rev``.

    Raises :class:`DvcError` when dvc is not installed or the diff fails (naming dvc's message).
    """
    dvc = find_dvc()
    if dvc is None:
        raise DvcError("dvc is not installed here (run `make install`, or put dvc on PATH)")
    proc = subprocess.run([dvc, "metrics", "diff", "--json", "--all", rev], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DvcError(f"`dvc metrics diff` failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout or "{}")
