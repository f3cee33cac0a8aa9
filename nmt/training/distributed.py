"""Data-parallel training on torchrun: the process group, and what the ranks must agree on.

``torchrun --nproc_per_node=N -m pipeline.train`` starts N copies of the train stage with
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` set; :func:`setup` joins them into one process group
(gloo on CPU, NCCL on GPU) with a timeout, so a rank that dies ends the job with an error instead
of leaving the others waiting forever. Without torchrun everything here is a no-op on one process.

How the ranks split the work, and why a run on N processes equals one process accumulating N
batches: every rank walks the *same* global stream of batches (same seed, same epoch shuffles)
and, for each optimizer step, takes its own slice of the next ``N x accumulate`` batches. Each
rank divides its summed loss by the step's *global* token count (an all-reduce) and multiplies by
N, because DDP averages gradients over ranks: the result is the per-token mean over all N
slices, the gradient one process would get from the same batches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from nmt.errors import NmtError


class DistributedError(NmtError):
    """The process group could not be formed or a rank went away."""


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes every file and the MLflow run; the others only train."""
        return self.rank == 0


def from_environment() -> Dist:
    """The ranks torchrun describes in the environment (one process when it is not there)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device, timeout_s: float) -> Dist:
    """Join the process group torchrun set up; a no-op without torchrun."""
    d = from_environment()
    if not d.enabled or dist.is_initialized():
        return d
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(d.local_rank)
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"rank {d.rank} of {d.world_size} could not join the process group ({backend}) "
                               f"within train.dist_timeout_s={timeout_s:g}: {e}") from e
    return d


def finish(d: Dist) -> None:
    """Wait until every rank has finished before any leaves the group (a run that ended well).

    Without it the first rank done destroys its group and exits while rank 0 still writes its
    files and closes the MLflow run. Once in a fresh-clone CI run a rank then died at exit with
    SIGABRT ("terminate called without an active exception": a C++ thread still joinable when its
    process ended) after a run that had succeeded; leaving together removes that window. Not
    called on the way out of an error: a dead rank would hold the others here for the timeout.
    """
    if d.enabled and dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], d: Dist, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (float64, so token counts stay exact)."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, d: Dist, device: torch.device) -> bool:
    """True on every rank when it is True on any (stop requests must end all ranks at the same step)."""
    return bool(all_sum([float(flag)], d, device)[0]) if d.enabled else flag


def gather_objects(obj: object, d: Dist) -> list[object]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not d.enabled:
        return [obj]
    out: list[object] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out
