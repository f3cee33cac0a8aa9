"""Transformer-base in bf16: MFU of our training step, and which lever gets it to the target (issue 26).

The shape of Vaswani et al.'s base model: d_model 512, 8 heads, 6+6 pre-LN layers, feed-forward
2048, dropout 0.1, vocabulary 8,000 (tied embedding), no copy mechanism; 128 full-length pairs of
128 source and 128 target tokens a batch (16,384 target tokens), random ids. The step is ours, as
in ``benchmarks.train_step`` (the same model builder, the train stage's ``optimizer_step``: summed
label-smoothed loss, clipping, fused AdamW), under bf16 autocast (``train.precision: bf16``).

Variants (:data:`VARIANTS`), each its own model, timed after warm steps (a compiled one compiles
in them) with the device synchronised around every step, median of the timed steps: eager;
``torch.compile`` (static shapes); a 32k-token batch; ``torch.compile(mode="reduce-overhead")``,
which replays the step's kernels as CUDA graphs. MFU = ``nmt.flops.train_step_flops`` of the batch
/ step time / the bf16 matmul peak measured at the start of the run (``nmt.flops.measure_peak``);
the datasheet's peak is recorded beside it, never divided by. Target: the best variant >= 40 %.

    python -m benchmarks.transformer_base --device cuda --out /tmp/transformer_base.json
    python -m benchmarks.transformer_base --device cpu --quick     # a tiny shape: the code path, in seconds

Compiled variants run on CUDA only unless named (``--variants``): a cold compile takes minutes
on a 2-core CPU. Variants start while less than ``--budget-s`` seconds have passed; the rest are
recorded as skipped, and the output file is rewritten after each variant, so a run stopped by an
outer ``timeout`` keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import describe_device, median_seconds, versions
from benchmarks.train_step import TRAIN, ours, random_batch
from nmt.config import ModelConfig
from nmt.flops import measure_peak, train_step_flops
from nmt.io import atomic_write_json
from nmt.training.precision import Precision
from nmt.training.step import optimizer_step

BASE = ModelConfig(d_model=512, n_heads=8, enc_layers=6, dec_layers=6, d_ff=2048, dropout=0.1, max_len=512, copy=False)
VOCAB, LENGTH, BATCH = 8000, 128, 128  # 128 x 128 = 16,384 target tokens a batch
# --quick: the same code on a shape a 2-core CPU steps through in milliseconds.
TINY = ModelConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ff=64, dropout=0.1, max_len=64, copy=False)
TINY_VOCAB, TINY_LENGTH, TINY_BATCH = 300, 16, 4
TARGET_MFU = 0.40
PRECISION = "bf16"


@dataclass(frozen=True)
class Variant:
    """One way to run the step: batch size (in sequences of the run's length) and torch.compile mode."""

    name: str
    batch_factor: int  # x the run's base batch (1: 16k tokens, 2: 32k)
    compile_mode: str | None  # None: eager; else torch.compile's mode ("default", "reduce-overhead")

    @property
    def compiled(self) -> bool:
        return self.compile_mode is not None


# In the order they run: the cheap eager ones first, then the compiled ones (about a minute of compiling
# each on a GPU machine), the likeliest to reach the target first, so a short device slot's budget cuts
# the least likely.
VARIANTS = (
    Variant("eager-16k", 1, None),
    Variant("eager-32k", 2, None),
    Variant("compile-32k", 2, "default"),
    Variant("cudagraphs-32k", 2, "reduce-overhead"),
    Variant("compile-64k", 4, "default"),
    Variant("cudagraphs-64k", 4, "reduce-overhead"),
    Variant("compile-16k", 1, "default"),
)
BY_NAME = {v.name: v for v in VARIANTS}


@dataclass(frozen=True)
class Shape:
    """The run's model and batch: Transformer-base, or the tiny one of --quick."""

    model: ModelConfig
    vocab: int
    length: int
    batch: int

    def describe(self) -> dict:
        m = self.model
        return {"d_model": m.d_model, "n_heads": m.n_heads, "enc_layers": m.enc_layers, "dec_layers": m.dec_layers,
                "d_ff": m.d_ff, "vocab": self.vocab, "length": self.length, "batch": self.batch,
                "batch_tokens": self.batch * self.length}

    @classmethod
    def of(cls, quick: bool) -> Shape:
        return cls(TINY, TINY_VOCAB, TINY_LENGTH, TINY_BATCH) if quick else cls(BASE, VOCAB, LENGTH, BATCH)


def default_variants(device: torch.device) -> list[Variant]:
    """Every variant on a GPU; the eager ones elsewhere (module docstring)."""
    return [v for v in VARIANTS if device.type == "cuda" or not v.compiled]


def measure_variant(variant: Variant, shape: Shape, device: torch.device, peak_flops: float, warmup: int,
                    repeats: int) -> dict:
    """One variant's median step time, tokens/s and MFU; the first step's time (compilation included)."""
    torch.manual_seed(0)
    if variant.compiled:
        torch._dynamo.reset()  # each compiled variant compiles its own model from scratch
    batch_size = shape.batch * variant.batch_factor
    batch = random_batch(shape.length, device, batch=batch_size, vocab=shape.vocab)
    model, optimizer, scheduler = ours(device, shape.model, shape.vocab)
    stepped = torch.compile(model, mode=variant.compile_mode, dynamic=False) if variant.compiled else model
    precision = Precision.of(PRECISION, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        optimizer_step(stepped, [batch], optimizer, scheduler, TRAIN, precision=precision)

    t0 = time.perf_counter()
    step()  # the first: compilation, kernel selection, allocator growth
    first_s = time.perf_counter() - t0
    step_s = median_seconds(step, repeats, device, warmup=max(0, warmup - 1))
    flops = train_step_flops(shape.model, shape.vocab, batch_size, shape.length, shape.length)
    out = {"batch": batch_size, "tokens": batch.n_tokens, "compile_mode": variant.compile_mode,
           "first_step_s": round(first_s, 3), "step_s": round(step_s, 6), "tok_s": round(batch.n_tokens / step_s),
           "step_flops": flops, "mfu": significant(flops / step_s / peak_flops)}
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def run(device: torch.device, quick: bool = False, variants: list[Variant] | None = None, budget_s: float = 240.0,
        out: Path | None = None) -> dict:
    """Every variant in turn (until ``budget_s`` has passed), the best by MFU, and both peaks.

    A variant that raises (out of memory, a compile error) is recorded under ``failed`` and the
    next one runs. With ``out``, the results so far are written there after each variant.
    """
    started = time.perf_counter()
    shape = Shape.of(quick)
    variants = default_variants(device) if variants is None else variants
    warmup, repeats = (1, 2) if quick else (5, 20)
    peak = measure_peak(device, torch.bfloat16)
    results: dict = {
        "model": shape.describe(), "precision": PRECISION, "optimizer": "AdamW (fused)", "target_mfu": TARGET_MFU,
        "peak_flops": round(peak.measured), "peak_flops_dtype": "bfloat16", "peak_timing": peak.timing,
        "theoretical_peak_flops": None if peak.theoretical is None else round(peak.theoretical),
        "variants": {}, "skipped": {}, "failed": {},
        "device": describe_device(device), "versions": versions(), "quick": quick,
    }
    for variant in variants:
        if time.perf_counter() - started > budget_s:
            results["skipped"][variant.name] = f"time budget of {budget_s:.0f} s spent"
        else:
            try:
                results["variants"][variant.name] = measure_variant(variant, shape, device, peak.measured, warmup,
                                                                    repeats)
            except Exception as e:  # noqa: BLE001 - one variant's failure (out of memory, a compile error) is a result
                results["failed"][variant.name] = f"{type(e).__name__}: {str(e)[:500]}"
            release(device)
        results |= best_of(results["variants"])
        results["seconds"] = round(time.perf_counter() - started, 1)
        if out is not None:
            atomic_write_json(out, results)
    return results


def significant(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits: a tiny --quick shape's MFU (1e-5) must not round to 0."""
    return float(f"{x:.{digits}g}")


def release(device: torch.device) -> None:
    """Give the finished variant's memory back, so the next one's peak and fit are its own."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def best_of(variants: dict[str, dict]) -> dict:
    """The variant with the highest MFU: its name, MFU and tokens/s (None before any has run)."""
    if not variants:
        return {"best": None, "best_mfu": None, "best_tok_s": None}
    name = max(variants, key=lambda n: variants[n]["mfu"])
    return {"best": name, "best_mfu": variants[name]["mfu"], "best_tok_s": variants[name]["tok_s"]}


def parse_variants(names: str) -> list[Variant]:
    """``--variants a,b``: known names only (argparse reports the unknown ones and the known list)."""
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in BY_NAME]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {', '.join(unknown) or '(none given)'}; "
                                         f"known: {', '.join(BY_NAME)}")
    return [BY_NAME[n] for n in chosen]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda or cpu")
    ap.add_argument("--quick", action="store_true", help="a tiny model and batch: the code path, in seconds")
    ap.add_argument("--variants", type=parse_variants, default=None,
                    help=f"comma-separated, of {', '.join(BY_NAME)} (default: all on cuda, the eager ones on cpu)")
    ap.add_argument("--budget-s", type=float, default=240.0, help="start no variant after this many seconds")
    ap.add_argument("--out", type=Path, default=None, help="JSON file written after each variant (default: print only)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda, but torch sees no CUDA device here (use --device cpu)")
    results = run(device, args.quick, args.variants, args.budget_s, args.out)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
