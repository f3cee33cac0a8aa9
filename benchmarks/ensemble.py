"""Several models decoding as one: the mean of their next-token probabilities (issue 24's ensemble lever).

:class:`Ensemble` has the decoding interface beam search uses (:func:`nmt.decoding.search.decode`:
``encode``, ``new_cache``, ``decode_step``, ``select_cache``, ``reorder_hypotheses``,
``drop_sources``), so a :class:`~nmt.decoding.translator.Translator` decodes with it as with one
model: its n-best is the ensemble's. ``python -m benchmarks.rerank_weights MODEL_DIR DATA --ensemble W.safetensors:W.json``
measures what it is worth: the n-best's ceiling and the reranked exact match, against the model alone.

The members must share the tokenizer (the same ids); they may differ in width and depth. Each
step, each member's scores become log-probabilities (a copy model's already are) and the
ensemble's are ``log(mean_i p_i) = logsumexp_i(log p_i) - log n``: the probability average, the
usual ensemble of NMT (fairseq's EnsembleModel), not the log-probability average, which would
let one member's near-zero veto a token the others agree on.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn

from nmt.checkpoint import load_model
from nmt.model import Cache, Transformer


class Ensemble(nn.Module):
    """``members`` (the first one's configuration, vocabulary and padding id stand for all) as one decoder."""

    def __init__(self, members: list[Transformer]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        sizes = {m.vocab_size for m in members}
        if len(sizes) > 1:
            raise ValueError(f"ensemble members must share the vocabulary, got sizes {sorted(sizes)}")
        self.members = nn.ModuleList(members)
        first = members[0]
        self.cfg, self.pad_id, self.vocab_size, self.embed = first.cfg, first.pad_id, first.vocab_size, first.embed
        self._widths = [m.cfg.d_model for m in members]
        self._cache_sizes: list[int] = []

    def restrict_to_source(self, ids: list[int]) -> None:
        for m in self.members:
            m.restrict_to_source(ids)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """(B, S) ids and mask -> the members' memories side by side, (B, S, sum of d_model).

        One tensor, so the search's row selections (repeat, index) move every member's memory at once."""
        return torch.cat([m.encode(src, src_mask) for m in self.members], dim=-1)

    def new_cache(self, src: torch.Tensor | None = None) -> Cache:
        """The members' caches, one after another in one list (the search only selects rows in it)."""
        caches = [m.new_cache(src) for m in self.members]
        self._cache_sizes = [len(c) for c in caches]
        return [layer for c in caches for layer in c]

    def _member_caches(self, cache: Cache) -> list[Cache]:
        out, start = [], 0
        for n in self._cache_sizes:
            out.append(cache[start:start + n])
            start += n
        return out

    def decode_step(self, token: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
                    cache: Cache) -> torch.Tensor:
        """(B,) newest tokens -> (B, V) log of the members' mean next-token probability."""
        memories = memory.split(self._widths, dim=-1)  # each (B, S, D_i)
        logps = [torch.log_softmax(m.decode_step(token, mem, src_mask, c).float(), dim=-1)  # (B, V)
                 for m, mem, c in zip(self.members, memories, self._member_caches(cache))]
        return torch.logsumexp(torch.stack(logps), dim=0) - math.log(len(logps))  # (B, V)

    select_cache = staticmethod(Transformer.select_cache)
    reorder_hypotheses = staticmethod(Transformer.reorder_hypotheses)
    drop_sources = staticmethod(Transformer.drop_sources)


def parse_member(spec: str) -> tuple[Path, Path]:
    """``WEIGHTS.safetensors:CONFIG.json`` (a checkpoint such as models/best.*) -> the two paths."""
    weights, sep, config = spec.partition(":")
    if not sep or not weights or not config:
        raise ValueError(f"ensemble member {spec!r}: give it as WEIGHTS.safetensors:CONFIG.json")
    for path in (weights, config):
        if not Path(path).is_file():
            raise FileNotFoundError(f"ensemble member {spec!r}: {path} not found")
    return Path(weights), Path(config)


def with_members(model: Transformer, members: list[tuple[Path, Path]], placeholder_ids: list[int]) -> nn.Module:
    """``model`` and the checkpoints ``members`` (on its device, in eval mode) as one :class:`Ensemble`;
    ``model`` alone when there are none. Decoding stays restricted to the source's placeholders."""
    if not members:
        return model
    device = model.embed.weight.device
    ensemble = Ensemble([model] + [load_model(w, c, device)[0].eval() for w, c in members]).eval()
    ensemble.restrict_to_source(placeholder_ids)
    return ensemble
