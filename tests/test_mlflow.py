"""MLflow for real: the pipeline's run in a real sqlite store, the registry, a real model server.

Uses the session's DVC pipeline repo (tests/conftest.py: `dvc repro` on tiny params, with
MLFLOW_TRACKING_URI pointing at the repo's own mlflow.db).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nmt.config import MlflowConfig
from nmt.errors import NmtError
from nmt.tracking.run import Run
from nmt.tracking.store import TrackingError, check_reachable, wait_until_answers


def mlflow_client(root: Path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{root / 'mlflow.db'}")
    return mlflow.MlflowClient()


def training_run(root: Path, client):
    run_id = json.loads((root / "models/mlflow_run.json").read_text())["run_id"]
    return client.get_run(run_id)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- one run, the whole story
def test_one_run_holds_params_tags_curves_system_metrics_evaluation_and_artifacts(pipeline_repo, monkeypatch):
    root, _ = pipeline_repo
    client = mlflow_client(root, monkeypatch)
    run = training_run(root, client)
    assert run.info.status == "FINISHED"
    assert json.loads((root / "models/train_run.json").read_text())["mlflow_run_id"] == run.info.run_id

    params = run.data.params
    assert params["model.d_model"] == "32" and params["train.lr"] == "0.003" and params["data.source"] == "jsonl"
    tags = run.data.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    assert tags["git.commit"] == head and tags["git.dirty"] in ("true", "false")
    assert tags["data.source"] == "jsonl" and len(tags["data.sha256"]) == 64
    assert tags["device"].startswith("cpu") and tags["torch"] and tags["world_size"] == "1"
    assert "pipeline.train" in tags["command"]

    curves = {key: client.get_metric_history(run.info.run_id, key) for key in ("train_loss", "lr", "grad_norm",
                                                                             "tok_s", "dev_bleu", "dev_exact_match")}
    assert len(curves["train_loss"]) == 40 and len(curves["dev_bleu"]) == 2  # every step; every eval_every=20
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics)
    assert any(k.startswith("system/system_memory_usage") for k in run.data.metrics)
    # the evaluate stage logged into the same run
    evaluation = json.loads((root / "metrics/eval.json").read_text())
    assert run.data.metrics["test_bleu"] == pytest.approx(evaluation["bleu"])
    assert run.data.metrics["test_baseline_exact_match"] == pytest.approx(evaluation["baseline_exact_match"])

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"params.yaml", "dvc.lock", "train_curve.csv", "bleu.png", "evaluation"} <= artifacts
    evaluation_files = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/predictions.json", "evaluation/examples.md", "evaluation/examples.png"} <= evaluation_files
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "evaluation/predictions.json")).read_text())
    assert table["columns"] == ["nl", "reference", "prediction", "baseline"] and len(table["data"]) == 12


def test_the_run_has_its_train_selection_and_test_splits_as_dataset_inputs(pipeline_repo, monkeypatch):
    from nmt.tracking.datasets import file_md5

    root, _ = pipeline_repo
    run = training_run(root, mlflow_client(root, monkeypatch))
    found = {d.dataset.name: (d.dataset, {t.key: t.value for t in d.tags}) for d in run.inputs.dataset_inputs}
    assert set(found) == {"jsonl-train", "jsonl-dev", "jsonl-test"}  # <data.source>-<split>: the Dataset column
    for split, context, pairs in (("train", "training", 120), ("dev", "validation", 12), ("test", "test", 12)):
        dataset, tags = found[f"jsonl-{split}"]
        path = root / "data/tokenized" / f"{split}.safetensors"
        assert dataset.digest == file_md5(path)  # the bytes it was trained on; DVC's own hash of the file
        assert tags["mlflow.data.context"] == context and tags["path"] == f"data/tokenized/{split}.safetensors"
        assert json.loads(dataset.source)["uri"] == str(path.resolve())
        assert json.loads(dataset.profile)["num_rows"] == pairs
        assert {c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]} == {"source_tokens", "target_tokens"}


def test_the_split_datasets_log_without_mlflows_integer_column_hint(pipeline_repo):
    """Token counts are integers that are never missing: MLflow's hint about integer columns (raised
    when a dataset's schema is inferred, lazily, as it is logged) does not reach the training log."""
    import warnings

    from nmt.tracking.datasets import split_inputs

    root, _ = pipeline_repo
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inputs = split_inputs(root / "data/tokenized", "jsonl")
        for dataset, _, _ in inputs:
            dataset.to_dict()  # what mlflow.log_inputs serialises
    assert len(inputs) == 3
    assert not [w for w in caught if "integer column" in str(w.message)]


