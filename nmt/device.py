"""Which torch device a run or a translator uses: the one resolver of ``auto`` / ``cpu`` / ``cuda``."""

from __future__ import annotations

import torch

from nmt.errors import ModelFileError


def resolve_device(name: str, local_rank: int = 0, option: str = "--device") -> torch.device:
    """``auto``: CUDA when there is one, else the CPU. Under torchrun on GPUs, the local rank's GPU.

    Asking for ``cuda`` without one is an error naming ``option`` (the setting the user gave).
    """
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelFileError(f"{option} cuda was asked for, but no CUDA device is available (use auto or cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name, local_rank) if name == "cuda" else torch.device(name)
