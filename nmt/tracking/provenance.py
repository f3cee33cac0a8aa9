"""Where a result came from: the code, the data and the machine, as tags and digests.

A training run is tagged with the git commit (and whether the tree was dirty), the device, the
library versions and the DVC experiment it ran under, and records a digest of its input data, so
a number in the store can be traced back to what produced it. ``nmt.results`` reuses
:func:`cpu_model` for the machine of a recipe run. Nothing here talks to MLflow: these are plain
facts gathered from git, ``/proc`` and the environment, which the run then logs.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def git_tags(root: Path) -> dict[str, str]:
    """Commit and dirtiness of the repository at ``root`` (empty outside a git work tree)."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"mlflow.source.git.commit": commit, "git.commit": commit, "git.dirty": str(bool(status)).lower()}


def directory_sha256(directory: Path) -> str:
    """One digest of every file under ``directory`` (relative names and contents, sorted walk)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def cpu_model() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: Any) -> str:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {cpu_model()} ({os.cpu_count()} cores)"


def environment_tags(device: Any) -> dict[str, str]:
    import torch

    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "python": platform.python_version(),
        "world_size": os.environ.get("WORLD_SIZE", "1"),
        # Set by `dvc exp run` for the commands of its stages; absent under plain `dvc repro`.
        "dvc.experiment": os.environ.get("DVC_EXP_NAME", ""),
        "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
        "command": " ".join([Path(sys.orig_argv[0]).name, *sys.orig_argv[1:]]),
    }
