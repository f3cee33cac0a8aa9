"""Where the time goes in each speed target `make bench` misses: torch.profiler's self CPU time per operator.

    .venv/bin/python -m benchmarks.profiles [--quick] [--out results/profiles.json]

Each section profiles the very work its benchmark times, at that benchmark's shapes (imported from
it), after warm-up, over several runs, and splits it into matrix multiplies (MATMULS: the same BLAS
kernels whoever calls them), the other operators, and the wall time outside any operator (Python,
dispatch: what a C++ engine does not pay):

- ``training`` (benchmarks.train_step, lengths 24 and 128): ours and ``nn.Transformer``'s step.
  ``bound_vs_torch`` = nn.Transformer's step ÷ our step's matmul time: what ours would reach if it
  spent nothing outside the matmuls; ``gap``: our largest other operators beside nn.Transformer's
  time in the same operator (both pay them). ``mfu`` splits MFU into its factors: the matmul share
  of the step × the matmuls' FLOP rate against the measured peak (nmt.flops, MFU's own) × the
  model's FLOPs (nmt.flops, what MFU counts) ÷ the matmul FLOPs the step executes
  (torch.utils.flop_counter); ``mfu_if_only_matmuls`` is MFU's ceiling, a step of nothing but its matmuls.
- ``beam_vs_ctranslate2`` (benchmarks.vs_ctranslate2, beam 4 × 64 sources × 32 tokens), fp32 and
  int8: our beam search beside CTranslate2's fastest setting on the same work, timed in turns.
  ``bound_no_overhead`` = theirs ÷ our operator time, ``bound_matmul_only`` = theirs ÷ our matmul
  time (ratios as the benchmark's: ours tok/s ÷ theirs).
- ``int8`` (benchmarks.int8: the exported model decoding the test split with its recorded
  settings): the time inside the layers int8 quantizes (each ``nn.Linear`` in float32, its dynamic
  int8 swap, marked around every call: the tied output projection stays float32 and counts as the
  rest). ``amdahl_bound`` = 1 / (1 − the linear share of the float32 decode), the speedup
  infinitely fast int8 linears would give; ``linear_time_ratio`` = int8's linear time ÷ float32's.

Shares are of the profiled run's own wall time; a bound applies them to the unprofiled wall time
(``wall_ms``, timed as the benchmark times it). ``profiler_inflation`` = profiled ÷ unprofiled
wall time: the profiler's bookkeeping costs about a microsecond an operator, and a figure far
above 1 means the machine was busy. Run it with nothing else on the machine; ``make report``
renders docs/benchmarks.md's table from the file.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import int8 as int8_bench
from benchmarks import vs_ctranslate2
from benchmarks.common import interleaved_medians
from benchmarks.train_step import BATCH, LENGTHS, SHAPE, TRAIN, VOCAB, ours, random_batch, torch_baseline, torch_step
from nmt.config import ModelConfig
from nmt.ct2 import convert, import_ctranslate2
from nmt.data.pairs import read_jsonl
from nmt.decoding.translator import Translator
from nmt.flops import measure_peak_flops, train_step_flops
from nmt.io import atomic_write_json
from nmt.results import git, installed_versions, machine
from nmt.training.step import optimizer_step

OUT = Path("results/profiles.json")
CPU = torch.device("cpu")
# The matrix multiplies: the floor both implementations share (the same BLAS kernels for the same FLOPs).
MATMULS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
                     "aten::_scaled_dot_product_flash_attention_for_cpu",
                     "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
                     "quantized::linear_dynamic"})
LINEAR_MARK = "linear layer"  # record_function range around each call of a layer int8 quantizes
TOP_OPS, GAP_OPS = 8, 5
RUNS, QUICK_RUNS = 3, 1  # profiled (and timed) runs of each piece of work, after the warm-up
INT8_PAIRS, INT8_QUICK_PAIRS = 300, 32


# --------------------------------------------------------------------------- profiling
@dataclass(frozen=True)
class Profile:
    """One profiled piece of work, per run: seconds by operator and by annotation, and its wall time."""

    ops: dict[str, float]  # self CPU seconds of each operator
    ranges: dict[str, float]  # inclusive seconds of each user annotation (record_function range)
    wall_s: float  # wall seconds while profiled


def profile_ops(fn: Callable[[], object], runs: int) -> Profile:
    """``fn`` profiled over ``runs`` runs, after the caller's warm-up. User annotations (LINEAR_MARK,
    the optimizer's step) are kept apart from the operators: their self time is Python between
    operators, not an operator."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(runs):
            fn()
        wall = time.perf_counter() - t0
    ops, ranges = {}, {}
    for e in prof.key_averages():
        if e.is_user_annotation:
            ranges[e.key] = e.cpu_time_total / 1e6 / runs
        else:
            ops[e.key] = e.self_cpu_time_total / 1e6 / runs
    return Profile(ops, ranges, wall / runs)


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def breakdown(p: Profile, wall_s: float, top: int = TOP_OPS) -> dict:
    """Operator time split into matmuls (MATMULS) and the rest, the ``top`` operators, and the wall time
    outside any operator; shares are of the profiled wall time, ``wall_ms`` the unprofiled run's."""
    total = sum(p.ops.values())
    matmul = sum(s for op, s in p.ops.items() if op in MATMULS)
    ranked = sorted(p.ops.items(), key=lambda kv: -kv[1])[:top]
    return {"wall_ms": _ms(wall_s), "profiled_wall_ms": _ms(p.wall_s), "profiler_inflation": round(p.wall_s / wall_s, 4),
            "op_ms": _ms(total), "matmul_ms": _ms(matmul), "rest_ms": round(_ms(total) - _ms(matmul), 3),
            "outside_ops_ms": round(_ms(p.wall_s) - _ms(total), 3),
            "op_share": round(total / p.wall_s, 4), "matmul_share": round(matmul / p.wall_s, 4),
            "top_ops": [{"op": op, "ms": _ms(s), "share": round(s / p.wall_s, 4)} for op, s in ranked]}


