"""Model FLOPs of a training step, and the device's matmul peak: the two halves of MFU.

MFU (model FLOPs utilisation, Chowdhery et al. 2022) = FLOPs the model needs per step / step time
/ peak FLOP/s. The numerator is counted analytically from the shapes below, never from a profiler
(which would also count recomputation and padding waste as "useful"); the train stage counts each
sequence at its real, unpadded lengths (:func:`unpadded_train_flops`). The denominator is
*measured* on the device in the same process by large matrix multiplies (:func:`measure_peak_flops`,
the one measurement the train stage and the benchmarks share); the datasheet's dense peak of a
known GPU (:func:`theoretical_peak_flops`) is reported beside it, never divided by.

Counting. A (m, k) @ (k, n) matmul costs 2·m·k·n FLOPs (one multiply, one add). Only matmuls
are counted: layer norms, softmax, GELU, dropout, the embedding lookup and the optimizer update
are O(tokens·D) and well under 1 % of the total at these sizes. The backward pass costs twice the
forward (a gradient for the input and one for the weight per matmul), so a training step is
3 x forward. Causal self-attention counts only the T(T+1)/2 query-key pairs a query may see.

Per sequence, with D = d_model, F = d_ff, V = vocabulary, S / T source / target length::

    encoder layer   S·(6D² + 2D² + 4DF)       q, k, v; output projection; feed-forward
                    + 2·(2·S²·D)               scores Q·Kᵀ and the weighted sum A·V
    decoder layer   T·(6D² + 2D² + 4DF)       self-attention projections, feed-forward
                    + T·(2D² + 2D²) + S·4D²    cross-attention q and output; k, v of the memory
                    + 2·(2·D·T(T+1)/2)         causal self-attention scores and sum
                    + 2·(2·T·S·D)              cross-attention scores and sum
    output          2·T·D·V                    tied embedding as the output projection
    copy (opt.)     2·T·D² + 2·S·D²            pointer query and keys
                    + 2·(2·T·S·D) + 2·T·S·S    copy scores, context, mass per distinct id
                    + 2·T·2D                   the generate/copy gate
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TypeVar

import torch

from nmt.config import ModelConfig

Length = TypeVar("Length", int, torch.Tensor)  # one length, or an int64 tensor of them (one per sequence)


def sequence_forward_flops(cfg: ModelConfig, vocab_size: int, src_len: Length, tgt_len: Length) -> Length:
    """Matmul FLOPs of one forward pass over one sequence pair (module docstring's table).

    Plain integer arithmetic, so int64 tensors of lengths give every sequence's count at once.
    """
    D, F, V, S, T = cfg.d_model, cfg.d_ff, vocab_size, src_len, tgt_len
    block = 6 * D * D + 2 * D * D + 4 * D * F  # q/k/v, output projection, feed-forward: per token
    encoder_layer = S * block + 2 * (2 * S * S * D)
    causal_pairs = T * (T + 1) // 2
    decoder_layer = (T * block + T * 4 * D * D + S * 4 * D * D
                     + 2 * (2 * causal_pairs * D) + 2 * (2 * T * S * D))
    output = 2 * T * D * V
    copy = 0
    if cfg.copy:
        copy = 2 * T * D * D + 2 * S * D * D + 2 * (2 * T * S * D) + 2 * T * S * S + 2 * T * 2 * D
    return cfg.enc_layers * encoder_layer + cfg.dec_layers * decoder_layer + output + copy


def forward_flops(cfg: ModelConfig, vocab_size: int, batch: int, src_len: int, tgt_len: int) -> int:
    """Matmul FLOPs of one forward pass over ``batch`` sequences all of the given lengths."""
    return batch * sequence_forward_flops(cfg, vocab_size, src_len, tgt_len)


def train_step_flops(cfg: ModelConfig, vocab_size: int, batch: int, src_len: int, tgt_len: int) -> int:
    """Forward + backward: 3 x the forward FLOPs (module docstring)."""
    return 3 * forward_flops(cfg, vocab_size, batch, src_len, tgt_len)


def unpadded_train_flops(cfg: ModelConfig, vocab_size: int, src_lengths: torch.Tensor,
                         tgt_lengths: torch.Tensor) -> int:
    """Forward + backward FLOPs of sequences at their real lengths: the sum of each pair's
    ``train_step_flops`` at batch 1, whatever the batch was padded to.

    Padding is work the model does but needs not: counting the padded (B, S) x (B, T) shape would
    credit it as useful and inflate MFU by the batch's padding share. One vectorised pass over the
    (B,) lengths, so a batch of hundreds of rows costs a few tensor ops, not a Python loop.
    """
    src, tgt = src_lengths.to("cpu", torch.int64), tgt_lengths.to("cpu", torch.int64)
    return int(3 * sequence_forward_flops(cfg, vocab_size, src, tgt).sum())


# --------------------------------------------------------------------------- the peak
PEAK_WARMUP_S = 1.0  # products run untimed first: CPU thread pool start, clock ramp, GPU kernel choice
PEAK_REPEATS = 10  # products then timed, one by one; the best is the peak


def peak_dtype(device: torch.device) -> torch.dtype:
    """The dtype training runs its matmuls in: bf16 on a GPU (autocast), fp32 on the CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def peak_matrix_size(device: torch.device) -> int:
    """n of the (n, n) @ (n, n) products the peak is timed on, one per device type everywhere.

    2048 on the CPU: ~90 ms a product on 2 cores (17 GFLOP), long enough for the timer and the
    BLAS blocking, short enough that warm-up and repeats take ~2 s at a stage's start (4096 takes
    most of a second a product). 8192 on a GPU: about 1.5 ms in bf16 on an H200, where 4096
    products read 15-35 % below it, which would inflate MFU.
    """
    return 2048 if device.type == "cpu" else 8192


def measure_peak_flops(device: torch.device, dtype: torch.dtype | None = None, n: int | None = None,
                       repeats: int = PEAK_REPEATS, warmup_s: float = PEAK_WARMUP_S) -> float:
    """Measured matmul FLOP/s: the best of ``repeats`` timed (n, n) @ (n, n) products, after at
    least ``warmup_s`` seconds of untimed ones; the one measurement the train stage and the
    benchmarks share (``dtype``: the compute dtype, :func:`peak_dtype` by default; ``n``:
    :func:`peak_matrix_size` by default).

    Best, not median: a peak is the best the hardware did, and anything slower in a repeat
    (a neighbour's load, an interrupt, a clock dip) is noise, not capacity; the median moved with
    the machine's mood (184 then 254 GFLOP/s on the same 2-core CPU between two CI runs, MFU 55 %
    then 39 %). Warm, because a cold thread pool and clock read about half the steady peak (89
    against 170-206 GFLOP/s at a stage's start), which once put MFU above 1. The operands come
    from a generator of their own, so measuring never moves the global RNG (a training run's
    initial weights do not depend on whether or when it measured).
    """
    dtype = peak_dtype(device) if dtype is None else dtype
    n = peak_matrix_size(device) if n is None else n
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    warm_until = time.perf_counter() + warmup_s
    while True:  # at least one product, then until warm_until
        torch.mm(a, b)
        sync()
        if time.perf_counter() >= warm_until:
            break
    seconds = _cuda_event_seconds(a, b, repeats) if device.type == "cuda" else _wall_seconds(a, b, repeats)
    return 2 * n**3 / min(seconds)


def peak_timing(device: torch.device) -> str:
    """How :func:`measure_peak_flops` times a product on ``device`` (recorded beside a peak)."""
    return PEAK_TIMING_CUDA if device.type == "cuda" else PEAK_TIMING_WALL


PEAK_TIMING_CUDA = "CUDA events"
PEAK_TIMING_WALL = "wall clock"


def _wall_seconds(a: torch.Tensor, b: torch.Tensor, repeats: int) -> list[float]:
    """Each product's wall-clock time (CPU: the call returns when the product is done)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return times


def _cuda_event_seconds(a: torch.Tensor, b: torch.Tensor, repeats: int) -> list[float]:
    """Each product's GPU time, between CUDA events queued around it, with one sync at the end.

    A host clock around ``mm`` + ``synchronize`` adds the launch and the sync's round trip to a
    product of ~1.4 ms (8192³ bf16 on an H200): on the H200 this project was lent, that read
    558-656 TFLOP/s across four measurements of one session, where the machine's notes record
    769-798 for the same product timed on the device: a peak low by a fifth or more, an MFU as much
    too high. The events sit in the stream, so they time the kernel alone while the host keeps the
    queue ahead of the GPU.
    """
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for start, end in events:
        start.record()
        torch.mm(a, b)
        end.record()
    torch.cuda.synchronize(a.device)
    return [start.elapsed_time(end) / 1e3 for start, end in events]  # elapsed_time is in ms


# Dense (no 2:4 sparsity) tensor-core peaks from NVIDIA's datasheets, FLOP/s; "fp32" is the plain
# CUDA-core figure, "tf32" what fp32 matmuls reach when TF32 is allowed. Matched on the words of
# torch.cuda.get_device_name, most specific first ("NVIDIA H100 PCIe" before "NVIDIA H100 80GB
# HBM3"). A card not listed, and every CPU, gets None: no guessed peaks.
_HOPPER_SXM = {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12}
_HOPPER_NVL = {"fp32": 60e12, "tf32": 417.5e12, "bf16": 835.5e12, "fp16": 835.5e12}
DATASHEET_PEAKS: tuple[tuple[frozenset[str], dict[str, float]], ...] = (
    (frozenset({"h100", "pcie"}), {"fp32": 51e12, "tf32": 378e12, "bf16": 756e12, "fp16": 756e12}),
    (frozenset({"h100", "nvl"}), _HOPPER_NVL),
    (frozenset({"h200", "nvl"}), _HOPPER_NVL),
    (frozenset({"h100"}), _HOPPER_SXM),
    (frozenset({"h200"}), _HOPPER_SXM),
    (frozenset({"a100"}), {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12}),
)


def _matmul_kind(dtype: torch.dtype) -> str | None:
    """The datasheet column a matmul in ``dtype`` runs at: fp32 ones run on TF32 tensor cores when
    allowed (the train stage allows it on a GPU: nmt.training.precision.enable_tf32)."""
    if dtype == torch.float32:
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype)


def theoretical_peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The datasheet's dense peak FLOP/s of this GPU in ``dtype``; None for CPUs and unknown cards."""
    if device.type != "cuda":
        return None
    words = set(re.split(r"[^a-z0-9]+", torch.cuda.get_device_name(device).lower()))
    kind = _matmul_kind(dtype)
    for needed, peaks in DATASHEET_PEAKS:
        if needed <= words:
            return peaks.get(kind) if kind else None
    return None


@dataclass(frozen=True)
class Peak:
    """The denominator of MFU (measured) and, where known, the datasheet's figure beside it."""

    measured: float  # FLOP/s: measure_peak_flops, on this device, in ``dtype``
    theoretical: float | None  # theoretical_peak_flops: None on CPUs and unknown cards
    dtype: torch.dtype
    timing: str = PEAK_TIMING_WALL  # peak_timing: how each product was timed


def measure_peak(device: torch.device, dtype: torch.dtype | None = None) -> Peak:
    """Both peaks of ``device`` in ``dtype`` (:func:`peak_dtype` by default): what MFU divides by."""
    dtype = peak_dtype(device) if dtype is None else dtype
    return Peak(measure_peak_flops(device, dtype), theoretical_peak_flops(device, dtype), dtype, peak_timing(device))
