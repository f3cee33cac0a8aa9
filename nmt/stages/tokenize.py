"""The tokenize stage: raw {"nl", "code"} pairs -> a vocabulary, id tensors per split and the lexicon.

Outputs in ``out_dir`` (the id files' format: :mod:`nmt.data.tokenized`):

- ``vocab.json``: the :class:`~nmt.tokenizer.Tokenizer`, built from the *train* split only (both
  descriptions and code: source and target share one vocabulary).
- ``{train,dev,test}.safetensors``: each split's ids (:class:`~nmt.data.tokenized.TokenizedSplit`).
- ``stats.json``: vocabulary size and, per split, pair count, byte-fallback share and length
  percentiles.
- with ``tokenize.string_placeholders`` (:mod:`nmt.placeholders`): every pair is masked before
  encoding (the vocabulary is built from the masked train split), ``vocab.json`` records the
  setting, ``literals.json`` holds each pair's literals per split (what restores a decoded dev
  output), and ``stats.json`` the share of code string literals a placeholder covers.
- ``lexicon.json`` (:func:`tokenize`, the stage itself): the reranker's word counts over the raw,
  unmasked training pairs (:func:`nmt.decoding.rerank.write_lexicon`).
- with ``tokenize.neighbour_code`` (:mod:`nmt.neighbours`): each source is the description, EOS,
  then the code of its nearest training pair (a training pair's nearest *other* pair), masked with
  the description's literals; ``vocab.json`` records the setting, so the Translator completes a new
  description the same way. The vocabulary is built from the pairs alone, as without it.

Output bytes depend only on the inputs and the parameters.

**Streaming.** The stage holds one chunk of :data:`CHUNK_PAIRS` pairs at a time, never a whole
split, so its memory stays flat however large the data (measured: ``benchmarks/tokenize_memory.py``):
the training file is read once to count words (``tokenize.rare_words``), once to build the
vocabulary and once to encode it, and each chunk's ids are appended to scratch files that become
the split's safetensors file at the end (:class:`~nmt.data.tokenized.SplitWriter`). The one
exception is ``tokenize.neighbour_code``: its index over the training pairs' descriptions and
code is held whole, as a search over them needs. Everything
:func:`tokenize_dataset` writes goes to a scratch directory first and is moved into ``out_dir``
only when every split is done, so a bad line in ``test.jsonl`` leaves the previous outputs as they
were.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from nmt import placeholders
from nmt.config import Params, TokenizeConfig
from nmt.data.pairs import iter_jsonl
from nmt.data.source import SPLITS
from nmt.data.tokenized import LITERALS_FILE, LiteralsWriter, SplitWriter
from nmt.decoding.rerank import LEXICON_FILE, write_lexicon
from nmt.errors import DataError
from nmt.io import atomic_write_json
from nmt.layout import RAW, TOKENIZED
from nmt.neighbours import joined, neighbour_codes, neighbour_index
from nmt.retrieval import RetrievalBaseline
from nmt.tokenizer import BYTE_OFFSET, FIRST_CL100K_ID, PLACEHOLDER_TOKENS, Tokenizer

CHUNK_PAIRS = 8192  # pairs masked and encoded at a time: the stage's memory does not grow past it
# Where the stage reads and writes (dvc.yaml's deps and outs of the tokenize stage).


def tokenize(params: Params, raw_dir: Path = RAW, out_dir: Path = TOKENIZED) -> dict:
    """The whole stage: :func:`tokenize_dataset`, then the reranker's lexicon from the raw training
    pairs. Returns the statistics written to ``out_dir/stats.json``."""
    stats = tokenize_dataset(raw_dir, out_dir, params.tokenize)
    write_lexicon(Path(raw_dir) / "train.jsonl", Path(out_dir) / LEXICON_FILE)
    return stats


def _histogram_percentiles(counts: np.ndarray) -> dict[str, int]:
    """p50/p90/p99/max of the lengths whose histogram is ``counts`` (``counts[L]`` = how many have
    length L), each an observed length as numpy's "higher" method gives.

    numpy's "higher" percentile q of n sorted values is value number ceil(q/100 * (n - 1)),
    counted from 0: the first length whose cumulative count exceeds that index.
    """
    n = int(counts.sum())
    if n == 0:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0}
    cumulative = np.cumsum(counts)
    out = {}
    for q in (50, 90, 99):
        index = int(np.ceil(np.float64(q) / 100 * (n - 1)))
        out[f"p{q}"] = int(np.searchsorted(cumulative, index, side="right"))
    out["max"] = int(np.flatnonzero(counts)[-1])
    return out


class _SideStats:
    """Token count, byte-fallback count and length histogram of one side of a split, added chunk by chunk."""

    def __init__(self) -> None:
        self.tokens = self.byte_tokens = 0
        self.lengths = np.zeros(1, dtype=np.int64)  # lengths[L]: pairs of length L

    def add(self, ids: np.ndarray, offsets: np.ndarray) -> None:
        self.tokens += len(ids)
        self.byte_tokens += int(((ids >= BYTE_OFFSET) & (ids < FIRST_CL100K_ID)).sum())
        counts = np.bincount(np.diff(offsets))
        if len(counts) > len(self.lengths):
            self.lengths = np.pad(self.lengths, (0, len(counts) - len(self.lengths)))
        self.lengths[: len(counts)] += counts


def _byte_pct(byte_tokens: int, tokens: int) -> float:
    """Share of ids that are byte tokens, in percent."""
    return 100.0 * byte_tokens / tokens if tokens else 0.0


class _MaskStats:
    """How many code string literals a placeholder covers, over a split."""

    def __init__(self) -> None:
        self.code_literals = self.covered = self.pairs_with_literals = 0

    def add(self, nl: str, code: str, literals: list[str]) -> None:
        found, covered = placeholders.coverage(nl, code)
        self.code_literals += found
        self.covered += covered
        self.pairs_with_literals += bool(literals)

    def as_dict(self) -> dict:
        return {"code_literals": self.code_literals, "covered": self.covered,
                "covered_pct": 100.0 * self.covered / self.code_literals if self.code_literals else 0.0,
                "pairs_with_literals": self.pairs_with_literals}


def tokenize_dataset(raw_dir: Path, out_dir: Path, cfg: TokenizeConfig, chunk_pairs: int = CHUNK_PAIRS) -> dict:
    """Build the vocabulary from ``raw_dir/train.jsonl``, encode every split, write ``out_dir``.

    Streams: memory holds one chunk of pairs, not a split (module docstring). Returns the
    statistics also written to ``out_dir/stats.json``.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    files = {split: raw_dir / f"{split}.jsonl" for split in SPLITS}
    for path in files.values():  # all three, before any work
        if not path.is_file():
            raise DataError(f"{path}: file not found; re-run the download stage")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        stats = _tokenize_into(files, scratch, cfg, chunk_pairs)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in sorted(p.name for p in scratch.iterdir()):
            os.replace(scratch / name, out_dir / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return stats


def _masked(rows: Iterable[dict], cfg: TokenizeConfig, common: frozenset[str] | None,
            mask_stats: _MaskStats | None = None) -> Iterator[tuple[str, str, list[str], str]]:
    """(description, code, literals, raw description) of each pair: masked with string placeholders
    on, else as is."""
    for r in rows:
        if not cfg.string_placeholders:
            yield r["nl"], r["code"], [], r["nl"]
            continue
        nl, code, literals = placeholders.mask_pair(r["nl"], r["code"], cfg.name_placeholders, common)
        if mask_stats is not None:
            mask_stats.add(r["nl"], r["code"], literals)
        yield nl, code, literals, r["nl"]


def _tokenize_into(files: dict[str, Path], out_dir: Path, cfg: TokenizeConfig, chunk_pairs: int) -> dict:
    """:func:`tokenize_dataset`'s work, into the (scratch) directory ``out_dir``."""
    # Counted on the raw training descriptions: which words stay words (tokenize.rare_words).
    common = (placeholders.common_words((r["nl"] for r in iter_jsonl(files["train"])), cfg.rare_words)
              if cfg.rare_words else None)
    n_train = 0

    def training_texts() -> Iterator[str]:
        nonlocal n_train
        for nl, code, _, _ in _masked(iter_jsonl(files["train"]), cfg, common):
            n_train += 1
            yield nl
            yield code

    tok = Tokenizer.build(training_texts(), cfg.min_freq, cfg.max_vocab, cfg.string_placeholders,
                          cfg.name_placeholders, common, PLACEHOLDER_TOKENS if cfg.placeholder_tokens else 0,
                          batch=2 * chunk_pairs, neighbour_code=cfg.neighbour_code)
    if not n_train:
        raise DataError(f"{files['train']}: no pairs to build the vocabulary from; re-run the download stage")
    tok.save(out_dir / "vocab.json")
    stats: dict = {
        "vocab_size": tok.vocab_size,
        "n_cl100k_kept": len(tok.cl100k_ids),
        "n_specials": tok.n_specials,
        "n_byte_tokens": FIRST_CL100K_ID - BYTE_OFFSET,
        "min_freq": cfg.min_freq,
        "max_vocab": cfg.max_vocab,
        "splits": {},
    }
    literals = LiteralsWriter(out_dir / LITERALS_FILE) if cfg.string_placeholders else None
    index = (neighbour_index([(r["nl"], r["code"]) for r in iter_jsonl(files["train"])])
             if cfg.neighbour_code else None)
    for split in SPLITS:
        stats["splits"][split] = _encode_split(files[split], out_dir / f"{split}.safetensors", tok, cfg, common,
                                               literals, split, chunk_pairs, index)
    if literals is not None:
        literals.close()
    atomic_write_json(out_dir / "stats.json", stats)
    return stats


def _with_neighbours(src: tuple[np.ndarray, np.ndarray], tok: Tokenizer, cfg: TokenizeConfig,
                     common: frozenset[str] | None, index: RetrievalBaseline, raw_nls: tuple[str, ...],
                     lits: tuple[list[str], ...], exclude: range | None) -> tuple[np.ndarray, np.ndarray]:
    """A chunk's encoded descriptions ``src`` (ids, offsets) completed with their neighbours' code
    (:mod:`nmt.neighbours`), as (ids, offsets) again. A pair whose masking found no literals (or was
    skipped, :func:`nmt.placeholders.mask_pair`) gets its neighbour's code unmasked."""
    masked = [placeholders.mask_description(nl, cfg.name_placeholders, common) if found else None
              for nl, found in zip(raw_nls, lits)]
    neighbours = tok.encode_batch(neighbour_codes(index, raw_nls, masked, exclude))
    ids, offsets = src
    rows = [joined(ids[offsets[i]:offsets[i + 1]].tolist(), code, tok.eos_id) for i, code in enumerate(neighbours)]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum()))
    return flat, np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(lengths)])


