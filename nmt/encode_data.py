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
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from nmt import placeholders
from nmt.config import TokenizeConfig
from nmt.errors import DataError
from nmt.io import atomic_path, atomic_write_json, read_json, read_jsonl
from nmt.tokenizer import BYTE_OFFSET, FIRST_CL100K_ID, PLACEHOLDER_TOKENS, Tokenizer

SPLITS = ("train", "dev", "test")
SPLIT_FORMAT = "nmt-tokenized-split"
SPLIT_VERSION = 1
_KEYS = ("src", "src_offsets", "tgt", "tgt_offsets")
_FIX = "re-run the tokenize stage (`dvc repro tokenize`)"
LITERALS_FILE = "literals.json"


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

    def _slice(self, ids: torch.Tensor, offsets: torch.Tensor, i: int) -> torch.Tensor:
        if not 0 <= i < len(self):
            raise IndexError(f"pair {i} out of range 0..{len(self) - 1}")
        return ids[int(offsets[i]) : int(offsets[i + 1])]

    def src(self, i: int) -> torch.Tensor:
        """Source ids of pair ``i`` (int32 view, no specials)."""
        return self._slice(self._src, self._src_offsets, i)

    def tgt(self, i: int) -> torch.Tensor:
        """Target (code) ids of pair ``i`` (int32 view, no specials)."""
        return self._slice(self._tgt, self._tgt_offsets, i)

    def save(self, path: str | os.PathLike) -> None:
        """Write the four tensors atomically; the metadata names format, version and vocab size."""
        tensors = {"src": self._src, "src_offsets": self._src_offsets, "tgt": self._tgt, "tgt_offsets": self._tgt_offsets}
        # One metadata key holding sorted JSON: safetensors writes several keys in random order.
        meta = json.dumps({"format": SPLIT_FORMAT, "version": SPLIT_VERSION, "vocab_size": self.vocab_size}, sort_keys=True)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"nmt": meta})

    @classmethod
    def load(cls, path: str | os.PathLike, vocab_size: int | None = None) -> TokenizedSplit:
        """Read and validate a split; ``vocab_size`` (if given) must match the one it was made with."""
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{p}: file not found; {_FIX}")
        try:
            with safe_open(str(p), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
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


def _percentiles(lengths: np.ndarray) -> dict[str, int]:
    """p50/p90/p99/max of a length array (each an observed length: numpy's "higher" method)."""
    if len(lengths) == 0:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0}
    p = np.percentile(lengths, [50, 90, 99], method="higher")
    return {"p50": int(p[0]), "p90": int(p[1]), "p99": int(p[2]), "max": int(lengths.max())}


def _byte_pct(ids: np.ndarray) -> float:
    """Share of ids that are byte tokens, in percent."""
    if len(ids) == 0:
        return 0.0
    return 100.0 * float(((ids >= BYTE_OFFSET) & (ids < FIRST_CL100K_ID)).mean())


def _mask_rows(rows: list[dict], names: bool,
               common: frozenset[str] | None) -> tuple[list[dict], list[list[str]], dict]:
    """Masked copies of ``rows``, each pair's literals, and how many code literals were covered."""
    masked, literals, n_code, n_covered = [], [], 0, 0
    for r in rows:
        nl, code, lits = placeholders.mask_pair(r["nl"], r["code"], names, common)
        masked.append({"nl": nl, "code": code})
        literals.append(lits)
        found, covered = placeholders.coverage(r["nl"], r["code"])
        n_code, n_covered = n_code + found, n_covered + covered
    stats = {"code_literals": n_code, "covered": n_covered,
             "covered_pct": 100.0 * n_covered / n_code if n_code else 0.0,
             "pairs_with_literals": sum(map(bool, literals))}
    return masked, literals, stats


def load_literals(data_dir: Path, split: str, n: int) -> list[list[str]]:
    """The literals of the first ``n`` pairs of ``split`` (written with string placeholders on)."""
    path = Path(data_dir) / LITERALS_FILE
    table = read_json(path).get(split) if path.is_file() else None
    if not isinstance(table, list) or len(table) < n:
        raise DataError(f"{path}: no literals for the {split} split (needed with string placeholders); {_FIX}")
    return table[:n]


def tokenize_dataset(raw_dir: Path, out_dir: Path, cfg: TokenizeConfig) -> dict:
    """Build the vocabulary from ``raw_dir/train.jsonl``, encode every split, write ``out_dir``.

    Returns the statistics also written to ``out_dir/stats.json``.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    rows = {split: read_jsonl(raw_dir / f"{split}.jsonl") for split in SPLITS}
    if not rows["train"]:
        raise DataError(f"{raw_dir / 'train.jsonl'}: no pairs to build the vocabulary from; re-run the download stage")
    placeholder_stats, literals = {}, {}
    # Counted on the raw training descriptions: which words stay words (tokenize.rare_words).
    common = placeholders.common_words((r["nl"] for r in rows["train"]), cfg.rare_words) if cfg.rare_words else None
    if cfg.string_placeholders:
        for split in SPLITS:
            rows[split], literals[split], placeholder_stats[split] = _mask_rows(rows[split], cfg.name_placeholders,
                                                                                common)
    train = rows["train"]
    tok = Tokenizer.build([r["nl"] for r in train] + [r["code"] for r in train], cfg.min_freq, cfg.max_vocab,
                          cfg.string_placeholders, cfg.name_placeholders, common,
                          PLACEHOLDER_TOKENS if cfg.placeholder_tokens else 0)
    tok.save(out_dir / "vocab.json")
    if cfg.string_placeholders:
        atomic_write_json(out_dir / LITERALS_FILE, literals)
    stats: dict = {
        "vocab_size": tok.vocab_size,
        "n_cl100k_kept": len(tok.cl100k_ids),
        "n_specials": tok.n_specials,
        "n_byte_tokens": FIRST_CL100K_ID - BYTE_OFFSET,
        "min_freq": cfg.min_freq,
        "max_vocab": cfg.max_vocab,
        "splits": {},
    }
    for split in SPLITS:
        src = tok.encode_arrays([r["nl"] for r in rows[split]])
        tgt = tok.encode_arrays([r["code"] for r in rows[split]])
        TokenizedSplit.from_arrays(src, tgt, tok.vocab_size).save(out_dir / f"{split}.safetensors")
        stats["splits"][split] = {
            "n_pairs": len(rows[split]),
            "src_tokens": int(len(src[0])),
            "tgt_tokens": int(len(tgt[0])),
            "src_byte_pct": _byte_pct(src[0]),
            "tgt_byte_pct": _byte_pct(tgt[0]),
            "byte_pct": _byte_pct(np.concatenate([src[0], tgt[0]])),
            "src_len": _percentiles(np.diff(src[1])),
            "tgt_len": _percentiles(np.diff(tgt[1])),
        }
        if cfg.string_placeholders:
            stats["splits"][split]["string_placeholders"] = placeholder_stats[split]
    atomic_write_json(out_dir / "stats.json", stats)
    return stats
