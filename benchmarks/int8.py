"""Int8 decoding on the CPU: the exported model with float32 vs int8 linear layers, same inputs.

    .venv/bin/python -m benchmarks.int8 [--quick] [--model models/export] [--data data/raw/test.jsonl]

Both translators decode with the model's recorded decoding settings (config.json ``"decoding"``:
for the default model, beam 8 with lexical reranking, what ``nmt generate`` does). The test split
is decoded whole by each (``--quick``: its first 64 descriptions), in chunks timed in turns
(float32 then int8, then int8 then float32, ...) so that a drift of the machine hits both alike;
the decodes timed are the ones scored, so speed and exact match come from the same outputs.

- ``int8_decode_speedup``: output tokens/s with int8 ÷ with float32 (tokens: the tokenizer's count
  of the code each returns, so a model that stops earlier is not credited with speed);
- ``int8_exact_match_drop``: exact match % float32 − int8, on the same descriptions.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nmt import metrics
from nmt.data.pairs import read_jsonl
from nmt.decoding.translator import Translator

MODEL = Path("models/export")  # what `make repro` exports
DATA = Path("data/raw/test.jsonl")  # the split its figures report
QUICK_PAIRS = 64
CHUNK = 100  # descriptions per timed turn: long enough to time, short enough to interleave often


def missing(model_dir: Path, data: Path) -> str | None:
    """Why the benchmark cannot run (None: it can): ``make repro`` writes both files."""
    for path in (model_dir / "config.json", data):
        if not path.is_file():
            return f"not run: {path} not found (make repro writes it, or pass --model / --data)"
    return None


def decode_in_turns(translators: dict[str, Translator], texts: list[str], chunk: int) -> tuple[dict, dict]:
    """Each translator's outputs for ``texts`` and its seconds, chunk by chunk, the order alternating."""
    outputs: dict[str, list[str]] = {name: [] for name in translators}
    seconds = dict.fromkeys(translators, 0.0)
    for k, start in enumerate(range(0, len(texts), chunk)):
        part = texts[start : start + chunk]
        names = list(translators) if k % 2 == 0 else list(reversed(translators))
        for name in names:
            t0 = time.perf_counter()
            with torch.inference_mode():
                outputs[name] += [t.text for t in translators[name].translate(part)]
            seconds[name] += time.perf_counter() - t0
    return outputs, seconds


def int8_decoding(model_dir: Path = MODEL, data: Path = DATA, quick: bool = False) -> dict:
    """The float32 and int8 decodes of ``data`` with ``model_dir``: speed, exact match, and their ratio / drop."""
    reason = missing(model_dir, data)
    if reason is not None:
        return {"int8": reason}
    rows = read_jsonl(data)[: QUICK_PAIRS if quick else None]
    texts, refs = [r["nl"] for r in rows], [r["code"] for r in rows]
    translators = {"fp32": Translator.from_pretrained(model_dir, device="cpu"),
                   "int8": Translator.from_pretrained(model_dir, device="cpu", quantize="int8")}
    for t in translators.values():  # warm-up: first calls allocate and pick kernels
        t.translate(texts[:8])
    outputs, seconds = decode_in_turns(translators, texts, CHUNK if not quick else 32)
    tokenizer = translators["fp32"].tokenizer
    result = {}
    for name, preds in outputs.items():
        tokens = sum(len(ids) for ids in tokenizer.encode_batch(preds))
        result[name] = {"seconds": round(seconds[name], 4), "output_tokens": tokens,
                        "tok_s": round(tokens / seconds[name], 1),
                        "exact_match": round(metrics.exact_match(preds, refs), 2)}
    return {
        "int8_decode_speedup": round(result["int8"]["tok_s"] / result["fp32"]["tok_s"], 3),
        "int8_exact_match_drop": round(result["fp32"]["exact_match"] - result["int8"]["exact_match"], 2),
        "int8": {**result, "n": len(rows), "data": str(data), "decoding": translators["fp32"].defaults.recorded(),
                 "same_output_share": round(sum(a == b for a, b in zip(*outputs.values())) / len(rows), 4)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"the first {QUICK_PAIRS} descriptions only")
    ap.add_argument("--model", type=Path, default=MODEL, help="exported model directory")
    ap.add_argument("--data", type=Path, default=DATA, help="JSON lines with 'nl' and 'code'")
    args = ap.parse_args()
    print(json.dumps(int8_decoding(args.model, args.data, args.quick), indent=2))


if __name__ == "__main__":
    main()
