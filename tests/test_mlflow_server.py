"""A team's shared tracking server for real: `mlflow server` on 127.0.0.1, sqlite backend, proxied artifacts.

The train, evaluate and export stages log to it over HTTP (MLFLOW_TRACKING_URI=http://...), and
everything is read back through the server. Then the server dies in the middle of a training: with
``mlflow.required: true`` the stage stops with a message naming the server and a resume checkpoint
that reattaches to the same run once the server is back; with ``required: false`` it trains on to
the end and the next stage logs into the same run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from nmt.tracking.datasets import file_md5
from nmt.tracking.store import wait_until_answers
from tests.test_mlflow import copy_for_training, free_port

MLFLOW = Path(sys.executable).parent / "mlflow"


class TrackingServer:
    """`mlflow server` with a sqlite backend and proxied artifacts under ``root``; killed whole, restartable."""

    def __init__(self, root: Path, port: int):
        self.root, self.port, self.url = root, port, f"http://127.0.0.1:{port}"
        self.artifacts = root / "artifacts"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 240) -> None:
        cmd = [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
               "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1"]
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job workers: a test server starts in seconds
        with open(self.root / "server.log", "ab") as log:  # its own process group: uvicorn dies with it
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        if not wait_until_answers(f"{self.url}/health", self.proc, timeout_s, interval_s=0.3):
            self.kill()
            pytest.fail(f"mlflow server did not answer on {self.url}:\n{(self.root / 'server.log').read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole group at once: the server vanishes as in a crash, with no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.url, registry_uri=self.url)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    server = TrackingServer(root, free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


def stage_dir(pipeline_repo, tmp_path: Path, uri: str, **train) -> tuple[Path, dict]:
    """A fresh directory holding what the train, evaluate and export stages read; the stages log to ``uri``."""
    work, env = copy_for_training(pipeline_repo, tmp_path, **train)
    shutil.copytree(pipeline_repo[0] / "data/raw", work / "data/raw")
    return work, {**env, "MLFLOW_TRACKING_URI": uri}


def stage(name: str, work: Path, env: dict, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", f"pipeline.{name}"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{name} failed:\n{proc.stderr[-4000:]}"
    return proc


def run_id_of(work: Path) -> str:
    return json.loads((work / "models/mlflow_run.json").read_text())["run_id"]


def steps_logged(client, run_id: str, key: str = "train_loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


# --------------------------------------------------------------------------- everything over HTTP
def test_train_evaluate_export_log_everything_through_the_server(pipeline_repo, tmp_path, server):
    work, env = stage_dir(pipeline_repo, tmp_path, server.url)
    for name in ("train", "evaluate", "export"):
        stage(name, work, env)
    client = server.client()
    run = client.get_run(run_id_of(work))
    assert run.info.status == "FINISHED"
    assert run.data.params["model.d_model"] == "32" and run.data.params["data.source"] == "jsonl"
    assert steps_logged(client, run.info.run_id) == list(range(1, 41))  # every step
    assert steps_logged(client, run.info.run_id, "dev_bleu") == [20, 40]  # every eval_every=20
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics)
    evaluation = json.loads((work / "metrics/eval.json").read_text())
    assert run.data.metrics["test_bleu"] == pytest.approx(evaluation["bleu"])
    assert run.data.metrics["best_dev_bleu"] == pytest.approx(
        json.loads((work / "metrics/train.json").read_text())["best_dev_bleu"])

    # The splits as dataset inputs: names, the files' MD5 (DVC's hash) as digests, their roles as contexts.
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"jsonl-train", "jsonl-dev", "jsonl-test"}
    for split, context in (("train", "training"), ("dev", "validation"), ("test", "test")):
        found = inputs[f"jsonl-{split}"]
        assert found.dataset.digest == file_md5(work / f"data/tokenized/{split}.safetensors")
        assert {t.key: t.value for t in found.tags}["mlflow.data.context"] == context
        assert json.loads(found.dataset.source)["uri"].endswith(f"data/tokenized/{split}.safetensors")
        assert json.loads(found.dataset.profile)["num_rows"] == {"train": 120, "dev": 12, "test": 12}[split]

    # The registered version belongs to this run, and its files come back through the server.
    (version,) = client.search_model_versions("name='nmt-text2code'")
    assert version.run_id == run.info.run_id and client.get_model_version_by_alias("nmt-text2code", "champion")
    import mlflow

    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    requirements = Path(mlflow.pyfunc.get_model_dependencies("models:/nmt-text2code@champion")).read_text()
    assert "mlflow==" in requirements and "torch==" in requirements

    # Proxied artifacts: under the server's --artifacts-destination, nothing in the client's directory.
    assert client.get_experiment(run.info.experiment_id).artifact_location.startswith("mlflow-artifacts:")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"params.yaml", "train_curve.csv", "bleu.png", "best.json", "evaluation"} <= artifacts
    stored = {p.name for p in server.artifacts.rglob("*") if p.is_file()}
    assert {"params.yaml", "train_curve.csv", "bleu.png", "predictions.json", "examples.png", "MLmodel",
            "model.safetensors"} <= stored
    assert not any((work / name).exists() for name in ("mlartifacts", "mlruns", "mlflow.db"))


# --------------------------------------------------------------------------- the server dies mid-training
LONG = {"max_steps": 150, "eval_every": 50, "checkpoint_every": 20}


def train_until_first_logged_step_then_kill_server(work: Path, env: dict, server: TrackingServer
                                                   ) -> tuple[subprocess.CompletedProcess, str, int]:
    """Start the train stage; once the server holds its first train_loss, kill the server; wait for the stage."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.train"], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    client, deadline = server.client(), time.monotonic() + 240
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        if (work / "models/mlflow_run.json").exists():
            run_id = run_id_of(work)
            logged = steps_logged(client, run_id)
            if logged:
                break
        time.sleep(0.1)
    server.kill()
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), run_id, logged[-1]


