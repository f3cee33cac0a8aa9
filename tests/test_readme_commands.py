"""The README's `dvc` commands work as written, in a fresh shell with no virtualenv activated.

DVC runs each stage as `python3 -m pipeline.<stage>`, and `python3` is then whatever comes first on
PATH: here a bare interpreter without the project's dependencies, as on a machine where only
`make install` was run. `pipeline/__init__.py` must hand the stage to the repository's `.venv`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

COMMAND = ".venv/bin/dvc repro -f -s download"


def readme_commands() -> list[str]:
    """Every line of the README's bash blocks, comments stripped."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    return [line.split("  #")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """A python3 with nothing installed: what a fresh shell finds on PATH before activating anything."""
    home = tmp_path_factory.mktemp("bare")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home / "venv")], check=True)
    (home / "path").mkdir()
    (home / "path" / "python3").symlink_to(home / "venv" / "bin" / "python3")
    return home / "path"


def fresh_shell_env(env: dict, bare_path: Path) -> dict:
    venv_bin = str(Path(sys.executable).parent)
    path = [str(bare_path)] + [p for p in os.environ["PATH"].split(os.pathsep) if p and p != venv_bin]
    clean = {k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**clean, "PATH": os.pathsep.join(path)}


def test_a_readme_dvc_command_runs_as_written_without_the_venv_activated(pipeline_repo, bare_python):
    assert COMMAND in readme_commands()
    root, env = pipeline_repo
    if not (root / ".venv").exists():
        (root / ".venv").symlink_to(Path(sys.prefix))  # what `make install` leaves in a clone
    stats = root / "data/raw/stats.json"
    before = stats.stat().st_mtime_ns
    proc = subprocess.run(shlex.split(COMMAND), cwd=root, env=fresh_shell_env(env, bare_python),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Running stage 'download'" in proc.stdout
    assert stats.stat().st_mtime_ns > before and json.loads(stats.read_text())["source"] == "jsonl"


def test_without_a_venv_a_stage_says_what_to_run(tmp_path, bare_python):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "__init__.py").write_bytes((REPO / "pipeline" / "__init__.py").read_bytes())
    (tmp_path / "pipeline" / "download.py").write_text("raise SystemExit('the stage body must not run')\n")
    proc = subprocess.run([str(bare_python / "python3"), "-m", "pipeline.download"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "cannot import torch" in proc.stderr and "make install" in proc.stderr
