"""Which torch device a run or a translator uses: the one resolver of ``auto`` / ``cpu`` / ``cuda``;
and how many CPU threads a piece of work gets."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the body with ``n`` intra-op CPU threads, then restore the count before, also on an error.

    For tiny models (tests, benchmark fixtures): their products only lose to a thread pool's
    hand-offs, and on a busy machine idle threads spin-wait many times longer than the work.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
