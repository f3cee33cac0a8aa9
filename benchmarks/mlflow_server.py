"""Tracking over HTTP vs a sqlite file: one tiny training timed against both; how fast a dead server is noticed.

    .venv/bin/python -m benchmarks.mlflow_server DIR

``DIR`` holds ``params.yaml`` and ``data/tokenized`` (e.g. the tests' tiny pipeline repo,
``tests/conftest.py::pipeline_repo``). Starts a real ``mlflow server`` (sqlite backend, proxied
artifacts, one worker) on a free 127.0.0.1 port, times ``python -m pipeline.train`` three times
against it and against a new sqlite file store each, then times ``Run.log_metrics`` noticing a
hung (SIGSTOP) and a gone (killed) server. Prints JSON; docs/tracking.md quotes it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.test_mlflow import free_port
from tests.test_mlflow_server import TrackingServer

REPO = Path(__file__).resolve().parents[1]


def workdir(src: Path, dest: Path) -> Path:
    for name in ("nmt", "pipeline"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(src / "data/tokenized", dest / "data/tokenized")
    shutil.copy(src / "params.yaml", dest)
    return dest


def time_training(work: Path, uri: str) -> float:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipeline.train"], cwd=work, capture_output=True, text=True,
                          env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 0, proc.stderr
    return round(time.monotonic() - start, 1)


def noticed_in(server: TrackingServer, root: Path, how: str) -> float:
    """Seconds one Run.log_metrics takes to find the server ``hung`` (SIGSTOP) or ``gone`` (killed)."""
    from nmt.config import MlflowConfig
    from nmt.tracking.run import Run

    os.environ["MLFLOW_TRACKING_URI"] = server.url
    run = Run.start(MlflowConfig(system_metrics=False, required=False), root=root)
    run.log_metrics({"x": 1.0}, step=1)
    if how == "hung":
        os.killpg(server.proc.pid, signal.SIGSTOP)
    else:
        server.kill()
    start = time.monotonic()
    run.log_metrics({"x": 2.0}, step=2)
    elapsed = round(time.monotonic() - start, 2)
    assert run.lost, "the server was not noticed gone"
    if how == "hung":
        os.killpg(server.proc.pid, signal.SIGCONT)
    run.end()
    return elapsed


def main(src: Path) -> None:
    out = Path(tempfile.mkdtemp(prefix="mlflow-server-bench-"))
    (out / "server").mkdir()
    server = TrackingServer(out / "server", free_port())
    server.start()
    seconds: dict[str, list[float]] = {"http_server": [], "sqlite_new": []}
    try:
        for i in range(3):
            work = workdir(src, out / f"sqlite{i}")
            seconds["sqlite_new"].append(time_training(work, f"sqlite:///{work}/mlflow.db"))
            seconds["http_server"].append(time_training(workdir(src, out / f"http{i}"), server.url))
        noticed = {how: noticed_in(server, out, how) for how in ("hung", "gone")}
    finally:
        server.kill()
    print(json.dumps({"train_seconds": seconds, "dead_server_noticed_s": noticed}))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
