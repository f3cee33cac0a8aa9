"""The tokenize stage's files, as the train stage reads them: token ids per split, and literals.

In ``data/tokenized`` (written by :mod:`nmt.stages.tokenize`):

- ``{train,dev,test}.safetensors``: four tensors per split (:class:`TokenizedSplit`):
  ``src`` / ``tgt`` (int32, every pair's ids back to back, no specials) and ``src_offsets`` /
  ``tgt_offsets`` (int64, n+1 entries: pair ``i`` is ``src[src_offsets[i]:src_offsets[i+1]]``).
  The header's metadata records the format, its version and the vocabulary size the ids belong
  to, which :meth:`TokenizedSplit.load` checks. :class:`SplitWriter` writes one a chunk of pairs
  at a time, so the stage never holds a whole split.
- ``literals.json`` (with ``tokenize.string_placeholders``): each pair's literals per split,
  ``{"train": [["a", "b"], [], ...], "dev": [...], "test": [...]}``, one pair a line
  (:class:`LiteralsWriter`): what restores a decoded dev output (:func:`load_literals`).

**Memory-mapped.** :meth:`TokenizedSplit.load` maps a split's ids from its file (``np.memmap``,
copy-on-write) instead of reading them into memory: a large corpus is gigabytes of ids while a
batch needs those of a few hundred pairs, so the train stage's memory does not grow with the data,
and processes that map the same file (the ranks of a DDP run) share its pages in the page cache.
Hence the layout: flat int32/int64 arrays, each starting aligned to its item size, which map as
they lie.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from nmt.errors import DataError
from nmt.io import atomic_path, read_json

SPLIT_FORMAT = "nmt-tokenized-split"
SPLIT_VERSION = 1
_KEYS = ("src", "src_offsets", "tgt", "tgt_offsets")
_FIX = "re-run the tokenize stage (`dvc repro tokenize`)"
LITERALS_FILE = "literals.json"
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

    def sources_cut_at(self, token: int) -> TokenizedSplit:
        """The same pairs with each source cut before its first ``token``, whole where it has none: the
        descriptions of sources completed with a neighbour's code after EOS (:mod:`nmt.neighbours`)."""
        src, offsets = self._arrays[0], self._arrays[1]
        pair = np.repeat(np.arange(len(self)), np.diff(offsets))  # [total] the pair of each id
        position = np.arange(len(src)) - offsets[pair]  # [total] its place in its source
        lengths = np.diff(offsets)  # [n]
        hits = np.flatnonzero(src == token)  # [h]
        first = np.full(len(self), np.iinfo(np.int64).max)
        np.minimum.at(first, pair[hits], position[hits])
        lengths = np.minimum(lengths, first)
        keep = position < lengths[pair]
        new_offsets = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(lengths)])
        return TokenizedSplit(torch.from_numpy(np.ascontiguousarray(src[keep], dtype=np.int32)),
                              torch.from_numpy(new_offsets.astype(np.int64)), self._tgt, self._tgt_offsets,
                              self.vocab_size)

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


class LiteralsWriter:
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
