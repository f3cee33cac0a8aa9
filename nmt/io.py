"""Atomic writes, JSON reads and project paths (JSON-lines files are read by :mod:`nmt.data.pairs`).

Every file the project writes goes through :func:`atomic_path`: the content is written to a
temporary file in the target's directory, flushed and fsynced, then renamed over the target.
A reader (or a crash, or Ctrl-C) therefore sees either the old whole file or the new whole file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from nmt.errors import DataError, ModelFileError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it onto ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        # A full disk fails in write() or close(), whose error names no file: name the target.
        raise OSError(e.errno, e.strerror, str(target)) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write one JSON object per line; return the number of lines written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_json(path: str | os.PathLike) -> Any:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not valid UTF-8 ({e.reason} at byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from e


def project_root() -> Path:
    """The repository being worked on: ``DVC_ROOT`` under ``dvc exp run`` (whose queued and
    ``--temp`` experiments run in a temporary copy of it), else the working directory."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd())


def project_path(path: str | Path) -> Path:
    """A path from params.yaml: relative ones are relative to :func:`project_root`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def read_tokenize_output(path: str | os.PathLike, what: str) -> Any:
    """:func:`read_json` for a file the tokenize stage writes (``what``: the tokenizer, the lexicon);
    a missing or broken one is a :class:`ModelFileError` that says how to rebuild it."""
    try:
        return read_json(path)
    except DataError as e:
        raise ModelFileError(f"{e} ({what} is written by the tokenize stage: `dvc repro tokenize`)") from e
