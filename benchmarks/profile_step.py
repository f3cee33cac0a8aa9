"""Where the time goes: torch.profiler tables of our training step and our beam search.

    .venv/bin/python -m benchmarks.profile_step [--length 128] [--rows 12]

The README's account of the targets this machine misses is read off these tables: the share of
the matrix multiplies (the floor both implementations share) against everything else.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.train_step import SHAPE, TRAIN, VOCAB, ours, random_batch
from nmt.decoding.search import beam_search
from nmt.model import Transformer
from nmt.training.step import optimizer_step

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu")


def table(prof, rows: int) -> str:
    averages = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in averages)
    matmul = sum(e.self_cpu_time_total for e in averages if e.key in MATMULS)
    return (averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)
            + f"\nmatrix multiplies (mm, addmm, bmm, fused attention): {matmul / total:.0%} of self CPU time\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=128, help="source and target length of the training batch")
    ap.add_argument("--rows", type=int, default=12, help="operators shown per table")
    args = ap.parse_args()
    device = torch.device("cpu")

    batch = random_batch(args.length, device)
    model, optimizer, scheduler = ours(device)
    for _ in range(2):
        optimizer_step(model, [batch], optimizer, scheduler, TRAIN)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            optimizer_step(model, [batch], optimizer, scheduler, TRAIN)
    print(f"training step, batch 64 x {args.length} tokens, 3 steps")
    print(table(prof, args.rows))

    torch.manual_seed(0)
    decoder = Transformer(SHAPE, VOCAB).eval()
    src = torch.randint(3, VOCAB, (64, 24))
    mask = torch.ones_like(src, dtype=torch.bool)
    with torch.no_grad():
        beam_search(decoder, src, mask, 1, -1, 32, beam_size=4)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            beam_search(decoder, src, mask, 1, -1, 32, beam_size=4)
    print("beam search, beam 4, 64 sources x 24 tokens, 32 output tokens")
    print(table(prof, args.rows))


if __name__ == "__main__":
    main()
