"""Every benchmark in one run: ``make bench`` (about 10 minutes on 2 cores) or ``--quick`` (< 2).

    .venv/bin/python -m benchmarks [--quick] [--device cpu|cuda] [--out benchmarks/results.json] [--skip PART,...]

Each figure is the median of several warm repeats; comparisons (ours vs torch.nn.Transformer,
vs Hugging Face BART, vs CTranslate2, vs bare tiktoken) run in the same process, on the same inputs, their repeats
timed in turns, each against the other tool's FASTEST way (every tiktoken call, every HF
``generate`` setting tried is recorded). Only ratios are meant to travel between machines;
absolute numbers name their device.

MFU divides the analytic FLOPs of a step (nmt/flops.py) by its time and by the matmul peak
measured at the start of this run with the train stage's own measurement (the best of several
warm products, nmt.flops.measure_peak_flops); the datasheet's peak is recorded beside it for the
GPUs nmt.flops knows, never divided by. The peak is measured again at the end (drift within a
run), and the MFU of the last few full runs on the same machine, torch and timed code is kept with
its spread (drift between runs): a different machine, a change to the code a training step runs,
or a ``--quick`` run starts a fresh list. The markdown
table printed at the end is the README's (nmt.report renders it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from benchmarks import decoding, int8, serve_load, tokenize_speed, train_step, vs_ctranslate2
from benchmarks.common import describe_device, versions
from nmt.flops import measure_peak, measure_peak_flops
from nmt.io import atomic_write_json
from nmt.report import benchmarks_table

LENGTHS = train_step.LENGTHS
MFU_RUNS_KEPT = 5  # enough to see a spread, few enough that an old machine state ages out
# What a timed training step runs: a change here moves the MFU by design, so it is not drift.
TIMED_CODE = ("nmt/model.py", "nmt/flops.py", "nmt/training", "benchmarks/train_step.py")
ROOT = Path(__file__).resolve().parent.parent


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def mfu_entry(results: dict, date: str) -> dict:
    """One run's headline MFU (the 128-token shape) with what it was divided by and measured on."""
    return {"mfu": results["mfu"], "peak_flops": results["peak_flops"],
            "step_s": results["by_length"][str(LENGTHS[-1])]["step_s"], "date": date}


def timed_code_digest(root: Path = ROOT) -> str:
    """A digest of TIMED_CODE's Python files as they are on disk (uncommitted changes included)."""
    digest = hashlib.sha256()
    for entry in TIMED_CODE:
        path = root / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def read_previous(path: Path) -> dict | None:
    """The results a former run left at ``path`` (None: none, or unreadable). A file from before
    ``mfu_runs`` existed carries no run forward: its peak was measured another way (a median)."""
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(previous, dict):
        return None
    previous.setdefault("mfu_runs", [])
    return previous


def comparable(previous: dict, current: dict) -> bool:
    """Whether a former run's MFU belongs in this run's spread: both full runs, same device, same
    torch, same timed code (a quick run's shorter timings, another machine's, or a faster model's
    would pass for drift; a file from before ``timed_code`` was recorded starts a fresh list)."""
    return (previous.get("quick") is False and not current["quick"]
            and previous.get("device") == current["device"]
            and previous.get("versions", {}).get("torch") == current["versions"]["torch"]
            and previous.get("timed_code") == current["timed_code"])


def mfu_history(previous: dict | None, current: dict, date: str) -> dict:
    """``mfu_runs``: the comparable former runs' headline MFU then this run's, the last
    MFU_RUNS_KEPT; ``mfu_spread``: (max - min) / max over them, None with one run."""
    former = previous.get("mfu_runs") if previous and comparable(previous, current) else None
    runs = [*(former if isinstance(former, list) else []), mfu_entry(current, date)][-MFU_RUNS_KEPT:]
    mfus = [r["mfu"] for r in runs]
    spread = round((max(mfus) - min(mfus)) / max(mfus), 4) if len(runs) > 1 else None
    return {"mfu_runs": runs, "mfu_spread": spread}


def deployment(model_dir: Path, data: Path, quick: bool) -> dict:
    """Speed where users deploy (issue 26): int8 CPU decoding of the exported model, and the model
    served by MLflow under 8 concurrent clients. Each records why it did not run when ``make repro``
    has not made the model yet (a fresh clone: the other benchmarks need no trained model)."""
    return {**int8.int8_decoding(model_dir, data, quick), **serve_load.serve_load(model_dir, data, quick)}


