"""Every benchmark in one run: ``make bench`` (about 10 minutes on 2 cores) or ``--quick`` (< 2).

    .venv/bin/python -m benchmarks [--quick] [--device cpu|cuda] [--out benchmarks/results.json]

Each figure is the median of several warm repeats; comparisons (ours vs torch.nn.Transformer,
vs Hugging Face BART, vs bare tiktoken) run in the same process, one after the other, on the same
inputs. Only ratios are meant to travel between machines; absolute numbers name their device.
MFU divides the analytic FLOPs of a step (nmt/flops.py) by its time and by the matmul peak
measured at the start of this run, never a datasheet number. The markdown table printed at the
end is the README's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks import decoding, tokenize_speed, train_step
from benchmarks.common import describe_device, versions
from nmt.flops import measure_peak_flops, peak_dtype
from nmt.io import atomic_write_json

LENGTHS = (24, 128)


def run(device: torch.device, quick: bool) -> dict:
    started = time.perf_counter()
    repeats = 3 if quick else 7
    peak = measure_peak_flops(device, n=2048 if quick else 4096, repeats=repeats)
    shapes = {str(n): train_step.measure_in_subprocess(n, device.type, repeats, peak) for n in LENGTHS}
    main = shapes[str(LENGTHS[-1])]  # the headline shape: MFU's target is set on the 128-token one
    results = {
        "train_tok_s": main["train_tok_s"],
        "torch_transformer_tok_s": main["torch_transformer_tok_s"],
        "train_speedup_vs_torch": main["train_speedup_vs_torch"],
        "mfu": main["mfu"],
        "peak_flops": round(peak),
        "peak_flops_dtype": str(peak_dtype(device)).removeprefix("torch."),
        **decoding.kv_cache(device, repeats, steps=32 if quick else 128),
        **decoding.beam_vs_hf(device, max(1, repeats // 2) if quick else 3, steps=8 if quick else 32),
        **tokenize_speed.tokenizer_speed(repeats, max_lines=20_000 if quick else 200_000),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in shapes.values()),
        **train_step.data_wait_share(device, steps=5 if quick else 40),
        "by_length": shapes,
        "device": describe_device(device),
        "versions": versions(),
        "quick": quick,
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def table(r: dict) -> str:
    """The README's table: each measurement, its value, the target the issue set."""
    s24, s128 = r["by_length"]["24"], r["by_length"]["128"]
    rows = [
        ("training tok/s, length 24: ours / nn.Transformer", f"{s24['train_tok_s']:,} / {s24['torch_transformer_tok_s']:,}"
         f" = **{s24['train_speedup_vs_torch']:.2f}x**", ">= 1.2x"),
        ("training tok/s, length 128: ours / nn.Transformer", f"{s128['train_tok_s']:,} / "
         f"{s128['torch_transformer_tok_s']:,} = **{s128['train_speedup_vs_torch']:.2f}x**", ">= 1.2x"),
        ("MFU, length 128 (length 24)", f"**{r['mfu']:.1%}** ({s24['mfu']:.1%}) of {r['peak_flops'] / 1e9:.0f} GFLOP/s "
         f"measured {r['peak_flops_dtype']}", ">= 60 %"),
        ("greedy, KV cache vs none", f"{r['greedy_uncached_s']:.2f} s / {r['greedy_cached_s']:.2f} s = "
         f"**{r['kv_cache_speedup']:.1f}x** ({r['greedy_output_tokens']} tokens)", ">= 3x"),
        ("beam 4 x 64 sources, ours vs HF BART", f"{r['hf_bart_beam_s']:.2f} s / {r['beam_s']:.2f} s = "
         f"**{r['beam_speedup_vs_hf']:.2f}x** ({r['beam_output_tokens']} tokens)", ">= 1.5x"),
        ("tokenizer tok/s, ours vs tiktoken batch", f"{r['tokenize_tok_s']:,} vs {r['tiktoken_batch_tok_s']:,} = "
         f"**{r['tokenize_ratio_vs_tiktoken']:.2f}x**", ">= 0.8x, >= 1 M tok/s"),
        ("peak RSS of a training step, length 24 / 128", f"{s24['peak_rss_mb']:.0f} / {s128['peak_rss_mb']:.0f} MiB", ""),
        ("time waiting for data", f"**{r['data_wait_share']:.1%}** of the step", "< 5 %"),
    ]
    lines = ["| measurement | result | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + f"\n\n{r['device']}, torch {r['versions']['torch']}, {r['seconds']:.0f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and smaller inputs (< 2 min): a smoke run")
    ap.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when there is one)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results.json"), help="where the JSON goes")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    results = run(device, args.quick)
    atomic_write_json(args.out, results)
    print(json.dumps(results, indent=2))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
