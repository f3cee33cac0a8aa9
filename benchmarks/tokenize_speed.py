"""Tokenizer: our batched encode (cl100k + compact id map + byte fallback) vs bare tiktoken.

The text is lines of the Python standard library's own source (code and docstrings, the kind of
text this project tokenizes; on every machine with Python, no download). Our vocabulary is built
from the same lines (min_freq 2, at most 8,000 tokens), so some tokens fall back to bytes, as in
real use. Both sides produce the same cl100k segmentation; ours also maps it to compact ids and
lays the result out as numpy arrays (ids + offsets) ready for the tokenize stage's files.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from benchmarks.common import median_seconds
from nmt.tokenizer import Tokenizer, base_encoding


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


def tokenizer_speed(repeats: int, max_lines: int) -> dict:
    texts = stdlib_lines(max_lines)
    tok = Tokenizer.build(texts, min_freq=2, max_vocab=8000)
    enc = base_encoding()
    ids, _ = tok.encode_arrays(texts)
    n_tokens = len(ids)
    ours = median_seconds(lambda: tok.encode_arrays(texts), repeats)
    batch = median_seconds(lambda: enc.encode_ordinary_batch(texts), repeats)
    loop = median_seconds(lambda: [enc.encode_ordinary(t) for t in texts], repeats)
    cl100k_tokens = sum(map(len, enc.encode_ordinary_batch(texts)))
    return {
        "tokenize_lines": len(texts),
        "tokenize_tok_s": round(cl100k_tokens / ours),  # cl100k tokens, as for tiktoken: same numerator
        "tiktoken_batch_tok_s": round(cl100k_tokens / batch),
        "tiktoken_loop_tok_s": round(cl100k_tokens / loop),
        "tokenize_ratio_vs_tiktoken": round(batch / ours, 3),  # same text: a time ratio
        "compact_ids_per_cl100k_token": round(n_tokens / cl100k_tokens, 4),  # > 1: byte fallback
    }
