"""Tokenizer: our batched encode (cl100k + compact id map + byte fallback) vs bare tiktoken's
fastest call.

The text is lines of the Python standard library's own source (code and docstrings, the kind of
text this project tokenizes; on every machine with Python, no download). Our vocabulary is built
from the same lines (min_freq 2, at most 8,000 tokens), so some tokens fall back to bytes, as in
real use. Both sides produce the same cl100k segmentation; ours also maps it to compact ids and
lays the result out as numpy arrays (ids + offsets) ready for the tokenize stage's files.

tiktoken is timed every way a user would tokenize a list of lines with it (a plain
``encode_ordinary`` loop, ``encode_ordinary_batch`` with its default threads, with one per core
and with one; ``encode`` with special-token checks) and the ratio is taken against the FASTEST:
``encode_ordinary_batch`` is its slowest call on short lines (a thread pool task per line), and
dividing by it once reported 8x where the plain loop left 0.9x. All calls and ours are timed in
turns, so a clock or load drift during the run does not favour one side.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import interleaved_medians
from nmt.cl100k import base_encoding
from nmt.tokenizer import Tokenizer


def stdlib_lines(max_lines: int) -> list[str]:
    lines: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        lines.extend(line.strip() for line in text.splitlines() if line.strip())
        if len(lines) >= max_lines:
            break
    return lines[:max_lines]


def tiktoken_calls(texts: list[str]) -> dict[str, Callable[[], object]]:
    """Every reasonable way to tokenize ``texts`` with bare tiktoken, each giving the same cl100k ids."""
    enc = base_encoding()
    return {
        "encode_ordinary loop": lambda: [enc.encode_ordinary(t) for t in texts],
        "encode_ordinary map": lambda: list(map(enc.encode_ordinary, texts)),
        "encode loop": lambda: [enc.encode(t, disallowed_special=()) for t in texts],
        "encode_ordinary_batch": lambda: enc.encode_ordinary_batch(texts),
        f"encode_ordinary_batch num_threads={os.cpu_count()}":
            lambda: enc.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1),
        "encode_ordinary_batch num_threads=1": lambda: enc.encode_ordinary_batch(texts, num_threads=1),
    }


def tokenizer_speed(repeats: int, max_lines: int) -> dict:
    """Ours vs each tiktoken call on the same lines; the ratio is against tiktoken's fastest."""
    texts = stdlib_lines(max_lines)
    tok = Tokenizer.build(texts, min_freq=2, max_vocab=8000)
    ids, _ = tok.encode_arrays(texts)
    cl100k_tokens = sum(map(len, base_encoding().encode_ordinary_batch(texts)))
    theirs = tiktoken_calls(texts)
    # Two phases: the single-threaded calls (ours among them) in turns, then tiktoken's thread-pool
    # calls in turns. Interleaved with the thread pools, every call timed after one ran slower
    # (the pool's threads wind down while the next call runs), which flattered whichever call
    # happened to follow least often.
    threaded = {name: fn for name, fn in theirs.items() if "batch" in name}
    single = {"ours": lambda: tok.encode_arrays(texts), **{k: v for k, v in theirs.items() if k not in threaded}}
    seconds = {}
    for phase in (single, threaded):
        for fn in phase.values():  # warm-up: caches, thread pools, the regex's first compile
            fn()
        seconds |= interleaved_medians(phase, repeats)
    tok_s = {name: round(cl100k_tokens / seconds[name]) for name in theirs}
    fastest = min(theirs, key=seconds.__getitem__)
    return {
        "tokenize_lines": len(texts),
        "tokenize_tok_s": round(cl100k_tokens / seconds["ours"]),  # cl100k tokens, as for tiktoken: same numerator
        "tiktoken_calls": tok_s,
        "tiktoken_fastest_call": fastest,
        "tiktoken_fastest_tok_s": tok_s[fastest],
        "tokenize_ratio_vs_tiktoken": round(seconds[fastest] / seconds["ours"], 3),  # same text: throughput ratio
        "compact_ids_per_cl100k_token": round(len(ids) / cl100k_tokens, 4),  # > 1: byte fallback
    }
