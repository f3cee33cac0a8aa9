"""One MLflow run, which holds the whole story of a model.

The train stage opens it (params, tags, curves, system metrics, artifacts) and writes its id to
``models/mlflow_run.json``; the evaluate stage reopens it to add test scores and the predictions
table; the export stage adds the servable pyfunc model and registers it (``nmt.tracking.registry``).
``metrics/train.json`` carries the run id, and the run's ``dvc.experiment`` tag names the DVC
experiment, so each side points at the other.

:class:`Run` is the only way the stages write to MLflow: it connects through
``nmt.tracking.store``, turns every call into a no-op when tracking is off (or unreachable and not
required), and guards each write with :func:`signals_held` so Ctrl-C cannot leave a SQLite store
locked. MLflow is imported lazily: it is slow to import and most commands never need it.

**A tracking server that vanishes mid-run.** A write that fails because the server no longer
answers (checked: an API error from a live server is raised as it is) marks the run *lost*: no
more writes are tried in this process. With ``mlflow.required: true`` the owner stops at its next
safe point (the training loop after the step, with a resume checkpoint; any stage at the end of
its ``with`` block) with a :class:`TrackingError` naming the server; with ``required: false`` it
warns once and goes on untracked, asking the server again at most every ``mlflow.reconnect_s``
seconds (on the next write after that): once it answers, writes resume into the same run (what
came in between is not logged) and the run ends FINISHED there. The run id is kept either way, so
a resumed training, the evaluate and the export stages reopen the same run once the server answers.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nmt.config import MlflowConfig
from nmt.io import atomic_write_json, project_root, read_json
from nmt.signals import signals_held
from nmt.tracking.store import TrackingError, answers, connect, ensure_experiment

REASONS = ("Connection refused", "Read timed out", "Connection reset", "Name or service not known", "timed out")


class Run:
    """One MLflow run, new or reopened; every method is a no-op when tracking is off.

    ``Run.start`` opens a training run; ``Run.resume`` reopens the run named in a run file (the
    evaluate and export stages). Use as a context manager: leaving it by an exception ends the
    run FAILED, by Ctrl-C or SIGTERM (KeyboardInterrupt, SystemExit) KILLED, else FINISHED.
    """

    def __init__(self, run_id: str | None = None, experiment_id: str | None = None, uri: str | None = None,
                 required: bool = True, reconnect_s: float = 0.0):
        self.run_id, self.experiment_id, self.uri, self.required = run_id, experiment_id, uri, required
        self.lost: str | None = None  # what happened, once the store stopped answering (see the module doc)
        self.reconnect_s = reconnect_s  # required: false: how often a lost store is asked again (0: never)
        self._ask_again_at = 0.0  # time.monotonic() of the next such check

    @property
    def enabled(self) -> bool:
        """Writes go to MLflow: tracking is on and the store has not been lost."""
        return self.run_id is not None and self.lost is None

    @property
    def must_stop(self) -> bool:
        """The store was lost and ``mlflow.required`` says that is fatal: stop at the next safe point."""
        return self.lost is not None and self.required

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
        return cls(run.info.run_id, experiment_id, uri, cfg.required, cfg.reconnect_s)

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
        return cls(run_id, run.info.experiment_id, uri, cfg.required, cfg.reconnect_s)

    def write_run_file(self, path: Path) -> None:
        atomic_write_json(path, {"run_id": self.run_id, "experiment_id": self.experiment_id, "tracking_uri": self.uri})

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("FINISHED")
            if self.must_stop:
                raise TrackingError(f"{self.lost}; start the server again and rerun the same command to log "
                                    "into the same run, or set mlflow.required: false to go on without tracking")
        elif issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
            self.end("KILLED")
        else:
            self.end("FAILED")

    def _write(self, what: str, write: Callable[[Any], object]) -> None:
        """``write(mlflow)``, Ctrl-C held back; a store that stopped answering loses the run. Nothing
        when tracking is off, or the store is lost and not back (:meth:`_back`)."""
        if self.run_id is None or (self.lost is not None and not self._back()):
            return
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            with signals_held():
                write(mlflow)
        except (MlflowException, OSError) as e:
            # An API error of a live server (a bad value, a missing run) is a bug to report as it is.
            if self.uri is None or answers(self.uri):
                raise
            self._lose(what, e)

    def _lose(self, what: str, error: Exception) -> None:
        text = str(error)
        # MLflow's message nests urllib3's; the words that say what happened are enough.
        reason = next((known for known in REASONS if known in text), text.splitlines()[0][:200])
        self.lost = f"MLflow tracking store {self.uri} stopped answering while logging {what} to run {self.run_id} " \
                    f"({reason})"
        if not self.required:
            self._ask_again_at = time.monotonic() + self.reconnect_s
            again = (f"asking it again every {self.reconnect_s:g} s (mlflow.reconnect_s) and logging into the same "
                     f"run once it answers" if self.reconnect_s else "the evaluate and export stages log into the "
                     "same run once the server answers again")
            print(f"warning: {self.lost}; going on without tracking (mlflow.required is false); {again}",
                  file=sys.stderr)

    def _back(self, now: bool = False) -> bool:
        """Whether a lost store answers again; if so, writes resume. Asked at most every
        ``reconnect_s`` seconds (``now``: whenever, for the run's end), and never when tracking is
        required (its owner stops instead)."""
        if self.required or not self.reconnect_s or self.uri is None:
            return False
        if not now and time.monotonic() < self._ask_again_at:
            return False
        self._ask_again_at = time.monotonic() + self.reconnect_s
        if not answers(self.uri):
            return False
        import mlflow
        from mlflow.exceptions import MlflowException

        try:  # a server that came back on another backend store does not hold the run
            mlflow.get_run(self.run_id)
        except (MlflowException, OSError) as e:
            self.reconnect_s = 0.0
            print(f"warning: MLflow tracking store {self.uri} answers again but without run {self.run_id} "
                  f"({str(e).splitlines()[0][:200]}); going on without tracking", file=sys.stderr)
            return False
        print(f"warning: MLflow tracking store {self.uri} answers again: logging to run {self.run_id} resumes "
              f"(what came while it was away is not logged)", file=sys.stderr)
        self.lost = None
        return True

    def log_params(self, params: dict[str, Any]) -> None:
        self._write("params", lambda mlflow: mlflow.log_params(params))

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._write("tags", lambda mlflow: mlflow.set_tags({k: v for k, v in tags.items() if v not in ("", None)}))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._write("metrics", lambda mlflow: mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step))

    def log_inputs(self, inputs: list[tuple[Any, str, dict[str, str]]]) -> None:
        """Log datasets as the run's inputs: (mlflow.data Dataset, context, tags) each (``nmt.tracking.datasets``)."""
        datasets, contexts, tags = (list(column) for column in zip(*inputs))
        self._write("dataset inputs",
                    lambda mlflow: mlflow.log_inputs(datasets=datasets, contexts=contexts, tags_list=tags))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if Path(path).exists():
            self._write(f"artifact {path}", lambda mlflow: mlflow.log_artifact(str(path), artifact_path=artifact_path))

    def log_table(self, columns: dict[str, list], artifact_file: str) -> None:
        self._write(f"table {artifact_file}",
                    lambda mlflow: mlflow.log_table(data=columns, artifact_file=artifact_file))

    def guarded(self, what: str, write: Callable[[], Any]) -> Any:
        """``write()`` (some other MLflow call, e.g. registering a model) under this run's rules; None when lost."""
        result = []
        self._write(what, lambda mlflow: result.append(write()))
        return result[0] if result else None

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id is None:
            return
        if self.lost is None or self._back(now=True):
            self._write("the run's end", lambda mlflow: mlflow.end_run(status=status))
            return
        import mlflow
        from mlflow.exceptions import MlflowException

        # The store is gone: end_run still drops the run from this process's active runs (and its
        # system-metrics thread), then fails to tell the server; it stays RUNNING there until reopened.
        try:
            with signals_held():
                mlflow.end_run(status=status)
        except (MlflowException, OSError):
            pass
