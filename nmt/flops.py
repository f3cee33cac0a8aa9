"""Model FLOPs of a training step, and the device's measured matmul peak: the two halves of MFU.

MFU (model FLOPs utilisation, Chowdhery et al. 2022) = FLOPs the model needs per step / step time
/ peak FLOP/s. The numerator is counted analytically from the shapes below, never from a profiler
(which would also count recomputation and padding waste as "useful"); the denominator is
*measured* on the device in the same process by a large matrix multiply, never a datasheet number.

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

import statistics
import time

import torch

from nmt.config import ModelConfig


def forward_flops(cfg: ModelConfig, vocab_size: int, batch: int, src_len: int, tgt_len: int) -> int:
    """Matmul FLOPs of one forward pass over ``batch`` sequences of the given (padded) lengths."""
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
    per_sequence = cfg.enc_layers * encoder_layer + cfg.dec_layers * decoder_layer + output + copy
    return batch * per_sequence


def train_step_flops(cfg: ModelConfig, vocab_size: int, batch: int, src_len: int, tgt_len: int) -> int:
    """Forward + backward: 3 x the forward FLOPs (module docstring)."""
    return 3 * forward_flops(cfg, vocab_size, batch, src_len, tgt_len)


def peak_dtype(device: torch.device) -> torch.dtype:
    """The dtype training runs its matmuls in: bf16 on a GPU (autocast), fp32 on the CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def measure_peak_flops(device: torch.device, n: int = 4096, repeats: int = 5,
                       dtype: torch.dtype | None = None, warmup_s: float = 0.0) -> float:
    """Measured matmul FLOP/s: the median of ``repeats`` timed (n, n) @ (n, n) products.

    Median, not best: it is what a long run sees, and one lucky repeat does not inflate it. The
    operands come from a generator of their own, so measuring never moves the global RNG (a
    training run's initial weights do not depend on whether or when it measured). Warm-up runs
    products for at least ``warmup_s`` seconds (and at least one): a single product leaves a cold
    CPU thread pool and clock, and read about half the steady peak at a stage's start (89 against
    170-206 GFLOP/s on 2 cores), which put MFU above 1.
    """
    dtype = peak_dtype(device) if dtype is None else dtype
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warm_until = time.perf_counter() + warmup_s
    while True:  # warm-up: kernel selection, thread pool start, clock ramp
        torch.mm(a, b)
        sync()
        if time.perf_counter() >= warm_until:
            break
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def training_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """The peak the train stage's MFU divides by, measured as training starts in its compute dtype.

    8192² on a GPU, about 1.5 ms a product on an H200: 4096² products there read 15-35 % below
    the ~790 TFLOP/s (bf16) that 8192² ones reach, which would inflate MFU. 1024² on the CPU
    (about 10 ms a product on 2 cores; 4096² takes seconds), after half a second of warm-up.
    """
    if device.type == "cuda":
        return measure_peak_flops(device, n=8192, repeats=10, dtype=dtype, warmup_s=0.5)
    return measure_peak_flops(device, n=1024, repeats=10, dtype=dtype, warmup_s=0.5)