def largest_others(ours: dict[str, float], theirs: dict[str, float], n: int = GAP_OPS) -> list[dict]:
    """Our ``n`` largest operators outside the matmuls, each with the other side's time in it."""
    others = sorted(((op, s) for op, s in ours.items() if op not in MATMULS), key=lambda kv: -kv[1])[:n]
    return [{"op": op, "ours_ms": _ms(s), "theirs_ms": _ms(theirs.get(op, 0.0))} for op, s in others]


def executed_matmul_flops(fn: Callable[[], object]) -> int:
    """The matmul FLOPs one run of ``fn`` executes, as torch.utils.flop_counter counts them."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# --------------------------------------------------------------------------- training
def training_at(length: int, peak: float, runs: int, cfg: ModelConfig = SHAPE, vocab: int = VOCAB,
                batch: int = BATCH) -> dict:
    """Ours and nn.Transformer's training step at one length, as benchmarks.train_step times them."""
    torch.manual_seed(0)
    data = random_batch(length, CPU, batch=batch, vocab=vocab)
    model, optimizer, scheduler = ours(CPU, cfg, vocab)
    baseline, base_opt = torch_baseline(CPU, cfg, vocab)
    steps = {"ours": lambda: optimizer_step(model, [data], optimizer, scheduler, TRAIN),
             "torch": lambda: torch_step(baseline, data, base_opt)}
    for step in steps.values():  # warm-up, as benchmarks.train_step does
        step(), step()
    wall = interleaved_medians(steps, runs)
    profiles = {name: profile_ops(step, runs) for name, step in steps.items()}
    sides = {name: breakdown(profiles[name], wall[name]) for name in steps}
    our_matmul_s = sides["ours"]["matmul_share"] * wall["ours"]  # the profiled share of the unprofiled step
    return {
        "length": length,
        **sides,
        "speedup_vs_torch": round(wall["torch"] / wall["ours"], 3),
        "bound_vs_torch": round(wall["torch"] / our_matmul_s, 3),
        "gap": largest_others(profiles["ours"].ops, profiles["torch"].ops),
        "mfu": mfu_factors(executed_matmul_flops(steps["ours"]), train_step_flops(cfg, vocab, batch, length, length),
                           our_matmul_s, wall["ours"], peak),
    }