def test_experiment_opens_as_model_training_with_a_runs_view(pipeline_repo, monkeypatch):
    root, _ = pipeline_repo
    client = mlflow_client(root, monkeypatch)
    experiment = client.get_experiment_by_name("nmt")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(experiment.tags["mlflow.sharedViewState.nmt-runs"])
    assert "metrics.`test_bleu`" in view["selectedColumns"] and "params.`model.d_model`" in view["selectedColumns"]


# --------------------------------------------------------------------------- registry
def test_export_registers_a_pyfunc_version_that_is_champion(pipeline_repo, monkeypatch):
    root, _ = pipeline_repo
    client = mlflow_client(root, monkeypatch)
    champion = client.get_model_version_by_alias("nmt-text2code", "champion")
    # Other tests may have registered more versions since: the champion is the one with the best
    # selection-split BLEU, and its tags are its own run's scores.
    versions = client.search_model_versions("name='nmt-text2code'")
    assert float(champion.tags["select_bleu"]) == max(float(v.tags["select_bleu"]) for v in versions)
    metrics = client.get_run(champion.run_id).data.metrics
    assert float(champion.tags["test_bleu"]) == pytest.approx(metrics["test_bleu"], abs=1e-4)
    assert float(champion.tags["select_bleu"]) == pytest.approx(metrics["best_dev_bleu"], abs=1e-4)
    if len(versions) == 1:  # the pipeline's first run: the files on disk are its own
        evaluation = json.loads((root / "metrics/eval.json").read_text())
        assert champion.run_id == training_run(root, client).info.run_id
        assert float(champion.tags["test_bleu"]) == pytest.approx(evaluation["bleu"], abs=1e-4)
    import mlflow
    import torch

    requirements = Path(mlflow.pyfunc.get_model_dependencies("models:/nmt-text2code@champion")).read_text()
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements.replace("+cpu", "")
    assert "tiktoken==" in requirements and "mlflow==" in requirements


def test_champion_moves_only_to_a_better_selection_bleu_whatever_the_test_bleu(pipeline_repo, monkeypatch, tmp_path):
    import mlflow

    from nmt.tracking.registry import log_and_register_model, serving_config

    root, _ = pipeline_repo
    mlflow_client(root, monkeypatch)
    name = "nmt-champion-test"  # its own registered model: the pipeline's champion stays as it is
    decode = {"beam_size": 1, "max_len_b": 8, "length_penalty": 0.6}
    results = []
    mlflow.set_experiment("champion-test")
    # (selection BLEU, test BLEU): the second has the best test score, and must not win on it.
    for select_bleu, test_bleu in ((10.0, 10.0), (5.0, 50.0), (12.0, 1.0)):
        with mlflow.start_run():
            results.append(log_and_register_model(root / "models/export", name, select_bleu, test_bleu, decode,
                                                  serving_config(1, 0.0)))
    assert [r["promoted"] for r in results] == [True, False, True]
    assert results[1]["champion_version"] == results[0]["version"]
    assert str(mlflow.MlflowClient().get_model_version_by_alias(name, "champion").version) == results[2]["version"]


