"""Every MLflow call of the project, in one place.

The store is ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///mlflow.db`` at the repository
root; artifacts of experiments created here go to ``mlartifacts/`` beside it. MLflow is imported
lazily: it is slow to import and most commands never need it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def tracking_uri(root: Path | None = None) -> str:
    root = Path.cwd() if root is None else root
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


class Run:
    """One MLflow run; a no-op when tracking is disabled."""

    def __init__(self, enabled: bool, experiment: str, run_name: str | None = None, root: Path | None = None):
        self.enabled = enabled
        self.run_id: str | None = None
        if not enabled:
            return
        import mlflow

        self._mlflow = mlflow
        root = Path.cwd() if root is None else root
        mlflow.set_tracking_uri(tracking_uri(root))
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=(root / "mlartifacts").resolve().as_uri())
        mlflow.set_experiment(experiment)
        self.run_id = mlflow.start_run(run_name=run_name).info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        if self.enabled:
            self._mlflow.log_params(params)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.enabled:
            self._mlflow.set_tags(tags)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.enabled:
            self._mlflow.log_metrics(metrics, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled and Path(path).exists():
            self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled:
            self._mlflow.end_run(status=status)
