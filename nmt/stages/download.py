"""The download stage: load one source, check its bad lines, drop over-long pairs (and duplicates
with ``data.drop_duplicates``), write the splits and their stats.

``stats.json`` accounts for every line: the bad lines of each file (by kind, and the first one),
the duplicate pairs found (and dropped), the pairs the length limits dropped, and how many dev and
test pairs also occur in train. A file with more bad lines than ``data.max_bad_fraction`` stops
the stage; fewer are skipped, counted and warned about.

Everything is loaded, filtered, checked and serialised in memory before the first write, so a run
whose data is unusable raises :class:`DataError` and leaves ``out_dir`` untouched. The same input
gives byte-identical files (no timestamps, sorted walks, hash-based splits).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

from nmt.cl100k import base_encoding
from nmt.config import DataConfig, Params
from nmt.data import concode, django, jsonl, stdlib
from nmt.data.pairs import MAX_LINE_BYTES, LineReport, Pair
from nmt.data.source import SPLITS, SourceData
from nmt.errors import DataError
from nmt.io import atomic_write_bytes, atomic_write_json, project_root
from nmt.layout import RAW

PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the directory that holds the nmt package

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
        return django.load(cfg.django, cfg.select_size)
    if cfg.source == "concode":
        return concode.load(cfg.concode, cfg.select_size)
    if cfg.source == "jsonl":
        return jsonl.load(cfg.jsonl)
    raise DataError(f"data.source: unknown source {cfg.source!r} (known: {', '.join(LIMITED_SPLITS)})")


def download(params: Params, out_dir: Path = RAW) -> dict:
    """The download stage: the data section's source -> data/raw (what pipeline/download.py runs)."""
    return prepare_data(params.data, out_dir)


def portable(file_stats: dict[str, Any]) -> dict[str, Any]:
    """A file's line report with its path as every checkout spells it (:func:`portable_path`):
    stats.json is a DVC output, and an absolute path in it would give it another hash in each clone."""
    path = file_stats["file"]
    shown = portable_path(path)
    first_bad = file_stats["first_bad"]
    if path and first_bad.startswith(path):
        first_bad = shown + first_bad[len(path):]
    return {**file_stats, "file": shown, "first_bad": first_bad}


def portable_path(path: str) -> str:
    """``path`` from the directory holding the ``nmt`` package (the shipped corpora, wherever the
    repository or the installed package lies), or from the repository; any other path as given."""
    if not path:
        return path
    resolved = Path(path).resolve()
    for base in (PACKAGE_PARENT, project_root().resolve()):
        if resolved.is_relative_to(base):
            return resolved.relative_to(base).as_posix()
    return path


def prepare_data(cfg: DataConfig, out_dir: Path) -> dict:
    """Write ``out_dir/{train,dev,test}.jsonl`` and ``out_dir/stats.json``; return the stats."""
    data = load_source(cfg)
    limited = LIMITED_SPLITS[cfg.source]
    reports = {split: data.reports.get(split) or LineReport("", len(data.splits[split])) for split in SPLITS}
    for report in {id(r): r for r in reports.values()}.values():  # dev doubling as test: its file once
        check_bad_lines(report, cfg.max_bad_fraction)
    stats: dict[str, Any] = {
        "source": cfg.source,
        "counts": {},
        "dropped": {},
        "limits": {
            "max_nl_tokens": cfg.max_nl_tokens,
            "max_code_tokens": cfg.max_code_tokens,
            "applied_to": list(limited),
        },
        "bad_lines": {
            "max_bad_fraction": cfg.max_bad_fraction,
            "max_line_bytes": MAX_LINE_BYTES,
            **{split: portable(reports[split].to_stats()) for split in SPLITS},
        },
        # Exact (nl, code) repeats within a split, counted everywhere; with data.drop_duplicates
        # dropped where the length limits apply (the benchmarks' dev and test sets stay whole).
        "duplicates": {"dropped_from": list(limited) if cfg.drop_duplicates else [], "found": {}},
        "overlap": {},
        # The protocol every figure follows: dev selects (checkpoint, early stopping, reranker weights,
        # thresholds), test reports, and the two never share a pair drawn from the same file.
        "roles": {"train": "training", "dev": "selection", "test": "report"},
        "origins": data.origins or {split: f"{split} split of the source" for split in SPLITS},
        "note": data.note,
        **data.info,
        "tokens": {},
        "sha256": {},
    }
    kept = {}
    for split in SPLITS:
        unique = list(dict.fromkeys(data.splits[split]))
        stats["duplicates"]["found"][split] = len(data.splits[split]) - len(unique)
        before = unique if split in limited and cfg.drop_duplicates else data.splits[split]
        pairs, nl_lens, code_lens, dropped = _limit(before, cfg, split in limited)
        if not pairs:
            raise DataError(_empty_split_message(cfg, split, len(before), dropped, reports[split]))
        kept[split] = pairs
        stats["counts"][split] = len(pairs)
        stats["dropped"][split] = dropped
        stats["tokens"][split] = {"nl": percentiles(nl_lens), "code": percentiles(code_lens)}
    stats["overlap"] = overlap(kept)
    blobs = {split: _to_jsonl(pairs) for split, pairs in kept.items()}
    for split, blob in blobs.items():
        stats["sha256"][f"{split}.jsonl"] = hashlib.sha256(blob).hexdigest()

    out_dir = Path(out_dir)
    for split, blob in blobs.items():
        atomic_write_bytes(out_dir / f"{split}.jsonl", blob)
    atomic_write_json(out_dir / "stats.json", stats)  # last: its presence means the splits are complete
    return stats


def check_bad_lines(report: LineReport, max_fraction: float) -> None:
    """Raise DataError when more than ``max_fraction`` of a file's lines are bad; warn when any are."""
    if not report.n_bad:
        return
    share = report.n_bad / report.lines
    counts = f"{report.n_bad} of its {report.lines} non-blank lines are bad ({report.summary()})"
    if share > max_fraction:
        raise DataError(
            f"{report.path}: {counts}, {share:.1%} > data.max_bad_fraction={max_fraction:g}. "
            f"First bad line: {report.first_bad}. Fix or remove the bad lines, or raise "
            f"data.max_bad_fraction in params.yaml to skip them"
        )
    print(f"warning: {report.path}: {counts}; skipped (first: {report.first_bad}); "
          "counted in stats.json under bad_lines", file=sys.stderr)


def overlap(splits: dict[str, list[Pair]]) -> dict[str, Any]:
    """How many dev and test pairs also occur, exactly, in train.

    They are reported, not removed: the benchmarks' standard splits overlap by design (Django
    repeats lines like ``pass``), and removing them from train would make scores incomparable with
    published ones. A high share on the user's own data means test scores flatter the model.
    """
    train = set(splits["train"])
    counts = {f"{split}_in_train": sum(p in train for p in splits[split]) for split in ("dev", "test")}
    return {**counts, "removed_from_train": False}


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


def _empty_split_message(cfg: DataConfig, split: str, before: int, dropped: dict[str, int], report: LineReport) -> str:
    if before == 0 and report.n_bad:
        return (f"the {split} split has no usable pairs: all {report.lines} lines of {report.path} are bad "
                f"({report.summary()}; first: {report.first_bad})")
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
