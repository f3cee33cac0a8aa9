"""Promises of a long training: kill -9 resumes to the same weights, signals save a checkpoint,
incompatible or untrusted checkpoints are refused, NaN steps are skipped, writes are atomic,
and a full or read-only disk gives a message naming the path."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import run
from tests.test_mlflow import copy_for_training, run_statuses

LONG = {"max_steps": 90, "eval_every": 30, "checkpoint_every": 10}


def train_cmd(work: Path, env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.train"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300, **kwargs)


def state_file(work: Path) -> Path:
    return work / "models/resume/state.pt"


def start_and_kill(work: Path, env: dict, sig: int, after_checkpoint_s: float,
                   ready: str = "models/resume/state.pt") -> tuple[subprocess.Popen, str]:
    """Start the train stage, wait for ``ready`` (its first resume checkpoint) and a little more,
    send ``sig``; return the process and its stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.train"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (work / ready).exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(after_checkpoint_s)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc, err


def set_train_params(work: Path, **train) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"].update(train)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def uninterrupted(pipeline_repo, tmp_path_factory) -> Path:
    work, env = copy_for_training(pipeline_repo, tmp_path_factory.mktemp("straight"), **LONG)
    proc = train_cmd(work, env)
    assert proc.returncode == 0, proc.stderr
    assert not state_file(work).exists()  # removed once training ends
    return work