def restart(server: TrackingServer) -> None:
    server.start()  # the same port, backend and artifacts: the run is there again


def test_server_lost_while_required_stops_with_a_resumable_checkpoint(pipeline_repo, tmp_path, server):
    work, env = stage_dir(pipeline_repo, tmp_path, server.url, **LONG)
    stopped, run_id, killed_after = train_until_first_logged_step_then_kill_server(work, env, server)
    assert stopped.returncode == 2, stopped.stderr[-3000:]
    assert server.url in stopped.stderr and "Traceback" not in stopped.stderr
    assert "Start the server again and rerun the same command" in stopped.stderr
    assert "mlflow.required: false" in stopped.stderr
    # Nothing half-written: the resume checkpoint loads and names the run; the run file is whole.
    state = torch.load(work / "models/resume/state.pt", map_location="cpu", weights_only=True)
    assert state["mlflow_run_id"] == run_id and killed_after <= state["progress"]["step"] < LONG["max_steps"]
    assert run_id_of(work) == run_id
    assert not (work / "metrics/train.json").exists()  # the stage did not finish: no outputs claim it did

    restart(server)
    again = stage("train", work, env)
    assert f"resuming from step {state['progress']['step']}" in again.stderr
    assert run_id_of(work) == run_id  # reattached to the same run
    assert json.loads((work / "models/train_run.json").read_text())["mlflow_run_id"] == run_id
    client = server.client()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "best_dev_bleu" in run.data.metrics
    logged = steps_logged(client, run_id)
    assert logged[0] == 1 and logged[-1] == LONG["max_steps"]  # the later steps went to the same run
    assert set(range(state["progress"]["step"] + 1, LONG["max_steps"] + 1)) <= set(logged)
    assert steps_logged(client, run_id, "dev_bleu") == [50, 100, 150]
    assert not (work / "models/resume").exists()


def test_server_lost_while_not_required_warns_and_trains_to_the_end(pipeline_repo, tmp_path, server):
    work, env = stage_dir(pipeline_repo, tmp_path, server.url, **LONG)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["mlflow"]["required"] = False
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    finished, run_id, killed_after = train_until_first_logged_step_then_kill_server(work, env, server)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "warning:" in finished.stderr and server.url in finished.stderr and "Traceback" not in finished.stderr
    facts = json.loads((work / "models/train_run.json").read_text())
    assert facts["steps"] == LONG["max_steps"] and facts["mlflow_run_id"] == run_id
    curve = (work / "metrics/train_curve.csv").read_text().splitlines()
    assert len(curve) == 1 + 3  # header + evaluations at 50, 100, 150: the outputs are whole
    assert json.loads((work / "metrics/train.json").read_text())["best_dev_bleu"] >= 0
    assert not (work / "models/resume").exists()  # finished

    restart(server)
    stage("evaluate", work, env)  # the next stage reopens the same run once the server is back
    client = server.client()
    run = client.get_run(run_id)
    assert run.data.metrics["test_bleu"] == pytest.approx(json.loads((work / "metrics/eval.json").read_text())["bleu"])
    assert run.info.status == "FINISHED"
    assert max(steps_logged(client, run_id)) < LONG["max_steps"]  # the kill did land before the end


RETURNS = {"max_steps": 1000, "eval_every": 250, "checkpoint_every": 2000}  # ~10 s: reconnect_s is 1


def test_server_back_while_not_required_gets_the_rest_of_the_run(pipeline_repo, tmp_path, server):
    """required: false, reconnect_s 1: the server dies after the first logged step and comes back
    while the stage trains on (held with SIGSTOP while the server starts, so a fast machine cannot
    finish first); the later steps and the run's end go to the same run."""
    work, env = stage_dir(pipeline_repo, tmp_path, server.url, **RETURNS)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["mlflow"].update(required=False, reconnect_s=1.0)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stderr = tmp_path / "train.stderr"
    with open(stderr, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.train"], cwd=work, env=env,
                                stdout=subprocess.DEVNULL, stderr=err, text=True)
        client, deadline = server.client(), time.monotonic() + 240
        while not ((work / "models/mlflow_run.json").exists() and steps_logged(client, run_id_of(work))):
            assert proc.poll() is None and time.monotonic() < deadline, stderr.read_text()[-3000:]
            time.sleep(0.1)
        run_id = run_id_of(work)
        server.kill()
        while "stopped answering" not in stderr.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, stderr.read_text()[-3000:]
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGSTOP)  # the stage waits while the server starts (seconds; it trains faster)
        try:
            restart(server)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(timeout=300) == 0, stderr.read_text()[-3000:]
    text = stderr.read_text()
    assert "reconnect_s" in text and f"{server.url} answers again" in text and "Traceback" not in text
    run = server.client().get_run(run_id)
    assert run.info.status == "FINISHED" and "best_dev_bleu" in run.data.metrics  # logged at the end, after the return
    logged = steps_logged(server.client(), run_id)
    assert logged[-1] == RETURNS["max_steps"]  # the steps after the return went to the same run
    assert len(logged) < RETURNS["max_steps"]  # and those while it was away are missing, not invented
    assert json.loads((work / "models/train_run.json").read_text())["mlflow_run_id"] == run_id
