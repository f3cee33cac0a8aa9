"""Decoding speed: KV-cached vs uncached greedy, batched vs one-at-a-time beam search.

    .venv/bin/python -m benchmarks.decode_speed            # writes benchmarks/decode_results.json

Random weights of the default model shape (params.yaml's `model` section); EOS is set to an id
the model never emits, so every decoder runs exactly the same number of steps. Each timing is the
median of several repeats after one warm-up, all in one process on one machine: only the ratios
are meant to travel.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from nmt.config import load_params
from nmt.decode import beam_search, greedy
from nmt.io import atomic_write_json
from nmt.model import Transformer

NEVER = -1  # an EOS id no argmax can return: every sequence runs to max_len


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def uncached_greedy(model: Transformer, src: torch.Tensor, src_mask: torch.Tensor, steps: int) -> torch.Tensor:
    """The toy way: re-run the decoder over the whole prefix at every step."""
    memory = model.encode(src, src_mask)
    ys = torch.full((src.size(0), 1), 1, dtype=torch.long)
    for _ in range(steps):
        nxt = model.decode(ys, memory, src_mask, src)[:, -1].argmax(-1)  # (B,)
        ys = torch.cat([ys, nxt[:, None]], dim=1)  # (B, t+1)
    return ys[:, 1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/decode_results.json"))
    args = ap.parse_args()

    torch.manual_seed(0)
    cfg = load_params().model
    model = Transformer(cfg, vocab_size=8000).eval()
    src = torch.randint(3, 8000, (64, 24))
    mask = torch.ones_like(src, dtype=torch.bool)

    # 1. greedy, 128 output tokens, 16 sources
    s16, m16 = src[:16], mask[:16]
    cached = median_seconds(lambda: greedy(model, s16, m16, 1, NEVER, 128), args.repeats)
    uncached = median_seconds(lambda: uncached_greedy(model, s16, m16, 128), args.repeats)
    same = [h.tokens for h in greedy(model, s16, m16, 1, NEVER, 128)] == uncached_greedy(model, s16, m16, 128).tolist()

    # 2. beam 4 over 64 sources at once vs the same 64 one at a time, 32 output tokens
    batched = median_seconds(lambda: beam_search(model, src, mask, 1, NEVER, 32, beam_size=4), args.repeats)
    single = median_seconds(
        lambda: [beam_search(model, src[i : i + 1], mask[i : i + 1], 1, NEVER, 32, beam_size=4) for i in range(64)],
        args.repeats,
    )
    results = {
        "greedy_cached_s": round(cached, 4),
        "greedy_uncached_s": round(uncached, 4),
        "kv_cache_speedup": round(uncached / cached, 2),
        "cached_equals_uncached": same,
        "beam4_batch64_s": round(batched, 4),
        "beam4_one_at_a_time_s": round(single, 4),
        "beam_batching_speedup": round(single / batched, 2),
        "model": {"d_model": cfg.d_model, "enc_layers": cfg.enc_layers, "dec_layers": cfg.dec_layers, "vocab": 8000},
        "device": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
    }
    atomic_write_json(args.out, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
