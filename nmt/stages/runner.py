"""How every pipeline stage runs: params.yaml validated first, then errors as a message and an exit code.

The stages (and `nmt train`) run their body through :func:`run_stage`, which turns user errors,
file system errors and Ctrl-C into ``error: ...`` and an exit code by :func:`nmt.errors.fail`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nmt.config import Params
from nmt.errors import NmtError, describe_os_error, fail
from nmt.params import load_params


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
