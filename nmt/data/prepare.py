"""The download stage: load one source, apply the length limits, write the splits and their stats.

Everything is loaded, filtered, checked and serialised in memory before the first write, so a run
whose data is unusable raises :class:`DataError` and leaves ``out_dir`` untouched. The same input
gives byte-identical files (no timestamps, sorted walks, hash-based splits).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from nmt.config import DataConfig
from nmt.data import concode, django, jsonl, stdlib
from nmt.data.jsonl import SPLITS, Pair, SourceData
from nmt.errors import DataError
from nmt.io import atomic_write_bytes, atomic_write_json
from nmt.tokenizer import base_encoding

# Benchmarks keep their standard dev and test sets whole so scores stay comparable with published
# ones (and the user's own dev/test files are theirs to decide); the stdlib split is ours, so all
# of it obeys the limits.
LIMITED_SPLITS = {
    "stdlib": SPLITS,
    "django": ("train",),
    "concode": ("train",),
    "jsonl": ("train",),
}


def load_source(cfg: DataConfig) -> SourceData:
    """The three splits of ``cfg.source``, before any length limit."""
    if cfg.source == "stdlib":
        return stdlib.load(cfg.stdlib)
    if cfg.source == "django":
        return django.load(cfg.django)
    if cfg.source == "concode":
        return concode.load(cfg.concode)
    if cfg.source == "jsonl":
        return jsonl.load(cfg.jsonl)
    raise DataError(f"data.source: unknown source {cfg.source!r} (known: {', '.join(LIMITED_SPLITS)})")


def prepare_data(cfg: DataConfig, out_dir: Path) -> dict:
    """Write ``out_dir/{train,dev,test}.jsonl`` and ``out_dir/stats.json``; return the stats."""
    data = load_source(cfg)
    stats: dict[str, Any] = {
        "source": cfg.source,
        "counts": {},
        "dropped": {},
        "limits": {
            "max_nl_tokens": cfg.max_nl_tokens,
            "max_code_tokens": cfg.max_code_tokens,
            "applied_to": list(LIMITED_SPLITS[cfg.source]),
        },
        "test_is_dev": data.test_is_dev,
        "note": data.note,
        **data.info,
        "tokens": {},
        "sha256": {},
    }
    blobs = {}
    for split in SPLITS:
        pairs, nl_lens, code_lens, dropped = _limit(data.splits[split], cfg, split in LIMITED_SPLITS[cfg.source])
        if not pairs:
            raise DataError(_empty_split_message(cfg, split, len(data.splits[split]), dropped))
        blobs[split] = _to_jsonl(pairs)
        stats["counts"][split] = len(pairs)
        stats["dropped"][split] = dropped
        stats["tokens"][split] = {"nl": percentiles(nl_lens), "code": percentiles(code_lens)}
        stats["sha256"][f"{split}.jsonl"] = hashlib.sha256(blobs[split]).hexdigest()

    out_dir = Path(out_dir)
    for split, blob in blobs.items():
        atomic_write_bytes(out_dir / f"{split}.jsonl", blob)
    atomic_write_json(out_dir / "stats.json", stats)  # last: its presence means the splits are complete
    return stats


def token_lengths(texts: list[str]) -> list[int]:
    """cl100k token counts; special-token text like ``<|endoftext|>`` counts as ordinary text."""
    return [len(ids) for ids in base_encoding().encode_ordinary_batch(texts)]


def _limit(
    pairs: list[Pair], cfg: DataConfig, apply: bool
) -> tuple[list[Pair], list[int], list[int], dict[str, int]]:
    """The pairs within the limits (all of them if not ``apply``), their token lengths, and drop counts.

    A pair over both limits counts under both keys, and once under ``total``.
    """
    nl_lens = token_lengths([p.nl for p in pairs])
    code_lens = token_lengths([p.code for p in pairs])
    dropped = {"max_nl_tokens": 0, "max_code_tokens": 0, "total": 0}
    kept: list[int] = []
    for i, (n, c) in enumerate(zip(nl_lens, code_lens)):
        too_long_nl = apply and n > cfg.max_nl_tokens
        too_long_code = apply and c > cfg.max_code_tokens
        dropped["max_nl_tokens"] += too_long_nl
        dropped["max_code_tokens"] += too_long_code
        if too_long_nl or too_long_code:
            dropped["total"] += 1
        else:
            kept.append(i)
    return [pairs[i] for i in kept], [nl_lens[i] for i in kept], [code_lens[i] for i in kept], dropped


def _empty_split_message(cfg: DataConfig, split: str, before: int, dropped: dict[str, int]) -> str:
    if before == 0:
        return f"the {split} split of data.source={cfg.source!r} has no pairs"
    return (
        f"the {split} split is empty after the length limits: data.max_nl_tokens={cfg.max_nl_tokens} "
        f"drops {dropped['max_nl_tokens']} and data.max_code_tokens={cfg.max_code_tokens} drops "
        f"{dropped['max_code_tokens']} of its {before} pairs; raise the limits"
    )


def _to_jsonl(pairs: list[Pair]) -> bytes:
    # Serialised here rather than by nmt.io.atomic_write_jsonl so the bytes exist (and are hashed
    # for stats.json) before anything is written.
    return "".join(json.dumps({"nl": p.nl, "code": p.code}, ensure_ascii=False) + "\n" for p in pairs).encode("utf-8")


def percentiles(values: list[int]) -> dict[str, int]:
    """Nearest-rank p50/p90/p99 and the maximum of a non-empty list (integers, so stats stay exact)."""
    ordered = sorted(values)

    def rank(p: int) -> int:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": ordered[-1]}
