"""What every benchmark shares: timing by median of warm repeats (in turns when comparing), the device, memory."""

from __future__ import annotations

import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch

from nmt.tracking.provenance import cpu_model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device = torch.device("cpu"),
                   warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int,
                        device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """Median seconds of each function, timed in turns (a, b, a, b, ...): drifts such as a warming
    allocator or a neighbour's load then hit both sides alike, instead of whichever runs second."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def autocast(device: torch.device):
    """bf16 autocast on a GPU (how training runs there); plain fp32 on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    # The model name, not just the architecture: two x86_64 machines differ in their float kernels
    # and speeds (an AMD EPYC and an Intel Xeon with AMX gave different figures for the same code),
    # and comparable() must not pool their MFU runs.
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def versions() -> dict[str, str]:
    from nmt.results import installed_versions

    out = {"python": platform.python_version(), "torch": torch.__version__}
    if torch.version.cuda:
        out["cuda"] = torch.version.cuda
    return out | installed_versions(("tiktoken", "transformers", "ctranslate2"))
