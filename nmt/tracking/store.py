"""Which MLflow store the project talks to, and getting MLflow pointed at it.

The store is ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///mlflow.db`` at the repository
root. With a local store (sqlite, a file path) artifacts of experiments created here go to
``mlartifacts/`` beside it; with a tracking server (``http(s)://``, a team's shared ``mlflow
server``) the server decides where they go, and by default proxies them (``mlflow-artifacts:/``),
so nothing of a run lands on the client's disk. Every other tracking module (the run, the
registry, browsing runs) goes through :func:`connect` or :func:`_set_store`, so the choice of
store and the fail-fast rules for a dead server live in this one place.

MLflow is imported lazily: it is slow to import and most commands never need it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nmt.errors import NmtError
from nmt.io import project_root

# MLflow 3 opens an experiment on its GenAI overview unless it is marked as model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
REACH_TIMEOUT_S = 5.0
SQLITE = "sqlite:///"
# A dead server must be noticed in seconds: each request waits at most REACH_TIMEOUT_S for a socket
# and is retried twice (after 0 s, then 2 s), not MLflow's default 7 retries over minutes. A blip
# of a shared server (a restart, a 503) is still ridden out.
HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.2", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(REACH_TIMEOUT_S))}


class TrackingError(NmtError):
    """The tracking store cannot be used (unreachable, or the run is not in it)."""


def tracking_uri(root: Path | None = None) -> str:
    """The store's URI; a relative SQLite path is from the repository root (:func:`_anchored`)."""
    root = project_root() if root is None else root
    uri = os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    return _anchored(uri, root)


def _anchored(uri: str, root: Path) -> str:
    """``uri`` with a relative SQLite path made absolute from ``root``, the repository.

    A queued or ``--temp`` DVC experiment runs its stages in a temporary copy of the repository
    (.dvc/tmp/exps), deleted when it ends: read from the working directory, ``sqlite:///mlflow.db``
    would be that copy's store and the run would be lost with it.
    """
    path = uri.removeprefix(SQLITE)
    if uri.startswith(SQLITE) and path and not path.startswith(("/", ":memory:")):
        return SQLITE + str((root / path).resolve())
    return uri


def is_server(uri: str) -> bool:
    """A tracking server over HTTP (shared, may vanish), not a local store created on first use."""
    return uri.startswith(("http://", "https://"))


def answers(uri: str, timeout_s: float = REACH_TIMEOUT_S) -> bool:
    """Whether ``uri`` can be used now: a local store always, a server when it answers HTTP at all."""
    try:
        check_reachable(uri, timeout_s)
    except TrackingError:
        return False
    return True


def wait_until_answers(url: str, proc: subprocess.Popen, timeout_s: float, interval_s: float = 0.5) -> bool:
    """Poll ``url`` (a server's health route: ``/health``, ``/ping``) until it answers with success:
    True. False as soon as ``proc``, the server, has exited, or ``timeout_s`` has passed; the caller
    says so, with the server's log."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:  # refused, timed out, or an error status (HTTPError): not up yet
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(interval_s)


def check_reachable(uri: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Raise :class:`TrackingError` naming ``uri`` when an HTTP tracking server does not answer.

    Any HTTP answer counts as reachable; a refused connection or a timeout does not. Local stores
    (sqlite, file) are created on first use and need no check.
    """
    if not is_server(uri):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return  # the server answered, with an error page: it is there
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingError(
            f"MLflow tracking store {uri} cannot be reached ({reason}); start that server, unset "
            "MLFLOW_TRACKING_URI to log to ./mlflow.db, or set mlflow.required: false to train without tracking"
        ) from e


def _quiet_http_retries() -> None:
    # MLflow's HTTP client retries for minutes by default; a dead server must fail fast. A value
    # the user set in the environment wins.
    for key, value in HTTP_RETRIES.items():
        os.environ.setdefault(key, value)


def _set_store(root: Path) -> str:
    import mlflow

    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def connect(root: Path) -> str:
    """Point MLflow at the project's store once it answers (:func:`check_reachable`); return its URI."""
    _quiet_http_retries()
    uri = tracking_uri(root)
    check_reachable(uri)
    _set_store(root)
    return uri


@contextmanager
def _creating(uri: str) -> Iterator[None]:
    """Hold an exclusive lock (``<store>.lock``) while a SQLite store may be created or migrated.

    Two training runs starting at once on a new store (``dvc queue start --jobs 2``) would both run
    MLflow's schema migrations, and one would fail ("Online migration expected to match one row"),
    or both create the experiment. Later writes wait on SQLite's own lock (MLflow's busy_timeout).
    """
    path = uri.removeprefix(SQLITE)
    if not uri.startswith(SQLITE) or not path.startswith("/"):
        yield
        return
    import fcntl

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        yield


def ensure_experiment(name: str, root: Path) -> str:
    """Create ``name`` if needed, tag it for the UI; return its id.

    In a local store its artifacts go to ``root/mlartifacts``. On a tracking server the server's
    own default applies (its ``--artifacts-destination``, proxied): a path on this machine would
    send every teammate's artifacts to their own disks, out of the server's reach.
    """
    import mlflow

    # The runs-table view is browse's to define; imported here, not at the top, because browse
    # builds on this module.
    from nmt.tracking.browse import VIEW_KEY, runs_view

    with _creating(mlflow.get_tracking_uri()):
        experiment = mlflow.get_experiment_by_name(name)  # the first touch creates (migrates) the store
        if experiment is None:
            local = None if is_server(mlflow.get_tracking_uri()) else (root / "mlartifacts").resolve().as_uri()
            experiment_id = mlflow.create_experiment(name, artifact_location=local)
        else:
            experiment_id = experiment.experiment_id
    client = mlflow.MlflowClient()
    for key, value in {**EXPERIMENT_KIND, f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(runs_view())}.items():
        client.set_experiment_tag(experiment_id, key, value)
    return experiment_id