# --------------------------------------------------------------------------- serving
@pytest.fixture(scope="module")
def model_server(pipeline_repo):
    """`mlflow models serve` of the champion, on a free loopback port, stopped afterwards."""
    root, env = pipeline_repo
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", "models:/nmt-text2code@champion",
           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until_answers(f"{url}/ping", proc, timeout_s=120):
            out = proc.stdout.read().decode() if proc.poll() is not None else "(still running)"
            pytest.fail(f"model server did not come up on {url}:\n{out}")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def post(url: str, body: str) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/invocations", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_served_champion_translates(model_server, pipeline_repo):
    from nmt.decoding.translator import Translator

    status, answer = post(model_server, json.dumps({"inputs": [{"nl": "print x"}, {"nl": "return the sum of x and y"}]}))
    assert status == 200
    assert len(answer["predictions"]) == 2 and all(isinstance(p, str) for p in answer["predictions"])
    # the same as the exported model decoding with the evaluate stage's settings (the params defaults)
    root, _ = pipeline_repo
    local = Translator.from_pretrained(root / "models/export", device="cpu").translate(
        ["print x", "return the sum of x and y"], beam_size=4, max_len_b=16)
    assert answer["predictions"] == [t.text for t in local]
    status, answer = post(model_server, json.dumps({"inputs": [{"nl": "print x"}], "params": {"beam_size": 1}}))
    assert status == 200 and len(answer["predictions"]) == 1


def test_served_champion_decodes_concurrent_requests_together_and_answers_each_its_own(
        model_server, pipeline_repo, monkeypatch):
    import mlflow

    from nmt.data.pairs import read_jsonl
    from nmt.decoding.translator import Translator

    root, _ = pipeline_repo
    mlflow_client(root, monkeypatch)
    # the registered model records how many concurrent descriptions one decode may take (params.yaml's default)
    assert mlflow.pyfunc.load_model("models:/nmt-text2code@champion").model_config == {"max_batch": 32, "max_wait_ms": 10.0}
    texts = [r["nl"] for r in read_jsonl(root / "data/raw/test.jsonl")][:12]
    start = threading.Barrier(len(texts))

    def ask(text: str) -> tuple[int, dict]:
        start.wait()  # all at once, so they queue behind each other's decode
        return post(model_server, json.dumps({"inputs": [{"nl": text}]}))

    with ThreadPoolExecutor(len(texts)) as pool:
        answers = list(pool.map(ask, texts))
    local = Translator.from_pretrained(root / "models/export", device="cpu")
    alone = [local.translate([text], beam_size=4, max_len_b=16)[0].text for text in texts]
    assert [status for status, _ in answers] == [200] * len(texts)
    assert [answer["predictions"] for _, answer in answers] == [[a] for a in alone]


@pytest.mark.parametrize("body, names", [
    ('{"inputs": [{"text": "print x"}]}', "nl"),                                # wrong column
    ('{"inputs": []}', "no descriptions"),                                     # empty list
    ('{"inputs": [{"nl": 5}]}', "valid string"),                               # not a string
    ('{"inputs": [{"nl": null}]}', "valid string"),
    ('{"inputs": [{"nl": "x"}], "params": {"beam_size": 0}}', "beam_size"),    # out of range
    ('{"inputs": [{"nl": "x"}], "params": {"beam_size": "four"}}', "beam_size"),
    ('{"inputs": [{"nl": "x"}], "params": {"rerank": "bogus"}}', "rerank"),
    ('{"dataframe_records": [{"nl": "x"}]}', "inputs"),                       # not the documented form
    ("not json", "JSON"),
])
def test_served_champion_refuses_bad_requests_with_a_clear_400(model_server, body, names):
    status, answer = post(model_server, body)
    assert status == 400
    assert answer["error_code"] in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")
    assert names in answer["message"]


# --------------------------------------------------------------------------- faults
def dead_uri() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there once the probe socket is closed


def test_waiting_for_a_server_ends_when_it_answers_dies_or_times_out():
    import http.server

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        try:
            assert wait_until_answers(f"{url}/health", alive, timeout_s=10)
            start = time.monotonic()  # an error status is not up: waits the whole timeout
            assert not wait_until_answers(f"{url}/ping", alive, timeout_s=0.5, interval_s=0.1)
            assert 0.5 <= time.monotonic() - start < 5
        finally:
            httpd.shutdown()
            alive.kill()
            alive.wait()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    start = time.monotonic()  # the server exited: no need to wait out the timeout
    assert not wait_until_answers(dead_uri() + "/health", dead, timeout_s=60)
    assert time.monotonic() - start < 10