def test_kill_9_then_the_same_command_resumes_to_bit_identical_weights(pipeline_repo, tmp_path, uninterrupted):
    # A kill at a random moment after the first checkpoint. The tiny model can finish its 90 steps
    # within the delay on a fast machine; that attempt tests nothing, so a fresh copy is killed
    # sooner. Only a kill that lands before the end counts.
    for attempt, delay in enumerate([random.uniform(0.0, 1.0), random.uniform(0.0, 0.1), 0.0]):
        work, env = copy_for_training(pipeline_repo, tmp_path / f"attempt{attempt}", **LONG)
        proc, err = start_and_kill(work, env, signal.SIGKILL, after_checkpoint_s=delay)
        if (work / "metrics/train.json").exists():  # it ended (exit 0) or was killed only after writing its metrics
            continue
        assert proc.returncode == -signal.SIGKILL, err
        break
    else:
        pytest.fail("every run finished before the kill: nothing was tested")

    again = train_cmd(work, env)
    assert again.returncode == 0, again.stderr
    assert "resuming from step" in again.stderr
    for name in ("models/best.safetensors", "models/best.json", "metrics/train_curve.csv"):
        assert (work / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    assert not state_file(work).exists()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_writes_a_checkpoint_marks_the_run_killed_and_resumes(pipeline_repo, tmp_path, uninterrupted,
                                                                         sig, code):
    """Also the MLflow promise: an interrupted training never leaves its run RUNNING."""
    work, env = copy_for_training(pipeline_repo, tmp_path, **{**LONG, "checkpoint_every": 1000})
    proc, err = start_and_kill(work, env, sig, 0.5, ready="models/mlflow_run.json")  # written as training starts
    assert proc.returncode == code, err
    assert state_file(work).exists(), "no checkpoint written on the signal (checkpoint_every is 1000)"
    assert run_statuses(work) == ["KILLED"]

    again = train_cmd(work, env)
    assert again.returncode == 0 and "resuming from step" in again.stderr, again.stderr
    assert run_statuses(work) == ["FINISHED"]  # the same run, reopened and finished
    assert (work / "models/best.safetensors").read_bytes() == (uninterrupted / "models/best.safetensors").read_bytes()


def test_changed_params_refuse_to_resume_and_resume_false_starts_over(pipeline_repo, tmp_path):
    work, env = copy_for_training(pipeline_repo, tmp_path, **LONG)
    start_and_kill(work, env, signal.SIGKILL, after_checkpoint_s=0.0)
    assert state_file(work).exists()

    set_train_params(work, lr=0.002)
    refused = train_cmd(work, env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "train.lr: 0.003 -> 0.002" in refused.stderr and "train.resume: false" in refused.stderr
    assert state_file(work).exists()  # refused, not deleted

    set_train_params(work, max_steps=100)  # a longer run of the same training may resume...
    set_train_params(work, lr=0.003)
    assert "resuming from step" in train_cmd(work, env).stderr

    start_and_kill(work, env, signal.SIGKILL, after_checkpoint_s=0.0)
    set_train_params(work, lr=0.002, resume=False)  # ...and resume: false starts over whatever is there
    over = train_cmd(work, env)
    assert over.returncode == 0, over.stderr
    assert "starting over" in over.stderr and "resuming" not in over.stderr


def test_dvc_repro_after_a_kill_resumes_rather_than_restarts(pipeline_repo, tmp_path):
    root, env = pipeline_repo
    repo = tmp_path / "repo"
    shutil.copytree(root, repo, symlinks=True, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    set_train_params(repo, **LONG)
    proc = subprocess.Popen(["dvc", "repro", "train"], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not state_file(repo).exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and its stage command, as a power cut would
    proc.communicate(timeout=60)
    (repo / ".dvc/tmp/rwlock").unlink(missing_ok=True)  # a killed dvc leaves its lock files behind
    shutil.rmtree(repo / ".dvc/tmp/lock", ignore_errors=True)
    (repo / ".dvc/tmp/lock").unlink(missing_ok=True)

    again = run(["dvc", "repro", "train"], repo, env)
    assert "resuming from step" in again.stdout + again.stderr
    assert (repo / "models/best.safetensors").exists() and not state_file(repo).exists()


# --------------------------------------------------------------------------- untrusted checkpoints
class Exploit:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_that_would_run_code_is_refused_and_never_runs(pipeline_repo, tmp_path):
    work, env = copy_for_training(pipeline_repo, tmp_path)
    marker = tmp_path / "pwned"
    state_file(work).parent.mkdir(parents=True)
    with open(state_file(work), "wb") as f:
        torch.save({"format": "nmt-resume", "payload": Exploit(marker)}, f)
    proc = train_cmd(work, env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "models/resume/state.pt: refused" in proc.stderr and "could run code" in proc.stderr
    assert "io.open" in proc.stderr  # names what it would have called
    assert not marker.exists()


def test_the_exploit_is_real(tmp_path):
    """Loaded the unsafe way, the same file does run its code: the test above guards something."""
    marker = tmp_path / "pwned"
    path = tmp_path / "state.pt"
    torch.save({"payload": Exploit(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_truncated_resume_checkpoint_is_a_clear_error(pipeline_repo, tmp_path):
    work, env = copy_for_training(pipeline_repo, tmp_path, **LONG)
    start_and_kill(work, env, signal.SIGKILL, after_checkpoint_s=0.0)
    data = state_file(work).read_bytes()
    state_file(work).write_bytes(data[: len(data) // 2])
    proc = train_cmd(work, env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not a readable resume checkpoint" in proc.stderr and "train.resume: false" in proc.stderr


# --------------------------------------------------------------------------- numerical faults
def test_nan_steps_are_skipped_and_counted(pipeline_repo, tmp_path, monkeypatch):
    from nmt.params import load_params
    from nmt.stages import train as train_module
    from nmt.training import step as step_module

    work, env = copy_for_training(pipeline_repo, tmp_path, eval_every=10, max_steps=30)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    calls = {"n": 0}
    real = step_module.batch_loss

    def sometimes_nan(model, batch, smoothing):
        calls["n"] += 1
        loss = real(model, batch, smoothing)
        return loss * float("nan") if calls["n"] in (12, 13, 14) else loss

    monkeypatch.setattr(step_module, "batch_loss", sometimes_nan)
    summary = train_module.train(load_params(work / "params.yaml"))
    assert summary["skipped_steps"] == 3 and summary["steps"] == 30
    assert all(torch.isfinite(t).all() for t in load_file(work / "models/best.safetensors").values())


def test_too_many_nan_steps_in_a_row_stop_with_a_message(pipeline_repo, tmp_path):
    work, env = copy_for_training(pipeline_repo, tmp_path, eval_every=10, max_steps=40, max_bad_steps=3,
                                  lr=1e30, warmup_steps=0, clip_norm=0.0)  # overflows to inf/NaN at once
    proc = train_cmd(work, env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "3 consecutive steps with a NaN/inf loss" in proc.stderr and "train.lr" in proc.stderr
