"""How every pipeline stage and CLI command turns user errors into a message and an exit code."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from nmt.config import Params, load_params
from nmt.errors import NmtError, describe_os_error


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def find_dvc() -> str | None:
    """The dvc installed beside this interpreter (the venv's), else whichever is on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.is_file() else shutil.which("dvc")


def run_stage(body: Callable[[Params], object], params_path: Path = Path("params.yaml")) -> None:
    """Validate params.yaml first (exit 2 naming every bad key), then run ``body``.

    A user error (bad data, bad model files) exits 2 with its message, a file system error (disk
    full, read-only directory) 1 with the path, Ctrl-C 130; every output is written atomically,
    so none of them leaves a half-written file behind.
    """
    try:
        body(load_params(params_path))
    except NmtError as e:
        fail(str(e), e.exit_code)
    except OSError as e:  # disk full, read-only directory: every write is atomic, so nothing is half-written
        if e.filename is None:  # not a file: a network error and the like, which carry their own story
            raise
        fail(describe_os_error(e), 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)