def mfu_factors(executed: int, model_flops: int, matmul_s: float, wall_s: float, peak: float) -> dict:
    """MFU = matmul share of the step × matmul FLOP rate / peak × model FLOPs / executed matmul FLOPs."""
    share, efficiency, useful = matmul_s / wall_s, executed / matmul_s / peak, model_flops / executed
    return {"executed_matmul_flops": executed, "model_flops": model_flops, "peak_flop_s": round(peak),
            "matmul_flop_s": round(executed / matmul_s), "matmul_share_of_step": _figures(share),
            "matmul_efficiency": _figures(efficiency), "useful_share": _figures(useful),
            "mfu": _figures(model_flops / wall_s / peak), "mfu_if_only_matmuls": _figures(efficiency * useful)}


def _figures(x: float) -> float:
    """``x`` to 4 significant figures: a tiny model's MFU of 0.0003 keeps its digits too."""
    return float(f"{x:.4g}")


def training(quick: bool, lengths: tuple[int, ...] = LENGTHS, peak: float | None = None, **shape) -> dict:
    """``training_at`` each of ``lengths``; ``peak``: measured here with nmt.flops (MFU's own) unless given."""
    peak = measure_peak_flops(CPU) if peak is None else peak
    runs = QUICK_RUNS if quick else RUNS
    return {"peak_flop_s": round(peak), "runs": runs,
            "by_length": {str(n): training_at(n, peak, runs, **shape) for n in lengths}}


# --------------------------------------------------------------------------- beam search vs CTranslate2
def beam_vs_ctranslate2(quick: bool, batch: int = vs_ctranslate2.SOURCES, beam: int = vs_ctranslate2.BEAM,
                        cfg: ModelConfig = SHAPE, vocab: int = VOCAB, steps: int | None = None) -> dict:
    """Our beam search (fp32, int8) profiled at benchmarks.vs_ctranslate2's setting, beside CTranslate2's fastest."""
    try:
        import_ctranslate2()
    except ModuleNotFoundError as e:
        return {"skipped": f"not run: {e}"}
    steps = steps or (vs_ctranslate2.QUICK_STEPS if quick else vs_ctranslate2.STEPS)
    batch_sizes = vs_ctranslate2.QUICK_BATCH_SIZES if quick else vs_ctranslate2.BATCH_SIZES
    runs = QUICK_RUNS if quick else vs_ctranslate2.REPEATS
    model, src, mask = vs_ctranslate2.benchmark_model(batch, cfg, vocab)
    sources = [[str(i) for i in row] for row in src.tolist()]
    searches = vs_ctranslate2.our_beam_searches(model, src, mask, steps, beam)
    out: dict = {"sources": batch, "beam": beam, "output_tokens": steps, "runs": runs}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = convert(model, Path(tmp) / "ct2", vs_ctranslate2.BOS, vs_ctranslate2.EOS)
        for kind, compute_type in vs_ctranslate2.COMPUTE_TYPES.items():
            theirs = vs_ctranslate2.ct2_settings(model_dir, sources, beam, steps, compute_type, batch_sizes)
            out[kind] = beam_kind(searches[kind], theirs, runs)
    return out


def beam_kind(ours_fn: Callable[[], None], theirs: dict[str, Callable[[], None]], runs: int) -> dict:
    """One compute type: our search's operators and the time outside them, CTranslate2's fastest
    setting, and the bounds (our operator / matmul shares applied to our unprofiled wall time)."""
    for fn in (ours_fn, *theirs.values()):  # warm-up
        fn()
    wall = interleaved_medians({"ours": ours_fn, **theirs}, runs)
    ours_s = wall.pop("ours")
    fastest = min(wall, key=wall.__getitem__)
    ours = breakdown(profile_ops(ours_fn, runs), ours_s)
    return {"ours": ours, "ctranslate2_setting": fastest, "ctranslate2_wall_ms": _ms(wall[fastest]),
            "ratio": round(wall[fastest] / ours_s, 3),
            "bound_no_overhead": round(wall[fastest] / (ours_s * ours["op_share"]), 3),
            "bound_matmul_only": round(wall[fastest] / (ours_s * ours["matmul_share"]), 3)}


