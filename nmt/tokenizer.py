"""Tokenizer: tiktoken cl100k_base (:mod:`nmt.cl100k`), narrowed to a compact vocabulary with a
lossless byte fallback.

Compact id layout (fixed by the file format, version 1)::

    0, 1, 2                 <pad>, <bos>, <eos>              (N_SPECIALS = 3)
    3 .. 258                the 256 single bytes 0x00..0xff  (id = BYTE_OFFSET + byte)
    259 .. 259 + kept - 1   the kept cl100k tokens, most frequent first (ties: lower cl100k id first)
    then, with placeholder tokens (K = ``placeholder_tokens``):
      K ids                 _STR:0_ .. _STR:{K-1}_
      K ids                 _ID:0_ .. _ID:{K-1}_

Encoding runs cl100k's ``encode_ordinary`` (so text such as ``<|endoftext|>`` is plain text) and
maps every cl100k token to its compact id. A token outside the compact vocabulary becomes its
bytes, as byte tokens. cl100k's 256 single-byte tokens always map onto the byte tokens, so they
are never "kept" (and never counted against ``max_vocab``). Because every cl100k token is a byte
string and the concatenation of a text's tokens is its UTF-8 encoding, ``decode(encode(s)) == s``
for every string ``s`` without lone surrogates (tiktoken replaces those with U+FFFD, as UTF-8
cannot carry them).

Decoding concatenates the bytes of every non-special id and decodes UTF-8 with
``errors="replace"``, so any sequence of in-range ids yields a valid string.

The file also records whether the model was trained on texts with string placeholders
(``tokenize.string_placeholders``, :mod:`nmt.placeholders`), so whoever loads the model masks its
inputs and restores its outputs the same way. The key is written only when the setting is on, so
files without it (all older ones) mean "off". With ``tokenize.rare_words`` it also holds
``common_words``: the description words that stay words (every other one is a name placeholder).

**Placeholder tokens** (``tokenize.placeholder_tokens``): cl100k spells ``_ID:12_`` as five
tokens (``_ID``, ``:``, ``12``, ``_`` ...), so copying a name meant copying five tokens in a row
and getting the digits right. With ``placeholder_tokens = K`` each placeholder with index below K,
written canonically (``_ID:7_``, not ``_ID:07_``), is one token of its own: encoding cuts the text
at those placeholders and runs cl100k on the pieces between them, and decoding writes the
placeholder's text back, so ``decode(encode(s)) == s`` still holds. :meth:`Tokenizer.placeholder_ids`
lists them: a decoder may emit one only if the source holds it (``Transformer.restrict_to_source``).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from nmt import placeholders
from nmt.cl100k import BASE_ENCODING, N_BYTES, base_tables, encode_base
from nmt.errors import ModelFileError
from nmt.io import atomic_write_json, read_tokenize_output

FORMAT = "nmt-tokenizer"
VERSION = 1
SPECIALS = ("<pad>", "<bos>", "<eos>")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
N_SPECIALS = len(SPECIALS)
BYTE_OFFSET = N_SPECIALS
FIRST_CL100K_ID = BYTE_OFFSET + N_BYTES  # compact id of the first kept cl100k token
_BUILD_CHUNK = 8192  # texts encoded per tiktoken batch while counting
# Placeholders _STR:0_ .. _STR:{n-1}_ whose tokens the vocabulary always keeps when they are on
# (a higher index still encodes losslessly, through the byte fallback).
KEPT_PLACEHOLDERS = 100
# With placeholder tokens on: how many of each kind are single tokens (_STR:0_ .. _STR:99_, _ID:0_ ..).
PLACEHOLDER_TOKENS = 100
MAX_PLACEHOLDER_TOKENS = 10_000
# A placeholder as the masking writes it: canonical index (no leading zeros), so its token decodes
# back to exactly the same text.
_ATOMIC = re.compile(r"_(STR|ID):(0|[1-9][0-9]{0,5})_")


def _cut_at(text: str, k: int) -> tuple[list[str], list[int]]:
    """``text`` cut at its placeholders with index < ``k``: the n+1 pieces around them, and the n
    placeholders' offsets among the placeholder tokens (``_STR:i_`` -> i, ``_ID:i_`` -> k + i)."""
    pieces, ids, last = [], [], 0
    for m in _ATOMIC.finditer(text):
        index = int(m.group(2))
        if index < k:
            pieces.append(text[last : m.start()])
            ids.append(index if m.group(1) == "STR" else k + index)
            last = m.end()
    pieces.append(text[last:])
    return pieces, ids


