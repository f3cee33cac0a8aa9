"""Reconstruction: how well a code hypothesis gives its description back, under the reverse model.

The reverse model (:func:`nmt.stages.train.train_reverse`) reads code and writes its description. For a
beam hypothesis y of description x, log P(x | y) is high when y says everything x says: a
hypothesis that dropped a clause or wrote `<` for "lesser than or equal" explains x worse. The
lexical reranker adds it to the forward score with weight ``evaluate.rerank_reconstruction``
(the "reconstruction" feature of Yin & Neubig 2019's reranker).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nmt.batching import pad, source_ids
from nmt.model import Transformer, target_nll

ROWS_PER_PASS = 64  # (rows, T, V) float32 log-probabilities: 64 x 64 x 8k is 128 MB


@torch.no_grad()
def reconstruction_scores(model: Transformer, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], bos_id: int,
                          eos_id: int) -> list[float]:
    """log P(description | code) of each (code ids, description ids) pair: teacher-forced, summed
    over the description's tokens and its EOS (ids without specials, as the tokenizer gives them)."""
    limit, device = model.cfg.max_len, model.embed.weight.device
    out: list[float] = []
    for start in range(0, len(pairs), ROWS_PER_PASS):
        chunk = pairs[start : start + ROWS_PER_PASS]
        src = pad([source_ids(code, eos_id, limit) for code, _ in chunk], model.pad_id).to(device)  # (n, S)
        targets = [list(description[: limit - 1]) for _, description in chunk]
        tgt_in = pad([[bos_id] + t for t in targets], model.pad_id).to(device)  # (n, T)
        tgt_out = pad([t + [eos_id] for t in targets], model.pad_id).to(device)  # (n, T)
        nll = target_nll(model, model.pad_id, src, src != model.pad_id, tgt_in, tgt_out, per_sequence=True)  # (n,)
        out.extend((-nll).tolist())
    return out
