"""Errors a user can fix: each carries a message that names what is wrong and how to fix it.

:func:`fail` is the one way a command or stage turns such an error into ``error: ...`` on stderr
and an exit code.
"""

import sys


class NmtError(Exception):
    """Base of every error the CLI and pipeline turn into a clean message and exit code 2."""

    exit_code = 2


class ConfigError(NmtError):
    """params.yaml (or an override) has unknown keys, wrong types or out-of-range values."""

    def __init__(self, problems: list[str], source: str = "params.yaml"):
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} invalid parameter(s):\n{lines}")


class DataError(NmtError):
    """A data file is missing, malformed, or yields no usable pairs."""


class ModelFileError(NmtError):
    """A model directory or checkpoint is missing files or does not match its config."""


class InputTooLongError(NmtError, ValueError):
    """An input has more tokens than the model accepts, and truncating it was refused (strict mode)."""

    def __init__(self, index: int, n_tokens: int, limit: int):
        self.index, self.n_tokens, self.limit = index, n_tokens, limit  # index: position in the inputs
        super().__init__(f"input {index} has {n_tokens} tokens; the model accepts at most {limit} "
                         "(without strict it would be truncated)")


def describe_os_error(e: OSError) -> str:
    """A filesystem failure as a message naming the path and what to do: disk full, read-only, no permission."""
    import errno

    where = e.filename if e.filename is not None else "a file"
    hints = {
        errno.ENOSPC: "the disk is full: free some space or point the output elsewhere",
        errno.EDQUOT: "the disk quota is used up: free some space or point the output elsewhere",
        errno.EFBIG: "the file is larger than this process may write (ulimit -f): raise the limit",
        errno.EROFS: "the file system is read-only: run from a writable copy of the repository",
        errno.EACCES: "permission denied: make the directory writable or run from a writable copy",
        errno.EPERM: "operation not permitted: make the directory writable or run from a writable copy",
    }
    hint = hints.get(e.errno or -1, "check that the path exists and can be written")
    return f"{where}: {e.strerror or e}; {hint}. Files already there were left as they were."


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
