"""Resume checkpoints: all a killed training needs to go on exactly where it stopped.

``models/resume/state.pt`` holds the model, optimizer, scheduler, EMA and fp16 loss-scaler
states, the step, the data order's position, every RNG state (Python, NumPy, torch CPU and CUDA),
the best-so-far scores and weights, the early-stopping counter, the dev curve so far and the
MLflow run id. It is written atomically every ``train.checkpoint_every`` steps and on Ctrl-C /
SIGTERM, and removed when training ends. It is not a DVC output (DVC deletes a stage's outputs
before re-running it): `dvc repro` after a kill finds it and resumes.

Loading never runs code: ``torch.load(weights_only=True)`` accepts only tensors and plain
containers, so a crafted pickle is refused instead of executed. A checkpoint written under other
params (anything but the keys in :data:`MAY_CHANGE`) or other data is refused with the keys that
differ; ``train.resume: false`` starts over.
"""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmt.config import Params
from nmt.errors import NmtError
from nmt.io import atomic_path
from nmt.params import flatten, to_dict

FORMAT = "nmt-resume"
VERSION = 1
# Params a resumed run may change: how long to train and how it is run, not what is learned.
MAY_CHANGE = frozenset({"train.max_steps", "train.checkpoint_every", "train.resume", "train.threads",
                        "train.max_bad_steps", "train.patience", "train.dist_timeout_s", "train.compile"})
# The sections that decide what a checkpoint's numbers mean (mlflow, evaluate and export do not).
SECTIONS = ("seed", "data", "tokenize", "model", "train")


class ResumeError(NmtError):
    """A resume checkpoint that cannot be used; the message says how to start over."""


def fingerprint(params: Params, data_sha256: str) -> dict[str, Any]:
    """The flattened params a checkpoint must have been written under, and its data's hash."""
    raw = to_dict(params)
    flat = flatten({k: raw[k] for k in SECTIONS})
    return {**{k: v for k, v in flat.items() if k not in MAY_CHANGE}, "data.sha256": data_sha256}


def rng_states() -> dict[str, Any]:
    """Every generator training draws from, as tensors and plain values (weights_only-loadable)."""
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    states: dict[str, Any] = {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a kill while saving leaves the previous checkpoint whole."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)


def load_state(path: Path, expected: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint without executing anything in it, and check it was written under ``expected``."""
    fix = f"delete {path.parent} or set train.resume: false to start over"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses any global it does not know: this is what a code-running pickle gets.
        culprit = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f" (it names {culprit.group(1)})" if culprit else ""
        raise ResumeError(f"{path}: refused: it holds more than tensors and plain data{what}, so loading it "
                          f"could run code; {fix}") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ResumeError(f"{path}: not a readable resume checkpoint ({str(e).splitlines()[0]}); {fix}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ResumeError(f"{path}: not an nmt resume checkpoint; {fix}")
    if state.get("version") != VERSION:
        raise ResumeError(f"{path}: version {state.get('version')!r}, this nmt reads version {VERSION}; {fix}")
    written = state.get("fingerprint", {})
    changed = sorted(k for k in set(written) | set(expected) if written.get(k) != expected.get(k))
    if changed:
        details = ", ".join(f"{k}: {written.get(k)!r} -> {expected.get(k)!r}" for k in changed[:8])
        more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
        raise ResumeError(f"{path} was written under other params or data ({details}{more}); only "
                          f"{', '.join(sorted(MAY_CHANGE))} may change on resume; {fix}")
    return state


def remove(path: Path) -> None:
    """Training ended: nothing to resume any more."""
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass
