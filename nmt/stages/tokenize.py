"""The tokenize stage: raw {"nl", "code"} pairs -> a vocabulary and id tensors per split.

Outputs in ``out_dir``:

- ``vocab.json``: the :class:`~nmt.tokenizer.Tokenizer`, built from the *train* split only (both
  descriptions and code: source and target share one vocabulary).
- ``{train,dev,test}.safetensors``: four tensors per split (:class:`TokenizedSplit`):
  ``src`` / ``tgt`` (int32, every pair's ids back to back, no specials) and ``src_offsets`` /
  ``tgt_offsets`` (int64, n+1 entries: pair ``i`` is ``src[src_offsets[i]:src_offsets[i+1]]``).
- ``stats.json``: vocabulary size and, per split, pair count, byte-fallback share and length
  percentiles.
- with ``tokenize.string_placeholders`` (:mod:`nmt.placeholders`): every pair is masked before
  encoding (the vocabulary is built from the masked train split), ``vocab.json`` records the
  setting, ``literals.json`` holds each pair's literals per split (``{"dev": [["a", "b"], [], ...]}``:
  what restores a decoded dev output), and ``stats.json`` the share of code string literals a
  placeholder covers.

Output bytes depend only on the inputs and the parameters.

**Streaming.** The stage holds one chunk of :data:`CHUNK_PAIRS` pairs at a time, never a whole
split, so its memory stays flat however large the data (measured: ``benchmarks/tokenize_memory.py``):
the training file is read once to count words (``tokenize.rare_words``), once to build the
vocabulary and once to encode it, and each chunk's ids are appended to scratch files that become
the split's safetensors file at the end (:class:`SplitWriter`). Everything is written to a
scratch directory first and moved into ``out_dir`` only when every split is done, so a bad line
in ``test.jsonl`` leaves the previous outputs as they were. :meth:`TokenizedSplit.load` maps the
ids from the file (``np.memmap``) instead of reading them into memory.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from nmt import placeholders
from nmt.config import TokenizeConfig
from nmt.errors import DataError
from nmt.io import atomic_path, atomic_write_json, iter_jsonl, read_json
from nmt.tokenizer import BYTE_OFFSET, FIRST_CL100K_ID, PLACEHOLDER_TOKENS, Tokenizer

SPLITS = ("train", "dev", "test")
SPLIT_FORMAT = "nmt-tokenized-split"
SPLIT_VERSION = 1
_KEYS = ("src", "src_offsets", "tgt", "tgt_offsets")
_FIX = "re-run the tokenize stage (`dvc repro tokenize`)"
LITERALS_FILE = "literals.json"
CHUNK_PAIRS = 8192  # pairs masked and encoded at a time: the stage's memory does not grow past it
# safetensors dtype names of the two dtypes a split holds
_ST_DTYPES = {"I32": np.int32, "I64": np.int64}
# The int64 offsets first, then the int32 ids: every tensor starts aligned to its item size (the
# header is padded to 8 bytes), as safetensors' own writer orders them.
_FILE_ORDER = ("src_offsets", "tgt_offsets", "src", "tgt")


class TokenizedSplit:
    """One split's id tensors: ``len(split)`` (source, target) pairs, ids without specials."""

    def __init__(
        self,
        src: torch.Tensor,
        src_offsets: torch.Tensor,
        tgt: torch.Tensor,
        tgt_offsets: torch.Tensor,
        vocab_size: int,
        source: str = "tokenized split",
    ):
        tensors = {"src": src, "src_offsets": src_offsets, "tgt": tgt, "tgt_offsets": tgt_offsets}
        problems = _problems(tensors, vocab_size)
        if problems:
            raise DataError(f"{source}: invalid tokenized split: " + "; ".join(problems) + f"; {_FIX}")
        self._src, self._src_offsets = src, src_offsets
        self._tgt, self._tgt_offsets = tgt, tgt_offsets
        self.vocab_size = vocab_size
        self.src_lengths = src_offsets[1:] - src_offsets[:-1]  # [n] int64
        self.tgt_lengths = tgt_offsets[1:] - tgt_offsets[:-1]  # [n] int64
        # numpy views of the same memory: slicing them is cheaper than slicing tensors, per pair
        self._arrays = tuple(t.numpy() for t in (src, src_offsets, tgt, tgt_offsets))

    @classmethod
    def from_arrays(
        cls, src: tuple[np.ndarray, np.ndarray], tgt: tuple[np.ndarray, np.ndarray], vocab_size: int
    ) -> TokenizedSplit:
        """From two ``Tokenizer.encode_arrays`` results (ids, offsets)."""
        return cls(
            torch.from_numpy(np.ascontiguousarray(src[0], dtype=np.int32)),
            torch.from_numpy(np.ascontiguousarray(src[1], dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(tgt[0], dtype=np.int32)),
            torch.from_numpy(np.ascontiguousarray(tgt[1], dtype=np.int64)),
            vocab_size,
        )

    def __len__(self) -> int:
        return len(self._src_offsets) - 1

    def swapped(self) -> TokenizedSplit:
        """The same pairs with source and target exchanged (code -> description), sharing memory."""
        return TokenizedSplit(self._tgt, self._tgt_offsets, self._src, self._src_offsets, self.vocab_size)

    def _slice(self, ids: torch.Tensor, offsets: torch.Tensor, i: int) -> torch.Tensor:
        if not 0 <= i < len(self):
            raise IndexError(f"pair {i} out of range 0..{len(self) - 1}")
        return ids[int(offsets[i]) : int(offsets[i + 1])]

    def lists(self, indices: Sequence[int]) -> tuple[list[list[int]], list[list[int]]]:
        """The (source, target) ids of the pairs ``indices`` as Python lists, what collation takes."""
        src, src_offsets, tgt, tgt_offsets = self._arrays
        n = len(self)
        if any(not 0 <= i < n for i in indices):
            raise IndexError(f"pairs {[i for i in indices if not 0 <= i < n][:5]} out of range 0..{n - 1}")
        return ([src[src_offsets[i] : src_offsets[i + 1]].tolist() for i in indices],
                [tgt[tgt_offsets[i] : tgt_offsets[i + 1]].tolist() for i in indices])

    def src(self, i: int) -> torch.Tensor:
        """Source ids of pair ``i`` (int32 view, no specials)."""
        return self._slice(self._src, self._src_offsets, i)

    def tgt(self, i: int) -> torch.Tensor:
        """Target (code) ids of pair ``i`` (int32 view, no specials)."""
        return self._slice(self._tgt, self._tgt_offsets, i)

    @classmethod
    def load(cls, path: str | os.PathLike, vocab_size: int | None = None) -> TokenizedSplit:
        """Read and validate a split; ``vocab_size`` (if given) must match the one it was made with."""
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{p}: file not found; {_FIX}")
        try:
            with safe_open(str(p), framework="pt") as f:  # checks the header and the data layout
                metadata = f.metadata() or {}
                tensors = _memory_mapped(p, f)
        except (SafetensorError, OSError, ValueError) as e:
            raise DataError(f"{p}: not a readable safetensors file ({e}); {_FIX}") from e
        try:
            meta = json.loads(metadata["nmt"])
            ok = meta.get("format") == SPLIT_FORMAT and meta.get("version") == SPLIT_VERSION
            file_vocab = meta["vocab_size"]
        except (KeyError, TypeError, ValueError, AttributeError):
            ok = False
        if not ok or not isinstance(file_vocab, int):
            raise DataError(f"{p}: not a {SPLIT_FORMAT} v{SPLIT_VERSION} file (metadata {metadata!r}); {_FIX}")
        if vocab_size is not None and vocab_size != file_vocab:
            raise DataError(f"{p}: tokenized with a vocabulary of {file_vocab} ids, the tokenizer has {vocab_size}; {_FIX}")
        unknown = sorted(set(tensors) - set(_KEYS))
        missing = [k for k in _KEYS if k not in tensors]
        if unknown or missing:
            raise DataError(f"{p}: expected tensors {list(_KEYS)}, missing {missing}, unknown {unknown}; {_FIX}")
        return cls(**{k: tensors[k] for k in _KEYS}, vocab_size=file_vocab, source=str(p))


def _memory_mapped(path: Path, opened: safe_open) -> dict[str, torch.Tensor]:
    """The int32/int64 tensors of a safetensors file, mapped from it (copy-on-write) rather than read.

    The format is an 8-byte little-endian header size, a JSON header giving each tensor's dtype,
    shape and byte range within the data that follows, then the data. A tensor of another dtype
    is read as is through ``opened`` (the file's ``safe_open`` handle); validation rejects it
    later with its name.
    """
    with open(path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_size))
    start = 8 + header_size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None or len(info["shape"]) != 1 or end == begin:
            tensors[name] = opened.get_tensor(name)
            continue
        # mode "c": pages are shared with the page cache and never written back.
        array = np.memmap(path, dtype=dtype, mode="c", offset=start + begin, shape=tuple(info["shape"]))
        tensors[name] = torch.from_numpy(array)
    return tensors