def test_unreachable_store_fails_fast_naming_the_uri(monkeypatch, tmp_path):
    uri = dead_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.monotonic()
    with pytest.raises(TrackingError, match=uri.replace(".", r"\.")) as e:
        Run.start(MlflowConfig(), root=tmp_path)
    assert time.monotonic() - start < 10
    assert "mlflow.required: false" in str(e.value) and isinstance(e.value, NmtError)


def test_unreachable_store_only_warns_when_not_required(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead_uri())
    run = Run.start(MlflowConfig(required=False), root=tmp_path)
    assert not run.enabled
    assert "training without tracking" in capsys.readouterr().err
    run.log_metrics({"x": 1.0})  # a no-op, not an error
    run.end()


def test_reachable_check_accepts_a_live_http_server(tmp_path):
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_reachable(f"http://127.0.0.1:{server.server_address[1]}")  # answers 404 for /health: still there
    finally:
        server.shutdown()


def copy_for_training(pipeline_repo, tmp_path: Path, **train) -> tuple[Path, dict]:
    """A fresh directory with the pipeline's tokenized data and params, for running the train stage alone."""
    import shutil

    import yaml

    root, env = pipeline_repo
    work = tmp_path / "work"
    for name in ("nmt", "pipeline", "data/tokenized"):
        shutil.copytree(root / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(train)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return work, {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}


def test_train_stage_with_a_dead_store_exits_2_within_10s(pipeline_repo, tmp_path):
    work, env = copy_for_training(pipeline_repo, tmp_path)
    uri = dead_uri()
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipeline.train"], cwd=work, env={**env, "MLFLOW_TRACKING_URI": uri},
                          capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 10
    assert proc.returncode == 2 and uri in proc.stderr and "Traceback" not in proc.stderr
    assert not (work / "models").exists()  # nothing written


def run_statuses(work: Path) -> list[str]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("nmt")
    return [r.info.status for r in client.search_runs([experiment.experiment_id])]


# Ctrl-C and SIGTERM mark the run KILLED: tests/test_resume.py, which also checks their resume checkpoint.


def test_crashed_training_marks_its_run_failed(pipeline_repo, tmp_path, monkeypatch):
    from nmt.params import load_params
    from nmt.stages import train as train_module
    from nmt.training import step as step_module

    work, env = copy_for_training(pipeline_repo, tmp_path)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    calls = {"n": 0}
    real = step_module.batch_loss

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(step_module, "batch_loss", failing)
    with pytest.raises(RuntimeError, match="boom"):
        train_module.train(load_params(work / "params.yaml"))
    assert run_statuses(work) == ["FAILED"]


# --------------------------------------------------------------------------- reading the store
def test_nmt_runs_prints_the_newest_runs_with_params_and_metrics(pipeline_repo):
    root, env = pipeline_repo
    proc = subprocess.run([str(Path(sys.executable).parent / "nmt"), "runs", "--last", "5"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    evaluation = json.loads((root / "metrics/eval.json").read_text())
    assert "FINISHED" in proc.stdout and "jsonl" in proc.stdout and "test BLEU" in proc.stdout
    assert f"{evaluation['bleu']:.2f}" in proc.stdout


def test_nmt_runs_on_a_dead_store_is_a_clear_error(pipeline_repo):
    root, env = pipeline_repo
    uri = dead_uri()
    proc = subprocess.run([str(Path(sys.executable).parent / "nmt"), "runs"], cwd=root,
                          env={**env, "MLFLOW_TRACKING_URI": uri}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and uri in proc.stderr and "Traceback" not in proc.stderr


def test_a_signal_during_a_store_write_is_delivered_after_it():
    """Ctrl-C inside a SQLite write left a lock behind and the run RUNNING; it now waits for the write."""
    from nmt.signals import signals_held

    finished = []
    # Python's own Ctrl-C handler, whatever this process inherited: a shell's background job starts
    # with SIGINT ignored, and then Python installs none.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_held():
                signal.raise_signal(signal.SIGINT)
                finished.append("write")
        assert finished == ["write"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)
