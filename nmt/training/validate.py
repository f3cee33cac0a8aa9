"""Dev evaluation during training: teacher-forced loss, and BLEU / exact match of real decoding.

Real decoding, never the teacher-forced argmax: greedy, or beam search with ``train.eval_beam_size``
> 1, through :func:`nmt.decoding.search.decode` as the translator decodes; outputs and references
have their string placeholders restored, so dev BLEU counts literals as the evaluate stage does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nmt import metrics
from nmt.batching import collate, token_budget_batches
from nmt.config import TrainConfig
from nmt.data.tokenized import TokenizedSplit
from nmt.decoding.search import decode
from nmt.decoding.settings import DecodeSettings
from nmt.model import Transformer, target_nll
from nmt.placeholders import restore
from nmt.tokenizer import Tokenizer
from nmt.training.distributed import Dist, all_sum, gather_objects
from nmt.training.stream import as_lists


def dev_decoding(cfg: TrainConfig) -> DecodeSettings:
    """How dev is decoded: ``train.eval_beam_size`` beams (1: greedy), at most ``train.eval_max_len`` tokens."""
    return DecodeSettings(beam_size=cfg.eval_beam_size, max_len_a=0.0, max_len_b=cfg.eval_max_len)

@dataclass
class DevSet:
    srcs: list[list[int]]
    tgts: list[list[int]]
    references: list[str]
    batches: list[list[int]]
    literals: list[list[str]]  # per pair, what its string placeholders stand for (empty lists when off)
    python: bool = False  # the references are Python lines: also score the same syntax tree

    def text(self, i: int, ids: list[int], tok: Tokenizer) -> str:
        """Decoded ids of pair ``i``'s output, placeholders restored: what the user would get."""
        return restore(tok.decode(ids), self.literals[i])


def make_dev_set(split: TokenizedSplit, tok: Tokenizer, n_examples: int, batch_tokens: int,
                 literals: list[list[str]] | None = None, python: bool = False) -> DevSet:
    """The first ``n_examples`` dev pairs (all when 0), in length-bucketed batches; ``python``: the
    targets are Python lines, so dev also scores :func:`nmt.metrics.exact_match_ast`."""
    n = len(split) if n_examples == 0 else min(n_examples, len(split))
    srcs, tgts = as_lists(split, n)
    batches = token_budget_batches([len(s) for s in srcs], [len(t) for t in tgts], batch_tokens)
    dev = DevSet(srcs, tgts, [], batches, literals[:n] if literals is not None else [[] for _ in range(n)], python)
    dev.references = [dev.text(i, t, tok) for i, t in enumerate(tgts)]
    return dev


@torch.no_grad()
def evaluate_dev(model: Transformer, dev: DevSet, tok: Tokenizer, cfg: TrainConfig, device: torch.device,
                 d: Dist = Dist()) -> dict:
    """Teacher-forced dev loss, then real decoding (greedy or beam: :func:`dev_decoding`, through
    the decoder the translator uses) scored with BLEU and exact match.

    With several processes each decodes every world_size-th batch; the predictions and loss sums
    are gathered, so every rank gets the same scores.
    """
    model.eval()
    settings = dev_decoding(cfg)
    total_loss, total_tokens = 0.0, 0
    predictions: dict[int, str] = {}
    max_len = model.cfg.max_len
    for indices in dev.batches[d.rank :: d.world_size]:
        batch = collate([dev.srcs[i] for i in indices], [dev.tgts[i] for i in indices],
                        tok.pad_id, tok.bos_id, tok.eos_id, max_len).to(device)
        total_loss += target_nll(model, model.pad_id, batch.src, batch.src_mask, batch.tgt_in, batch.tgt_out).item()
        total_tokens += batch.n_tokens
        found = decode(model, batch.src, batch.src_mask, tok.bos_id, tok.eos_id, settings)
        for i, hyps in zip(indices, found):
            predictions[i] = dev.text(i, hyps[0].tokens, tok)
    model.train()
    total_loss, total_tokens = all_sum([total_loss, float(total_tokens)], d, device)
    for part in gather_objects(predictions, d):
        predictions.update(part)
    hyps = [predictions[i] for i in range(len(dev.references))]
    scores = {
        "dev_loss": total_loss / max(1, total_tokens),
        "dev_bleu": metrics.bleu(hyps, dev.references),
        "dev_exact_match": metrics.exact_match(hyps, dev.references),
    }
    if dev.python:  # the count TranX's Django evaluator makes: quote style and brackets do not matter
        scores["dev_exact_match_ast"] = metrics.exact_match_ast(hyps, dev.references)
    return scores
