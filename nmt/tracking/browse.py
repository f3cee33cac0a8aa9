"""Browsing runs: the `nmt runs` table and the `nmt ui` server, both opening on our columns.

The store itself is ``nmt.tracking.store``; this module is what a person looks at. The experiment
carries a shared view of the runs table (:func:`runs_view`, tagged by
``nmt.tracking.store.ensure_experiment``) so the MLflow UI opens newest first with the params and
metrics that tell runs apart. :func:`serve_ui` supervises the ``mlflow ui`` process for the
``nmt ui`` command: it runs in its own process group, because it spawns uvicorn and job workers
that outlive a plain terminate(), and the whole group is stopped on the way out.

MLflow is imported lazily: it is slow to import and most commands never need it.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

from nmt.errors import fail
from nmt.io import project_root
from nmt.tracking.store import (
    TrackingError,
    _set_store,
    connect,
    ensure_experiment,
    tracking_uri,
)

# A shared view of the runs table (the UI reads it from the experiment tag that
# nmt.tracking.store.ensure_experiment sets, selected by the `viewStateShareKey` URL parameter):
# the params and metrics that tell runs apart, as columns.
VIEW_KEY = "nmt-runs"
VIEW_PARAMS = ["data.source", "model.d_model", "model.enc_layers", "model.dec_layers", "train.max_steps", "train.lr"]
VIEW_METRICS = ["best_dev_bleu", "best_dev_exact_match", "test_bleu", "test_exact_match", "test_baseline_bleu",
                "train_tokens_per_s"]


def runs_view() -> dict[str, Any]:
    """The runs-table state the UI restores from a share key: newest first, our columns shown."""
    columns = [f"params.`{p}`" for p in VIEW_PARAMS] + [f"metrics.`{m}`" for m in VIEW_METRICS]
    return {"orderByKey": "attributes.start_time", "orderByAsc": False,
            "selectedColumns": ["attributes.`Source`", "attributes.`Models`", *columns]}


def ui_url(host: str, port: int, experiment_id: str, base: str | None = None) -> str:
    """The runs page of ``experiment_id``: on a local `mlflow ui` at ``host:port``, or on the server at ``base``."""
    base = (base or f"http://{host}:{port}").rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"


RUN_COLUMNS = [  # (header, column of mlflow.search_runs)
    ("run", "tags.mlflow.runName"), ("started", "start_time"), ("status", "status"),
    ("dvc exp", "tags.dvc.experiment"), ("data", "params.data.source"), ("d_model", "params.model.d_model"),
    ("layers", "params.model.enc_layers"), ("steps", "params.train.max_steps"), ("lr", "params.train.lr"),
    ("dev BLEU", "metrics.best_dev_bleu"), ("test BLEU", "metrics.test_bleu"), ("test EM", "metrics.test_exact_match"),
    ("tok/s", "metrics.train_tokens_per_s"),
]


def recent_runs(experiment: str, limit: int, root: Path | None = None) -> list[dict[str, str]]:
    """The newest ``limit`` runs of ``experiment`` as rows of :data:`RUN_COLUMNS` (strings, '' if absent)."""
    import math

    import mlflow

    uri = connect(project_root() if root is None else root)
    if mlflow.get_experiment_by_name(experiment) is None:
        raise TrackingError(f"no experiment {experiment!r} in {uri} (train a model first: `make repro`)")
    frame = mlflow.search_runs(experiment_names=[experiment], max_results=limit, order_by=["attributes.start_time DESC"])

    def cell(value: Any, column: str) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if column == "start_time":
            return value.strftime("%Y-%m-%d %H:%M")
        if column.startswith("metrics."):
            return f"{value:.0f}" if column.endswith("per_s") else f"{value:.2f}"
        return str(value)

    return [{header: cell(row.get(column), column) for header, column in RUN_COLUMNS}
            for row in frame.to_dict("records")]


def prepare_ui(experiment: str, root: Path | None = None) -> str:
    """Create and tag the experiment so the UI opens it as model training; return its id."""
    root = project_root() if root is None else root
    _set_store(root)
    return ensure_experiment(experiment, root)


def serve_ui(url: str, experiment: str, host: str, port: int, open_browser: bool) -> None:
    """Run `mlflow ui` on this project's store until it exits, Ctrl-C or SIGTERM, then stop its group.

    Once the server answers, print ``url`` (the runs page of ``experiment``) and open it in a
    browser if ``open_browser``. Exit 1 naming the port when the server quits before answering.
    """
    import subprocess
    import urllib.request
    import webbrowser

    mlflow = Path(sys.executable).parent / "mlflow"
    # Its own process group: `mlflow ui` spawns uvicorn and job workers that outlive a plain terminate().
    server = subprocess.Popen([str(mlflow), "ui", "--backend-store-uri", tracking_uri(), "--host", host, "--port", str(port)],
                              start_new_session=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # run the cleanup below
    try:
        for _ in range(120):  # wait until it answers, then point the user (and a browser) at the runs page
            if server.poll() is not None:
                fail(f"mlflow ui exited with code {server.returncode} (is port {port} in use? try --port)", 1)
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        print(f"MLflow UI, experiment {experiment!r}: {url}", flush=True)
        if open_browser:
            webbrowser.open(url)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        _stop_group(server)


def _stop_group(process) -> None:
    """SIGTERM the process group of ``process``, SIGKILL it if it is still there after 10 s."""
    import os
    import subprocess

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
            time.sleep(1)  # the leader is gone; its workers get a moment before the SIGKILL round
        except subprocess.TimeoutExpired:
            pass