# --------------------------------------------------------------------------- int8 decoding
@contextlib.contextmanager
def marked_linears(model: nn.Module) -> Iterator[None]:
    """A LINEAR_MARK range around every call of each layer int8 quantizes (nn.Linear, or its int8 swap)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    open_ranges: dict[int, record_function] = {}

    def enter(module: nn.Module, args: object) -> None:
        open_ranges[id(module)] = record_function(LINEAR_MARK).__enter__()

    def leave(module: nn.Module, args: object, output: object) -> None:
        open_ranges.pop(id(module)).__exit__(None, None, None)

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, DynamicQuantizedLinear))]
    handles = [h for m in layers for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def int8_side(translator: Translator, texts: list[str], wall_s: float) -> dict:
    """One translator's whole decode of ``texts`` in benchmarks.int8's chunks (so the same batches as
    timed): its operators, and the share of the (profiled) decode inside the linear layers."""
    def decode() -> None:
        for start in range(0, len(texts), int8_bench.CHUNK):
            with torch.inference_mode():
                translator.translate(texts[start : start + int8_bench.CHUNK])

    with marked_linears(translator.model):
        p = profile_ops(decode, 1)
    linear_s = p.ranges.get(LINEAR_MARK, 0.0)
    return {"linear_ms": _ms(linear_s), "linear_share": round(linear_s / p.wall_s, 4), **breakdown(p, wall_s)}


def int8(quick: bool, model_dir: Path = int8_bench.MODEL, data: Path = int8_bench.DATA,
         n: int | None = None) -> dict:
    """The exported model's float32 and int8 decodes of the first ``n`` test descriptions, profiled."""
    reason = int8_bench.missing(model_dir, data)
    if reason is not None:
        return {"skipped": reason}
    texts = [r["nl"] for r in read_jsonl(data)][: n or (INT8_QUICK_PAIRS if quick else INT8_PAIRS)]
    translators = {"fp32": Translator.from_pretrained(model_dir, device="cpu"),
                   "int8": Translator.from_pretrained(model_dir, device="cpu", quantize="int8")}
    for t in translators.values():  # warm-up, as benchmarks.int8 does
        t.translate(texts[:8])
    _, seconds = int8_bench.decode_in_turns(translators, texts, int8_bench.CHUNK)
    sides = {name: int8_side(t, texts, seconds[name]) for name, t in translators.items()}
    fp32, q8 = sides["fp32"], sides["int8"]
    return {"model": str(model_dir), "data": str(data), "n": len(texts),
            "decoding": translators["fp32"].defaults.recorded(), **sides,
            "speedup": round(seconds["fp32"] / seconds["int8"], 3),
            "amdahl_bound": round(1 / (1 - fp32["linear_share"]), 3),
            "linear_time_ratio": round(q8["linear_ms"] / fp32["linear_ms"], 3)}


# --------------------------------------------------------------------------- the results file
def record(sections: dict, quick: bool, seconds: float, command: list[str], root: Path = Path(".")) -> dict:
    """The results file: the sections, with the command, commit, date and machine that measured them."""
    return {"command": " ".join(command), "quick": quick, "commit": git(root, "rev-parse", "HEAD"),
            "dirty": bool(git(root, "status", "--porcelain", "--untracked-files=no")),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine() | installed_versions(("ctranslate2",)), "threads": torch.get_num_threads(),
            "seconds": round(seconds, 1), **sections}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"a smoke run: {QUICK_RUNS} run per profile, {vs_ctranslate2.QUICK_STEPS}-token beam "
                         f"searches, {INT8_QUICK_PAIRS} descriptions for int8 (same shapes otherwise)")
    ap.add_argument("--out", type=Path, default=OUT, help="where the JSON results go")
    ap.add_argument("--model", type=Path, default=int8_bench.MODEL, help="exported model for the int8 section")
    ap.add_argument("--data", type=Path, default=int8_bench.DATA, help="JSON lines with 'nl', for the int8 section")
    args = ap.parse_args()
    try:  # before minutes of measuring, not after
        args.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        ap.error(f"--out {args.out}: cannot create its folder ({e.strerror}); pass a writable path")
    if args.out.is_dir():
        ap.error(f"--out {args.out} is a folder; pass a file path such as {OUT}")
    started = time.perf_counter()
    sections = {"training": training(args.quick), "beam_vs_ctranslate2": beam_vs_ctranslate2(args.quick),
                "int8": int8(args.quick, args.model, args.data)}
    command = ["python", "-m", "benchmarks.profiles", *sys.argv[1:]]
    atomic_write_json(args.out, record(sections, args.quick, time.perf_counter() - started, command))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