def _encode_split(raw: Path, path: Path, tok: Tokenizer, cfg: TokenizeConfig, common: frozenset[str] | None,
                  literals: LiteralsWriter | None, split: str, chunk_pairs: int,
                  index: RetrievalBaseline | None = None) -> dict:
    """Encode one split chunk by chunk into ``path``; its statistics. With ``index``
    (tokenize.neighbour_code), each source is completed with its nearest training pair's code."""
    writer = SplitWriter(path, tok.vocab_size, path.parent)
    src_stats, tgt_stats, mask_stats = _SideStats(), _SideStats(), _MaskStats()
    if literals is not None:
        literals.start(split)
    try:
        pairs = _masked(iter_jsonl(raw), cfg, common, mask_stats)
        start = 0  # the chunk's first pair: in train, the index's own entry for it
        while chunk := list(itertools.islice(pairs, chunk_pairs)):
            nls, codes, lits, raw_nls = zip(*chunk)
            src, tgt = tok.encode_arrays(nls), tok.encode_arrays(codes)
            if index is not None:
                src = _with_neighbours(src, tok, cfg, common, index, raw_nls, lits,
                                       range(start, start + len(chunk)) if split == "train" else None)
            start += len(chunk)
            writer.append(src, tgt)
            src_stats.add(*src)
            tgt_stats.add(*tgt)
            if literals is not None:
                for one in lits:
                    literals.add(one)
        writer.close()
    except BaseException:
        writer.discard()
        raise
    if literals is not None:
        literals.end()
    out = {
        "n_pairs": writer.n_pairs,
        "src_tokens": src_stats.tokens,
        "tgt_tokens": tgt_stats.tokens,
        "src_byte_pct": _byte_pct(src_stats.byte_tokens, src_stats.tokens),
        "tgt_byte_pct": _byte_pct(tgt_stats.byte_tokens, tgt_stats.tokens),
        "byte_pct": _byte_pct(src_stats.byte_tokens + tgt_stats.byte_tokens, src_stats.tokens + tgt_stats.tokens),
        "src_len": _histogram_percentiles(src_stats.lengths),
        "tgt_len": _histogram_percentiles(tgt_stats.lengths),
    }
    if cfg.string_placeholders:
        out["string_placeholders"] = mask_stats.as_dict()
    return out
