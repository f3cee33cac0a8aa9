"""The CI quality gate: test exact match and BLEU may not fall beyond the tolerance; nothing else counts."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from nmt.quality_gate import score_drops, stale_files


def diff(**changes):
    return {"metrics/eval.json": {k: {"old": o, "new": n} for k, (o, n) in changes.items()}}


def test_a_small_drop_or_any_rise_passes():
    problems, checked = score_drops(diff(exact_match=(50.0, 49.2), bleu=(60.0, 63.0)), 1.0)
    assert problems == [] and len(checked) == 2


def test_a_drop_beyond_the_tolerance_fails_naming_the_metric():
    problems, _ = score_drops(diff(exact_match=(50.0, 48.9), bleu=(60.0, 60.0)), 1.0)
    assert len(problems) == 1 and "exact_match fell from 50.00 to 48.90" in problems[0]


def test_settings_timings_and_other_scores_are_not_compared():
    moved = diff(exact_match=(50.0, 50.0), bleu=(60.0, 60.0), chrf=(70.0, 10.0), beam_size=(4, 10))
    moved["metrics/train.json"] = {"train_seconds": {"old": 100, "new": 900}}
    problems, checked = score_drops(moved, 1.0)
    assert problems == [] and len(checked) == 2


def test_a_missing_value_on_either_side_fails():
    problems, _ = score_drops(diff(exact_match=(50.0, None), bleu=(None, 60.0)), 1.0)
    assert len(problems) == 2 and "missing from the workspace" in problems[0] and "no committed value" in problems[1]


def test_files_not_rewritten_since_the_run_began_are_stale(tmp_path: Path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text("{}")
    os.utime(old, (time.time() - 60, time.time() - 60))
    new.write_text("{}")
    stale = stale_files([old, new, tmp_path / "gone.json"], since=time.time() - 30)
    assert len(stale) == 2 and "old.json" in stale[0] and "missing" in stale[1]


def git_dvc_repo_with_metrics(root: Path, evaluation: dict) -> dict:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    (root / "metrics").mkdir()
    (root / "metrics/eval.json").write_text(json.dumps(evaluation))
    (root / "metrics/train.json").write_text(json.dumps({"split": "dev", "best_dev_bleu": 30.0}))
    (root / "dvc.yaml").write_text("metrics:\n  - metrics/eval.json\n  - metrics/train.json\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "m"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return env


def check(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "nmt"), "check-metrics", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_command_passes_a_fresh_equal_run_and_fails_a_drop_or_a_run_that_did_not_happen(tmp_path: Path):
    committed = {"split": "test", "exact_match": 50.0, "bleu": 60.0, "beam_size": 4}
    env = git_dvc_repo_with_metrics(tmp_path, committed)
    started = time.time()
    assert check(tmp_path, env, "--written-after", str(started + 3600)).returncode == 1  # nothing ran since
    (tmp_path / "metrics/eval.json").write_text(json.dumps({**committed, "bleu": 59.5, "beam_size": 10}))
    (tmp_path / "metrics/train.json").write_text(json.dumps({"split": "dev", "best_dev_bleu": 10.0}))
    ok = check(tmp_path, env, "--written-after", str(started - 1))
    assert ok.returncode == 0, ok.stderr
    assert "exact_match 50.00 -> 50.00" in ok.stdout and "2 gated scores" in ok.stdout
    (tmp_path / "metrics/eval.json").write_text(json.dumps({**committed, "exact_match": 48.5}))
    dropped = check(tmp_path, env)
    assert dropped.returncode == 1 and "exact_match fell from 50.00 to 48.50" in dropped.stderr
