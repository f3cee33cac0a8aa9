"""Model weights (safetensors, never pickle) and the JSON config that rebuilds the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nmt.config import ModelConfig
from nmt.errors import ModelFileError
from nmt.io import atomic_path, atomic_write_json, read_json
from nmt.model import Transformer
from nmt.params import _build, decoding_from_dict, to_dict

FORMAT = "nmt-model"
VERSION = 1
CONFIG_KEYS = {"format", "version", "model", "vocab_size", "pad_id", "bos_id", "eos_id", "info", "decoding"}
OPTIONAL_KEYS = {"info", "decoding"}  # decoding: the export's decoding defaults (nmt.config.DECODING_KEYS)
# Model keys that configs written before the option existed lack, with the value those models were
# built with: params.yaml's default may be another (copy is on by default now), the old weights are not.
LEGACY_MODEL_KEYS = {"copy": False}


def save_model(model: Transformer, weights_path: Path, config_path: Path, bos_id: int, eos_id: int,
               info: dict[str, Any] | None = None) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(weights_path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    atomic_write_json(config_path, {
        "format": FORMAT,
        "version": VERSION,
        "model": to_dict(model.cfg),
        "vocab_size": model.vocab_size,
        "pad_id": model.pad_id,
        "bos_id": bos_id,
        "eos_id": eos_id,
        "info": info or {},
    })


def read_model_config(config_path: Path) -> dict[str, Any]:
    """Read and validate a model config.json; raise ModelFileError naming the file and the problem."""
    try:
        raw = read_json(config_path)
    except Exception as e:  # DataError from read_json: re-raise as a model-file problem
        raise ModelFileError(str(e)) from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ModelFileError(f"{config_path}: not an nmt model config (expected \"format\": \"{FORMAT}\")")
    unknown = set(raw) - CONFIG_KEYS
    missing = CONFIG_KEYS - set(raw) - OPTIONAL_KEYS
    if unknown or missing:
        raise ModelFileError(f"{config_path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    if raw["version"] != VERSION:
        raise ModelFileError(f"{config_path}: version {raw['version']!r}, this nmt reads version {VERSION}")
    problems: list[str] = []
    model = {**LEGACY_MODEL_KEYS, **raw["model"]} if isinstance(raw["model"], dict) else raw["model"]
    raw["model"] = _build(ModelConfig, model, "model.", problems)
    if "decoding" in raw:
        raw["decoding"] = decoding_from_dict(raw["decoding"], "decoding.", problems)
    for key in ("vocab_size", "pad_id", "bos_id", "eos_id"):
        if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 0:
            problems.append(f"{key}: expected a non-negative integer, got {raw[key]!r}")
    if problems:
        raise ModelFileError(f"{config_path}: " + "; ".join(problems))
    return raw


def load_model(weights_path: Path, config_path: Path, device: str | torch.device = "cpu") -> tuple[Transformer, dict]:
    """Rebuild the model from its config and load the weights; shapes must match exactly."""
    config = read_model_config(config_path)
    if not Path(weights_path).is_file():
        raise ModelFileError(f"{weights_path}: weights file not found")
    try:
        state = load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{weights_path}: not a readable safetensors file ({e})") from e
    model = Transformer(config["model"], config["vocab_size"], config["pad_id"]).to(device)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))[:5]
        unexpected = sorted(set(got) - set(expected))[:5]
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])[:5]
        raise ModelFileError(
            f"{weights_path}: weights do not match {config_path} "
            f"(missing {missing}, unexpected {unexpected}, wrong shape {wrong})"
        )
    model.load_state_dict(state)
    model.eval()
    return model, config
