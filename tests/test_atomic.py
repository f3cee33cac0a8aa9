"""Every file is whole or absent: kills while writing, a full disk, a read-only directory."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import synthetic_pairs, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
SIZE = 4 * 2**20  # big enough that a kill often lands inside a write

WRITER = f"""
import sys
from nmt.io import atomic_write_bytes
target, i = sys.argv[1], 0
while True:
    atomic_write_bytes(target, (b"A" if i % 2 else b"B") * {SIZE})
    i += 1
    print(i, flush=True)
"""


def test_a_file_killed_while_being_written_is_the_old_whole_file_or_the_new_one(tmp_path):
    target = tmp_path / "out.bin"
    whole = {b"A" * SIZE, b"B" * SIZE}
    rng = random.Random(0)
    kills_mid_run = 0
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=ROOT, stdout=subprocess.PIPE)
        proc.stdout.readline()  # one whole write done: from here the target always exists
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills_mid_run += proc.returncode == -signal.SIGKILL
        assert target.read_bytes() in whole
    assert kills_mid_run == 12


# --------------------------------------------------------------------------- a full or read-only disk
@pytest.fixture
def small_fs(tmp_path):
    """A 64 KiB tmpfs at tmp_path/small (root with CAP_SYS_ADMIN, as in CI; skipped where mount is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def evaluate_into(tiny_export: Path, data: Path, output: Path) -> subprocess.CompletedProcess:
    nmt = Path(sys.executable).parent / "nmt"
    return subprocess.run([str(nmt), "evaluate", "--model", str(tiny_export), "--data", str(data), "--output",
                           str(output), "--max-len", "8"], capture_output=True, text=True, timeout=120)


def test_a_full_disk_is_a_message_naming_the_file_and_the_old_file_survives(tmp_path, small_fs, tiny_export):
    old = small_fs / "pred.jsonl"
    old.write_text('{"old": true}\n')
    (small_fs / "filler").write_bytes(b"x" * 40_000)  # most of the 64 KiB gone
    rows = [{**p, "nl": p["nl"] + " " + "padding " * 100} for p in synthetic_pairs(60, seed=3)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)  # ~60 KiB of predictions (the input is echoed)
    proc = evaluate_into(tiny_export, data, old)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(old) in proc.stderr and "disk is full" in proc.stderr
    assert old.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler", "pred.jsonl"]  # no temporary left behind


def test_a_read_only_directory_is_a_message_naming_the_file(tmp_path, small_fs, tiny_export):
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    data = write_jsonl(tmp_path / "data.jsonl", synthetic_pairs(3, seed=3))
    out = small_fs / "pred.jsonl"
    proc = evaluate_into(tiny_export, data, out)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(small_fs) in proc.stderr and "read-only" in proc.stderr
    assert not out.exists()


def test_a_stage_on_a_full_disk_fails_cleanly(pipeline_repo, tmp_path, small_fs):
    """The download stage writing data/raw onto a full disk: exit 1, the path, nothing half-written."""
    root, env = pipeline_repo
    work = tmp_path / "work"
    for name in ("nmt", "pipeline", "inputs"):
        shutil.copytree(root / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "params.yaml", work)
    (work / "data").mkdir()
    (work / "data/raw").symlink_to(small_fs)
    (small_fs / "filler").write_bytes(b"x" * 50_000)
    proc = subprocess.run([sys.executable, "-m", "pipeline.download"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "disk is full" in proc.stderr and "data/raw/" in proc.stderr
    assert not (small_fs / "stats.json").exists()  # written last: the splits are not declared complete
    for split in small_fs.glob("*.jsonl"):
        json.loads(split.read_text().splitlines()[-1])  # any split that is there is whole
    assert not list(small_fs.glob(".*.tmp"))