class SplitWriter:
    """Writes one split's safetensors file a chunk of pairs at a time, in flat memory.

    Ids and offsets go to four scratch files as they come; :meth:`close` writes the safetensors
    header (it needs the final sizes) and copies the scratch files after it. The result is an
    ordinary safetensors file: ``safetensors.safe_open`` reads it, and :meth:`TokenizedSplit.load`
    maps it.
    """

    def __init__(self, path: Path, vocab_size: int, scratch: Path):
        self.path, self.vocab_size = Path(path), vocab_size
        self._dir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=scratch))
        self._files = {key: open(self._dir / key, "wb") for key in _KEYS}
        self._ends = {"src": 0, "tgt": 0}  # ids written so far per side
        self.n_pairs = 0
        for side in ("src", "tgt"):
            self._files[f"{side}_offsets"].write(np.zeros(1, dtype=np.int64).tobytes())

    def append(self, src: tuple[np.ndarray, np.ndarray], tgt: tuple[np.ndarray, np.ndarray]) -> None:
        """Add a chunk's pairs: two ``Tokenizer.encode_arrays`` results (ids, offsets)."""
        for side, (ids, offsets) in (("src", src), ("tgt", tgt)):
            self._files[side].write(np.ascontiguousarray(ids, dtype=np.int32).tobytes())
            shifted = np.asarray(offsets[1:], dtype=np.int64) + self._ends[side]
            self._files[f"{side}_offsets"].write(shifted.tobytes())
            self._ends[side] += len(ids)
        self.n_pairs += len(src[1]) - 1

    def close(self) -> None:
        """Write the safetensors file (atomically) and remove the scratch files."""
        try:
            for f in self._files.values():
                f.close()
            header: dict = {"__metadata__": {"nmt": json.dumps(
                {"format": SPLIT_FORMAT, "version": SPLIT_VERSION, "vocab_size": self.vocab_size}, sort_keys=True)}}
            position = 0
            for key in _FILE_ORDER:
                size = (self._dir / key).stat().st_size
                itemsize = 8 if key.endswith("_offsets") else 4
                header[key] = {"dtype": "I64" if itemsize == 8 else "I32", "shape": [size // itemsize],
                               "data_offsets": [position, position + size]}
                position += size
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
            with atomic_path(self.path) as tmp, open(tmp, "wb") as out:
                out.write(struct.pack("<Q", len(raw)) + raw)
                for key in _FILE_ORDER:
                    with open(self._dir / key, "rb") as part:
                        shutil.copyfileobj(part, out, 1 << 20)
        finally:
            self.discard()

    def discard(self) -> None:
        for f in self._files.values():
            f.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _problems(t: dict[str, torch.Tensor], vocab_size: int) -> list[str]:
    problems = []
    for key, dtype in (("src", torch.int32), ("tgt", torch.int32), ("src_offsets", torch.int64), ("tgt_offsets", torch.int64)):
        if t[key].dtype != dtype or t[key].dim() != 1:
            problems.append(f"{key}: expected a 1-D {dtype} tensor, got {t[key].dtype} of shape {tuple(t[key].shape)}")
    if problems:
        return problems
    if len(t["src_offsets"]) != len(t["tgt_offsets"]) or len(t["src_offsets"]) < 1:
        return [f"src_offsets and tgt_offsets must both have n+1 >= 1 entries, got {len(t['src_offsets'])} and {len(t['tgt_offsets'])}"]
    for side in ("src", "tgt"):
        ids, off = t[side], t[f"{side}_offsets"]
        if off[0] != 0 or off[-1] != len(ids) or bool((off[1:] < off[:-1]).any()):
            problems.append(f"{side}_offsets: must rise from 0 to len({side})={len(ids)}")
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
            problems.append(f"{side}: ids must lie in 0..{vocab_size - 1}, found {int(ids.min())}..{int(ids.max())}")
    return problems


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


class _LiteralsWriter:
    """``literals.json`` written as it comes: ``{"train": [[...], ...], "dev": [...], "test": [...]}``, a pair a line."""

    def __init__(self, path: Path):
        self._file = open(path, "w", encoding="utf-8")
        self._file.write("{")
        self._splits = 0

    def start(self, split: str) -> None:
        self._file.write(("," if self._splits else "") + f"\n{json.dumps(split)}: [")
        self._splits += 1
        self._first = True

    def add(self, literals: list[str]) -> None:
        self._file.write(("," if not self._first else "") + "\n" + json.dumps(literals, ensure_ascii=False))
        self._first = False

    def end(self) -> None:
        self._file.write("\n]")

    def close(self) -> None:
        self._file.write("\n}\n")
        self._file.close()


def load_literals(data_dir: Path, split: str, n: int) -> list[list[str]]:
    """The literals of the first ``n`` pairs of ``split`` (written with string placeholders on)."""
    path = Path(data_dir) / LITERALS_FILE
    table = read_json(path).get(split) if path.is_file() else None
    if not isinstance(table, list) or len(table) < n:
        raise DataError(f"{path}: no literals for the {split} split (needed with string placeholders); {_FIX}")
    return table[:n]


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
            mask_stats: _MaskStats | None = None) -> Iterator[tuple[str, str, list[str]]]:
    """(description, code, literals) of each pair: masked with string placeholders on, else as is."""
    for r in rows:
        if not cfg.string_placeholders:
            yield r["nl"], r["code"], []
            continue
        nl, code, literals = placeholders.mask_pair(r["nl"], r["code"], cfg.name_placeholders, common)
        if mask_stats is not None:
            mask_stats.add(r["nl"], r["code"], literals)
        yield nl, code, literals


