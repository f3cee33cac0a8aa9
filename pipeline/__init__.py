"""One thin module per DVC stage: read params.yaml, call one `nmt` function.

DVC runs a stage as `python3 -m pipeline.<stage>` with whichever `python3` comes first on PATH. After
`make install`, a user who types `.venv/bin/dvc repro` without activating the venv gets the
system's interpreter, which lacks the dependencies. Importing this package first hands the stage to
the repository's `.venv/bin/python` in that case, so every `dvc` command works as the README writes
it; with no such venv it stops with a message saying what to run.
"""

import importlib.util
import os
import sys
from pathlib import Path

REQUIRED = ("torch", "tiktoken", "yaml")  # the first imports a stage needs that a bare Python lacks
VENV = Path(__file__).resolve().parent.parent / ".venv"


def _in_venv() -> bool:
    return VENV.is_dir() and os.path.realpath(sys.prefix) == os.path.realpath(VENV)


def _hand_over_to_the_venv() -> None:
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if not missing:
        return
    python = VENV / "bin" / "python"
    if python.is_file() and not _in_venv():
        os.execv(python, [str(python), *sys.orig_argv[1:]])
    print(f"error: {sys.executable} cannot import {', '.join(missing)}, which the pipeline needs. Run "
          "`make install` in the repository root (it creates .venv), then `.venv/bin/dvc repro`; or install "
          "the project (`pip install -e .`) into the environment whose python3 runs the stages.",
          file=sys.stderr)
    raise SystemExit(2)


_hand_over_to_the_venv()
