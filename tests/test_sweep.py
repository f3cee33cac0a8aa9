"""Sweeps through DVC's experiment queue: `python -m nmt.sweep` writes the `dvc exp run --queue`
commands, `dvc queue start --jobs 2` runs them, `dvc exp show` and the MLflow store hold the results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nmt import sweep
from nmt.errors import ConfigError
from nmt.tracking import store

from .conftest import REPO, REPO_ENV, run, tiny_pipeline

POINTS = ("lr-0.001", "lr-0.005")  # neither is the baseline's train.lr (3e-3), so both train


def test_points_are_the_product_of_the_sweeps_named_after_what_varies():
    planned = sweep.points(["train.lr=1e-3,2e-3", "model.copy=true,false", "train.max_steps=300"],
                           params_path=REPO / "params.yaml")
    assert [p.name for p in planned] == ["lr-0.001_copy-True", "lr-0.001_copy-False",
                                         "lr-0.002_copy-True", "lr-0.002_copy-False"]
    assert planned[0].command() == ["dvc", "exp", "run", "--queue", "-n", "lr-0.001_copy-True",
                                    "-S", "train.lr=0.001", "-S", "model.copy=True", "-S", "train.max_steps=300"]
    ranged = sweep.points(["train.max_steps=range(10,30,10)"], "s", REPO / "params.yaml")
    assert [(p.name, p.overrides) for p in ranged] == [("s_max_steps-10", ("train.max_steps=10",)),
                                                      ("s_max_steps-20", ("train.max_steps=20",))]


def test_every_point_is_checked_before_anything_is_queued():
    with pytest.raises(ConfigError) as e:
        sweep.points(["train.lr=1e-3,abc", "train.bogus=1"], params_path=REPO / "params.yaml")
    message = str(e.value)
    assert "train.lr: expected float, got 'abc' (lr-abc)" in message
    assert "train.bogus: unknown key" in message and "(every point)" in message
    with pytest.raises(ConfigError, match="no override has more than one value"):
        sweep.points(["train.lr=1e-3"], params_path=REPO / "params.yaml")
    with pytest.raises(ConfigError, match="comma list or range"):
        sweep.points(["train.lr=interval(0,1)"], params_path=REPO / "params.yaml")


def test_a_bad_sweep_exits_2_and_queues_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nmt.sweep", "train.lr=1e-3,abc", "--queue"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "train.lr: expected float, got 'abc'" in proc.stderr
    assert "exp run" not in proc.stdout


def test_a_relative_sqlite_store_is_the_repositorys_not_a_queued_copys(tmp_path, monkeypatch):
    """`dvc queue start` runs the stages in .dvc/tmp/exps/<copy>, with DVC_ROOT naming the repository."""
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "copy"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///store/mlflow.db")
    assert store.tracking_uri() == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert store.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    for absolute in (f"sqlite:///{copy / 'x.db'}", "http://127.0.0.1:5000", "sqlite:///:memory:"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", absolute)
        assert store.tracking_uri() == absolute


@pytest.fixture(scope="module")
def sweep_repo(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny pipeline repo whose data is tokenized and committed: the queued experiments train."""
    root = tmp_path_factory.mktemp("sweep")
    params = tiny_pipeline(root, (80, 8, 8))
    params["train"].update(max_steps=10, eval_every=10, eval_examples=8)
    params["evaluate"].update(beam_size=1, n_examples=2)
    params["mlflow"]["system_metrics"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # The default store (./mlflow.db at the repository root): what a queued run must find from its copy.
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **REPO_ENV}
    (root / ".gitignore").write_text("/mlflow.db\n/mlflow.db.lock\n/mlartifacts/\n__pycache__/\n")
    run(["git", "init", "-q"], root, env)
    run(["dvc", "init", "-q"], root, env)
    run(["dvc", "repro", "tokenize"], root, env)  # what every point shares: made once, reused from the cache
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-q", "-m", "tokenized"], root, env)
    return root, env


def start_queue(root: Path, env: dict, jobs: int) -> None:
    """``dvc queue start``, its output to a file, not a pipe: its workers inherit the command's stdout,
    so a captured call would wait for the last worker to exit, not for the command."""
    log = root / "queue-start.log"
    with log.open("w") as out:
        proc = subprocess.run(["dvc", "queue", "start", "--jobs", str(jobs)], cwd=root, env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=120, check=False)
    assert proc.returncode == 0, f"dvc queue start failed:\n{log.read_text()}"


def queue_diagnostics(root: Path) -> str:
    """The workers' and the tasks' own logs (their tails): what a queue that did not finish left."""
    logs = sorted((root / ".dvc" / "tmp" / "exps").rglob("*.out"))
    return "\n".join(f"== {path.relative_to(root)}\n{path.read_text(errors='replace')[-3000:]}" for path in logs)


def wait_for_queue(root: Path, env: dict, timeout_s: float = 600) -> str:
    deadline, status = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        proc = subprocess.run(["dvc", "queue", "status"], cwd=root, env=env, capture_output=True, text=True,
                              check=False, timeout=120)
        # dvc 3.67 now and then fails to read a task's info file while a worker writes it: ask again.
        if proc.returncode == 0:
            status = proc.stdout
            if not any(state in status for state in ("Queued", "Running")):
                return status
        time.sleep(3)
    raise AssertionError(f"the queue did not finish in {timeout_s} s:\n{status}\n{queue_diagnostics(root)}")


def test_a_queued_sweep_runs_two_at_a_time_into_dvc_and_mlflow(sweep_repo):
    root, env = sweep_repo
    queued = run([sys.executable, "-m", "nmt.sweep", "train.lr=1e-3,5e-3", "--queue"], root, env)
    assert "queued 2 experiments" in queued.stdout
    start_queue(root, env, jobs=2)
    try:
        status = wait_for_queue(root, env)
    finally:  # no worker outlives the test, also when the queue hangs
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=root, env=env, capture_output=True, timeout=120,
                       check=False)
    for name in POINTS:
        assert any(name in line and "Success" in line for line in status.splitlines()), status

    shown = json.loads(run(["dvc", "exp", "show", "--json"], root, env).stdout)
    experiments = {r["name"]: r["data"] for baseline in shown for e in baseline.get("experiments") or []
                   for r in e["revs"] if r.get("name")}
    assert set(POINTS) <= set(experiments), sorted(experiments)
    for name, lr in zip(POINTS, (0.001, 0.005)):
        data = experiments[name]
        assert data["params"]["params.yaml"]["data"]["train"]["lr"] == lr
        evaluation = data["metrics"]["metrics/eval.json"]["data"]
        assert 0.0 <= evaluation["exact_match"] <= 100.0 and "bleu" in evaluation
        assert "best_dev_bleu" in data["metrics"]["metrics/train.json"]["data"]

    # Logged into the repository's own store (DVC_ROOT), not the temporary copies' (deleted by now).
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    by_name = {}
    for r in runs:
        by_name.setdefault(r.info.run_name, []).append(r)
    assert sorted(by_name) == sorted(POINTS), sorted(by_name)  # one run per experiment, none other
    for name, lr in zip(POINTS, ("0.001", "0.005")):
        (r,) = by_name[name]
        assert r.info.status == "FINISHED" and r.data.tags["dvc.experiment"] == name
        assert r.data.params["train.lr"] == lr and "test_exact_match" in r.data.metrics
    assert not list((root / ".dvc" / "tmp").rglob("mlflow.db"))