def _tokenize_into(files: dict[str, Path], out_dir: Path, cfg: TokenizeConfig, chunk_pairs: int) -> dict:
    """:func:`tokenize_dataset`'s work, into the (scratch) directory ``out_dir``."""
    # Counted on the raw training descriptions: which words stay words (tokenize.rare_words).
    common = (placeholders.common_words((r["nl"] for r in iter_jsonl(files["train"])), cfg.rare_words)
              if cfg.rare_words else None)
    n_train = 0

    def training_texts() -> Iterator[str]:
        nonlocal n_train
        for nl, code, _ in _masked(iter_jsonl(files["train"]), cfg, common):
            n_train += 1
            yield nl
            yield code

    tok = Tokenizer.build(training_texts(), cfg.min_freq, cfg.max_vocab, cfg.string_placeholders,
                          cfg.name_placeholders, common, PLACEHOLDER_TOKENS if cfg.placeholder_tokens else 0,
                          batch=2 * chunk_pairs)
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
    literals = _LiteralsWriter(out_dir / LITERALS_FILE) if cfg.string_placeholders else None
    for split in SPLITS:
        stats["splits"][split] = _encode_split(files[split], out_dir / f"{split}.safetensors", tok, cfg, common,
                                               literals, split, chunk_pairs)
    if literals is not None:
        literals.close()
    atomic_write_json(out_dir / "stats.json", stats)
    return stats


def _encode_split(raw: Path, path: Path, tok: Tokenizer, cfg: TokenizeConfig, common: frozenset[str] | None,
                  literals: _LiteralsWriter | None, split: str, chunk_pairs: int) -> dict:
    """Encode one split chunk by chunk into ``path``; its statistics."""
    writer = SplitWriter(path, tok.vocab_size, path.parent)
    src_stats, tgt_stats, mask_stats = _SideStats(), _SideStats(), _MaskStats()
    if literals is not None:
        literals.start(split)
    try:
        pairs = _masked(iter_jsonl(raw), cfg, common, mask_stats)
        while chunk := list(itertools.islice(pairs, chunk_pairs)):
            nls, codes, lits = zip(*chunk)
            src, tgt = tok.encode_arrays(nls), tok.encode_arrays(codes)
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
