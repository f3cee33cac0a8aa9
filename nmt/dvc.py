"""The dvc program nmt drives: finding it, asking it how the metrics moved, pulling from a remote.

The pipeline itself is run by dvc (``dvc repro``, ``dvc exp run``); nmt calls it as a program
rather than importing it, so the dvc that runs is the one installed beside this interpreter (the
venv's) when there is one, the same one `make` uses, else whichever is on PATH.
"""

from __future__ import annotations

import json
import os
import re
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


def stage_environment() -> dict[str, str]:
    """This process's environment with this interpreter's directory first on PATH: the stages' ``python3``
    (dvc.yaml's commands) is then this venv's, also in a copy of the repository that has no .venv."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


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


# A remote whose URL has a scheme (s3://, gs://, ssh://, azure://, https://, ...) is not a local directory.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
ADD_REMOTE = "`dvc remote add -d NAME URL` (a directory, s3://..., gs://... or ssh://...; docs/pipeline.md)"


def _dvc(*args: str) -> subprocess.CompletedProcess:
    dvc = find_dvc()
    if dvc is None:
        raise DvcError("dvc is not installed here (run `make install`, or put dvc on PATH)")
    return subprocess.run([dvc, *args], capture_output=True, text=True, check=False)


def remotes() -> tuple[dict[str, str], str | None]:
    """This repository's DVC remotes (name -> URL, local paths made absolute by dvc) and the default
    one's name, from one ``dvc config --list`` (every level merged: a later line overrides)."""
    urls: dict[str, str] = {}
    default = None
    for line in _dvc("config", "--list").stdout.splitlines():
        key, _, value = line.strip().partition("=")
        if key == "core.remote":
            default = value
        elif key.startswith("remote.") and key.endswith(".url"):
            urls[key[len("remote."):-len(".url")]] = value
    return urls, default


def check_remote(name: str | None) -> tuple[str, str]:
    """The remote ``dvc pull`` would read (``name``, else the default) as ``(name, url)``.

    Raises :class:`DvcError` naming the fix when there is none, when ``name`` is unknown, or when a
    local-directory remote is missing (dvc itself then says "Everything is up to date" and lists
    missing cache files, without naming the directory).
    """
    known, default = remotes()
    name = name or default
    if name is None:
        raise DvcError(f"no DVC remote is configured here, so there is nowhere to pull from: add one with {ADD_REMOTE}")
    if name not in known:
        raise DvcError(f"no DVC remote named {name!r} (known: {', '.join(known) or 'none'}): add it with {ADD_REMOTE}")
    url = known[name]
    if not _SCHEME.match(url):
        path = Path(url)
        if not path.is_dir():
            raise DvcError(f"DVC remote {name!r} is the directory {path}, which does not exist: mount or restore it, "
                           f"or point the remote at the directory `dvc push` wrote to with "
                           f"`dvc remote modify {name} url DIR`")
    return name, url


def pull(targets: list[str], remote: str | None = None) -> str:
    """``dvc pull -r REMOTE TARGETS`` after :func:`check_remote`: the pipeline's outputs fetched from
    the remote instead of built. Returns dvc's output; raises :class:`DvcError` when the pull fails."""
    name, url = check_remote(remote)
    proc = _dvc("pull", "-r", name, *targets)
    if proc.returncode != 0:
        raise DvcError(f"`dvc pull` from remote {name!r} ({url}) failed:\n{proc.stderr.strip()}\n"
                       f"The remote lacks files that this commit's dvc.lock names: run `dvc push -r {name}` where the "
                       "pipeline ran, or `dvc repro` to build them here")
    return proc.stdout