# The parts of a run, in order; --skip leaves some out (a short GPU slot: benchmarks/gpu.sh). The last
# three run on the CPU whatever --device: CTranslate2's deployment, the tokenizer, int8 and serving.
PARTS = ("train_step", "kv_cache", "beam_hf", "data_wait", "ctranslate2", "tokenizer", "deployment")
CPU_ONLY = ("ctranslate2", "tokenizer", "deployment")


def run(device: torch.device, quick: bool, previous: dict | None = None, model_dir: Path = int8.MODEL,
        data: Path = int8.DATA, skip: frozenset[str] = frozenset()) -> dict:
    """Every part of PARTS not in ``skip``, with the peak measured at the start and the end."""
    started, date = time.perf_counter(), now()
    repeats = 3 if quick else 7
    peak = measure_peak(device)  # the same size, warm-up and best-of as the train stage's
    results: dict = {
        "peak_flops": round(peak.measured),
        "peak_flops_dtype": str(peak.dtype).removeprefix("torch."),
        "peak_timing": peak.timing,
        "theoretical_peak_flops": None if peak.theoretical is None else round(peak.theoretical),  # CPU, unknown GPU
    }
    if "train_step" not in skip:
        shapes = {str(n): train_step.measure_in_subprocess(n, device.type, repeats, peak.measured) for n in LENGTHS}
        main = shapes[str(LENGTHS[-1])]  # the headline shape: MFU's target is set on the 128-token one
        results |= {key: main[key] for key in ("train_tok_s", "torch_transformer_tok_s", "train_speedup_vs_torch",
                                                "mfu")}
        results |= {"peak_rss_mb": max(s["peak_rss_mb"] for s in shapes.values()), "by_length": shapes}
    if "kv_cache" not in skip:
        results |= decoding.kv_cache(device, repeats, steps=32 if quick else 128)
    if "beam_hf" not in skip:
        results |= decoding.beam_vs_hf(device, max(1, repeats // 2) if quick else 3, steps=8 if quick else 32)
    if "ctranslate2" not in skip:
        # CTranslate2 runs on the CPU whatever --device: the deployment it stands for (benchmarks/vs_ctranslate2.py)
        results |= vs_ctranslate2.measure(quick)
    if "tokenizer" not in skip:
        results |= tokenize_speed.tokenizer_speed(repeats, max_lines=20_000 if quick else 200_000)
    if "data_wait" not in skip:
        results |= train_step.data_wait_share(device, steps=5 if quick else 40)
    if "deployment" not in skip:
        results |= deployment(model_dir, data, quick)
    results |= {"device": describe_device(device), "versions": versions(), "quick": quick,
                "timed_code": timed_code_digest()}
    if skip:
        results["skipped"] = [part for part in PARTS if part in skip]
    if "train_step" not in skip:
        results |= mfu_history(previous, results, date)
    results["peak_flops_end"] = round(measure_peak_flops(device, peak.dtype))  # drift within the run
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def parse_skip(names: str) -> frozenset[str]:
    """``--skip a,b``: part names of PARTS only (an unknown one is named with the known list)."""
    chosen = frozenset(n.strip() for n in names.split(",") if n.strip())
    unknown = sorted(chosen - set(PARTS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
    return chosen


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and smaller inputs (< 2 min): a smoke run")
    ap.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when there is one)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results.json"), help="where the JSON goes")
    ap.add_argument("--model", type=Path, default=int8.MODEL, help="exported model the int8 and serving runs use")
    ap.add_argument("--data", type=Path, default=int8.DATA, help="test split those runs decode")
    ap.add_argument("--skip", type=parse_skip, default=frozenset(),
                    help=f"comma-separated parts to leave out, of {', '.join(PARTS)} "
                         f"({', '.join(CPU_ONLY)} run on the CPU whatever --device)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    previous = read_previous(args.out)  # read first: the former runs' MFU carry forward
    results = run(device, args.quick, previous, args.model, args.data, args.skip)
    if previous and "gpu" in previous:  # the GPU runs' entries (benchmarks/gpu_results.py) outlive a CPU run
        results["gpu"] = previous["gpu"]
    atomic_write_json(args.out, results)
    print(json.dumps(results, indent=2))
    if not args.skip:  # the table needs every part
        print()
        print(benchmarks_table(results))


if __name__ == "__main__":
    main()
