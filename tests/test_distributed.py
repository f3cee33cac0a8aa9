"""torchrun + DDP on CPU (gloo): two processes train what one process accumulating two batches
trains, and a dead rank ends the whole job instead of hanging it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from safetensors.torch import load_file

from nmt.results import read_curve
from tests.test_mlflow import copy_for_training

TORCHRUN = str(Path(sys.executable).parent / "torchrun")
# Dropout off: each rank draws its own masks, one process draws them in another order.
EQUIVALENT = {"max_steps": 12, "eval_every": 6, "checkpoint_every": 1000, "warmup_steps": 2}


def without_dropout(work: Path) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["model"]["dropout"] = 0.0
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def curve(work: Path) -> list[dict[str, float]]:
    return read_curve(work / "metrics/train_curve.csv")  # empty cells (a column for Python code only) left out


def test_two_processes_train_what_one_process_accumulating_two_batches_trains(pipeline_repo, tmp_path):
    one, env = copy_for_training(pipeline_repo, tmp_path / "one", accumulate=2, **EQUIVALENT)
    two, env2 = copy_for_training(pipeline_repo, tmp_path / "two", accumulate=1, **EQUIVALENT)
    for work in (one, two):
        without_dropout(work)
    single = subprocess.run([sys.executable, "-m", "pipeline.train"], cwd=one, env=env, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "pipeline.train"], cwd=two,
                         env=env2, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr

    a, b = load_file(one / "models/best.safetensors"), load_file(two / "models/best.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-4, f"weights differ by up to {worst:.2e} after 12 steps"
    for r1, r2 in zip(curve(one), curve(two), strict=True):
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], rel=1e-4)
        assert r1["dev_bleu"] == pytest.approx(r2["dev_bleu"], abs=1e-6)  # greedy dev decode, split and gathered
    metrics = yaml.safe_load((two / "models/train_run.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 12


def test_a_killed_rank_ends_the_whole_job(pipeline_repo, tmp_path):
    work, env = copy_for_training(pipeline_repo, tmp_path, max_steps=100_000, eval_every=100_000,
                                  dist_timeout_s=20.0)
    proc = subprocess.Popen([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "pipeline.train"], cwd=work,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (work / "models/mlflow_run.json").exists():  # rank 0 writes it as training starts
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    time.sleep(1.0)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "pipeline.train" in " ".join(p.cmdline())]
    rank1 = [p for p in workers if p.environ().get("RANK") == "1"]
    assert len(rank1) == 1, [p.cmdline() for p in workers]
    rank1[0].send_signal(signal.SIGKILL)
    start = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert time.monotonic() - start < 60, "the surviving rank hung"
    assert "rank" in err.lower() and ("SIGKILL" in err or "Signal 9" in err), err[-2000:]
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in workers)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_picks_the_gpu(pipeline_repo, tmp_path):
    work, env = copy_for_training(pipeline_repo, tmp_path, max_steps=4, eval_every=4, device="cuda")
    proc = subprocess.run([sys.executable, "-m", "pipeline.train"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_a_run_killed_on_two_processes_resumes_on_one(pipeline_repo, tmp_path):
    work, env = copy_for_training(pipeline_repo, tmp_path, max_steps=300, eval_every=10, checkpoint_every=10)
    proc = subprocess.Popen([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "pipeline.train"], cwd=work,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (work / "models/resume/state.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    # torchrun and both ranks at once, as a lost machine would (the ranks run in their own sessions)
    for p in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
        p.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (work / "metrics/train.json").exists(), "the run finished before the kill: nothing was tested"
    again = subprocess.run([sys.executable, "-m", "pipeline.train"], cwd=work, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "written by 2 process(es), now 1" in again.stderr
    assert yaml.safe_load((work / "models/train_run.json").read_text())["steps"] == 300