def _problems(cl100k_ids: Any) -> list[str]:
    """Everything wrong with a list of kept cl100k ids (empty when it is valid)."""
    if not isinstance(cl100k_ids, (list, tuple)):
        return [f"cl100k_ids: expected a list of integers, got {type(cl100k_ids).__name__}"]
    tables = base_tables()
    single = set(tables.single_byte.tolist())
    seen: set[int] = set()
    problems = []
    for pos, t in enumerate(cl100k_ids):
        if not isinstance(t, (int, np.integer)) or isinstance(t, bool):
            problems.append(f"cl100k_ids[{pos}]: expected an integer, got {t!r}")
        elif not 0 <= t < tables.n:
            problems.append(f"cl100k_ids[{pos}]: {t} is outside cl100k's ordinary ids 0..{tables.n - 1}")
        elif t in seen:
            problems.append(f"cl100k_ids[{pos}]: duplicate id {t}")
        elif t in single:
            problems.append(f"cl100k_ids[{pos}]: {t} is a single-byte token (those are the byte tokens)")
        else:
            seen.add(int(t))
        if len(problems) >= 5:
            problems.append("(further problems not listed)")
            break
    return problems


class Tokenizer:
    """cl100k_base restricted to ``cl100k_ids`` (in compact order), plus specials and bytes."""

    pad_id = PAD_ID
    bos_id = BOS_ID
    eos_id = EOS_ID
    n_specials = N_SPECIALS
    specials = SPECIALS

    def __init__(self, cl100k_ids: Sequence[int], string_placeholders: bool = False, name_placeholders: bool = False,
                 common_words: Iterable[str] | None = None, placeholder_tokens: int = 0, neighbour_code: bool = False):
        problems = _problems(cl100k_ids)
        if problems:
            raise ValueError("invalid cl100k_ids: " + "; ".join(problems))
        if not 0 <= placeholder_tokens <= MAX_PLACEHOLDER_TOKENS:
            raise ValueError(f"placeholder_tokens must be in 0..{MAX_PLACEHOLDER_TOKENS}, got {placeholder_tokens}")
        tables = base_tables()
        self.cl100k_ids: tuple[int, ...] = tuple(int(t) for t in cl100k_ids)
        # Texts are masked with nmt.placeholders before encoding (the Translator's job, not encode's).
        self.string_placeholders = bool(string_placeholders)
        self.name_placeholders = bool(name_placeholders)
        # With tokenize.rare_words: the description words that stay words; any other becomes _ID:i_.
        self.common_words: frozenset[str] | None = None if common_words is None else frozenset(common_words)
        # tokenize.neighbour_code: a source is the description, EOS, then its nearest training pair's
        # code (nmt.neighbours; the Translator's job, as masking is).
        self.neighbour_code = bool(neighbour_code)
        # K: _STR:0_ .. _STR:{K-1}_ and _ID:0_ .. _ID:{K-1}_ are single tokens after the cl100k ones.
        self.placeholder_tokens = int(placeholder_tokens)
        self._first_placeholder_id = FIRST_CL100K_ID + len(self.cl100k_ids)
        self.vocab_size = self._first_placeholder_id + 2 * self.placeholder_tokens
        # cl100k id -> compact id; -1 = not in the vocabulary, falls back to its bytes.
        lut = np.full(tables.n, -1, dtype=np.int32)
        lut[tables.single_byte] = BYTE_OFFSET + np.arange(N_BYTES, dtype=np.int32)
        lut[list(self.cl100k_ids)] = FIRST_CL100K_ID + np.arange(len(self.cl100k_ids), dtype=np.int32)
        self._lut = lut
        self._id_bytes: list[bytes] = (
            [b""] * N_SPECIALS
            + [bytes([b]) for b in range(N_BYTES)]
            + [tables.token_bytes[t] for t in self.cl100k_ids]
            + [fmt.format(i).encode() for fmt in (placeholders.PLACEHOLDER, placeholders.NAME_PLACEHOLDER)
               for i in range(self.placeholder_tokens)]
        )

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int, max_vocab: int,
              string_placeholders: bool = False, name_placeholders: bool = False,
              common_words: Iterable[str] | None = None, placeholder_tokens: int = 0,
              batch: int = _BUILD_CHUNK, neighbour_code: bool = False) -> Tokenizer:
        """Keep the cl100k tokens seen at least ``min_freq`` times in ``texts``, at most ``max_vocab``.

        Order: frequency descending, then cl100k id ascending, so the result depends only on the
        multiset of texts. Single-byte tokens are not candidates (they are the byte tokens).

        ``string_placeholders``: ``texts`` are already masked; the tokens that spell the first
        :data:`KEPT_PLACEHOLDERS` placeholders between quotes are kept whatever their count, ahead
        of all others. With ``placeholder_tokens`` those are single tokens instead, and are not
        counted as cl100k pieces. ``texts`` are consumed ``batch`` at a time: any iterable, in flat memory.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        if max_vocab < 0:
            raise ValueError(f"max_vocab must be >= 0, got {max_vocab}")
        tables = base_tables()
        counts = np.zeros(tables.n, dtype=np.int64)
        it = iter(texts)
        while chunk := list(itertools.islice(it, batch)):
            if placeholder_tokens:  # the pieces between placeholder tokens, as encode_arrays sees them
                chunk = [piece for text in chunk for piece in _cut_at(text, placeholder_tokens)[0]]
            flat, _ = encode_base(chunk)
            counts += np.bincount(flat, minlength=tables.n)
        counts[tables.single_byte] = 0
        required = np.zeros(tables.n, dtype=bool)
        if string_placeholders and not placeholder_tokens:
            required[encode_base(placeholders.vocabulary_texts(KEPT_PLACEHOLDERS))[0]] = True
            required[tables.single_byte] = False
        candidates = np.flatnonzero((counts >= min_freq) | required)
        order = np.lexsort((candidates, -counts[candidates], ~required[candidates]))  # last key is the primary one
        return cls(candidates[order][:max_vocab].tolist(), string_placeholders, name_placeholders, common_words,
                   placeholder_tokens, neighbour_code)

    # ------------------------------------------------------------------ encoding
    def encode(self, text: str) -> list[int]:
        """Compact ids of ``text`` (no specials added)."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Compact ids of each text (no specials added)."""
        ids, offsets = self.encode_arrays(texts)
        flat, bounds = ids.tolist(), offsets.tolist()
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def encode_arrays(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All texts' compact ids back to back (int32 [total]) and offsets (int64 [n+1]).

        Text ``i`` is ``ids[offsets[i]:offsets[i+1]]``. Vectorised: one table lookup maps the
        cl100k ids; tokens outside the vocabulary are expanded in place into their bytes. With
        placeholder tokens, the pieces between placeholders are encoded that way, all texts'
        pieces in one batch, and the placeholder ids are put back between them.
        """
        texts = list(texts)
        if not self.placeholder_tokens:
            return self._encode_pieces(texts)
        pieces, between = [], []  # every text's pieces back to back; the placeholder ids after each piece
        n_pieces = np.empty(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            parts, ids = _cut_at(text, self.placeholder_tokens)
            pieces += parts
            between += [self._first_placeholder_id + j for j in ids] + [-1]  # -1: nothing after the last piece
            n_pieces[i] = len(parts)
        piece_ids, piece_offsets = self._encode_pieces(pieces)
        piece_lens = np.diff(piece_offsets)  # [P]
        after = np.asarray(between, dtype=np.int32)  # [P]
        out_lens = piece_lens + (after >= 0)  # [P] a piece, then its placeholder if any
        out_start = np.cumsum(out_lens) - out_lens  # [P]
        ids = np.empty(int(out_lens.sum()), dtype=np.int32)
        # Token j of piece p goes to out_start[p] + j.
        within = np.arange(len(piece_ids)) - np.repeat(piece_offsets[:-1], piece_lens)
        ids[np.repeat(out_start, piece_lens) + within] = piece_ids
        has = after >= 0
        ids[(out_start + piece_lens)[has]] = after[has]
        piece_bounds = np.concatenate(([0], np.cumsum(n_pieces)))  # [n+1] into the pieces
        out_bounds = np.concatenate(([0], np.cumsum(out_lens)))  # [P+1] into the output
        return ids, out_bounds[piece_bounds]

    def _encode_pieces(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode_arrays` without placeholder tokens."""
        base, counts = encode_base(texts)  # [T], [n]
        mapped = self._lut[base]  # [T] int32, -1 where not in the vocabulary
        miss = mapped < 0
        out_len = np.ones(len(base), dtype=np.int64)  # ids each cl100k token becomes
        if miss.any():
            tables = base_tables()
            missing = base[miss]  # [M]
            n_bytes = tables.lengths[missing]  # [M]
            out_len[miss] = n_bytes
            out_start = np.cumsum(out_len) - out_len  # [T] first output position of each token
            ids = np.empty(int(out_len.sum()), dtype=np.int32)
            ids[out_start[~miss]] = mapped[~miss]
            # byte j of missing token m goes to out_start[m] + j and is flat[starts[m] + j]
            within = np.arange(int(n_bytes.sum())) - np.repeat(np.cumsum(n_bytes) - n_bytes, n_bytes)
            dest = np.repeat(out_start[miss], n_bytes) + within
            src = np.repeat(tables.starts[missing], n_bytes) + within
            ids[dest] = BYTE_OFFSET + tables.flat[src].astype(np.int32)
        else:
            ids = mapped
        token_bounds = np.concatenate(([0], np.cumsum(counts)))  # [n+1] into the cl100k stream
        out_bounds = np.concatenate(([0], np.cumsum(out_len)))  # [T+1] into the compact stream
        return ids, out_bounds[token_bounds]

    # ------------------------------------------------------------------ decoding
    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: the bytes of every non-special id, UTF-8 decoded with replacement.

        Specials (including ``<eos>``) contribute nothing and do not stop decoding. Any id
        outside ``0..vocab_size-1`` raises ValueError. Accepts lists, numpy arrays and tensors.
        """
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if ids:
            lo, hi = min(ids), max(ids)
            if lo < 0 or hi >= self.vocab_size:
                bad = lo if lo < 0 else hi
                raise ValueError(f"token id {bad} is outside this tokenizer's range 0..{self.vocab_size - 1}")
        return b"".join(map(self._id_bytes.__getitem__, ids)).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes id ``token_id`` stands for (empty for specials)."""
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} is outside this tokenizer's range 0..{self.vocab_size - 1}")
        return self._id_bytes[token_id]

    def is_byte(self, token_id: int) -> bool:
        return BYTE_OFFSET <= token_id < FIRST_CL100K_ID

    @property
    def placeholder_ids(self) -> list[int]:
        """The ids of the placeholder tokens (empty without them): a source's own are the only ones
        its output can use."""
        return list(range(self._first_placeholder_id, self.vocab_size))

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        data = {
            "format": FORMAT,
            "version": VERSION,
            "base_encoding": BASE_ENCODING,
            "specials": list(SPECIALS),
            "cl100k_ids": list(self.cl100k_ids),
        }
        if self.string_placeholders:
            data["string_placeholders"] = True
        if self.name_placeholders:
            data["name_placeholders"] = True
        if self.common_words is not None:
            data["common_words"] = sorted(self.common_words)
        if self.placeholder_tokens:
            data["placeholder_tokens"] = self.placeholder_tokens
        if self.neighbour_code:
            data["neighbour_code"] = True
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "tokenizer") -> Tokenizer:
        """Validate and rebuild; raise :class:`ModelFileError` naming ``source`` and every problem."""
        problems = []
        if not isinstance(data, dict):
            problems.append(f"expected a JSON object, got {type(data).__name__}")
        else:
            required = ("format", "version", "base_encoding", "specials", "cl100k_ids")
            known = (*required, "string_placeholders", "name_placeholders", "common_words", "placeholder_tokens",
                     "neighbour_code")
            problems += [f"unknown key {k!r} (known keys: {', '.join(known)})" for k in data if k not in known]
            problems += [f"missing key {k!r}" for k in required if k not in data]
            if "format" in data and data["format"] != FORMAT:
                problems.append(f"format is {data['format']!r}, expected {FORMAT!r} (not a tokenizer file?)")
            if "version" in data and data["version"] != VERSION:
                problems.append(f"version {data['version']!r} is not supported (this code reads version {VERSION})")
            if "base_encoding" in data and data["base_encoding"] != BASE_ENCODING:
                problems.append(f"base_encoding is {data['base_encoding']!r}, expected {BASE_ENCODING!r}")
            if "specials" in data and data["specials"] != list(SPECIALS):
                problems.append(f"specials are {data['specials']!r}, expected {list(SPECIALS)!r}")
            if "cl100k_ids" in data:
                problems += _problems(data["cl100k_ids"])
            for flag in ("string_placeholders", "name_placeholders", "neighbour_code"):
                if not isinstance(data.get(flag, False), bool):
                    problems.append(f"{flag} must be true or false, got {data[flag]!r}")
            words = data.get("common_words", [])
            if not (isinstance(words, list) and all(isinstance(w, str) for w in words)):
                problems.append("common_words must be a list of strings")
            k = data.get("placeholder_tokens", 0)
            if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_PLACEHOLDER_TOKENS:
                problems.append(f"placeholder_tokens must be an integer in 0..{MAX_PLACEHOLDER_TOKENS}, got {k!r}")
        if problems:
            raise ModelFileError(
                f"{source}: invalid tokenizer file: " + "; ".join(problems)
                + ". Rebuild it with the tokenize stage (`dvc repro tokenize`) or re-export the model."
            )
        return cls(data["cl100k_ids"], data.get("string_placeholders", False), data.get("name_placeholders", False),
                   data.get("common_words"), data.get("placeholder_tokens", 0), data.get("neighbour_code", False))

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON, atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        return cls.from_dict(read_tokenize_output(path, "the tokenizer"), source=str(path))

    # ------------------------------------------------------------------ misc
    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Tokenizer) and self.cl100k_ids == other.cl100k_ids
                and self.string_placeholders == other.string_placeholders
                and self.name_placeholders == other.name_placeholders
                and self.common_words == other.common_words
                and self.placeholder_tokens == other.placeholder_tokens
                and self.neighbour_code == other.neighbour_code)

    def __hash__(self) -> int:
        return hash((self.cl100k_ids, self.string_placeholders, self.name_placeholders, self.common_words,
                     self.placeholder_tokens, self.neighbour_code))

    def __repr__(self) -> str:
        extra = ", string_placeholders=True" if self.string_placeholders else ""
        extra += ", name_placeholders=True" if self.name_placeholders else ""
        extra += f", common_words={len(self.common_words)}" if self.common_words is not None else ""
        extra += f", placeholder_tokens={self.placeholder_tokens}" if self.placeholder_tokens else ""
        extra += ", neighbour_code=True" if self.neighbour_code else ""
        return f"Tokenizer(vocab_size={self.vocab_size}, cl100k_kept={len(self.cl100k_ids)}{extra})"
