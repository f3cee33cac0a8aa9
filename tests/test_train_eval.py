"""Dev scoring during training comes from real decoding: greedy by default, beam when configured."""

from __future__ import annotations

import torch

from nmt.batching import collate
from nmt.checkpoint import load_model
from nmt.config import TrainConfig
from nmt.data.tokenized import TokenizedSplit
from nmt.decoding.search import beam_search, greedy
from nmt.tokenizer import Tokenizer
from nmt.training import validate as train

from .conftest import synthetic_pairs


def scored_hypotheses(monkeypatch, tiny_export, cfg: TrainConfig) -> tuple[list[str], list[str], list[str]]:
    """(hypotheses evaluate_dev scored, direct greedy decode, direct beam decode) on six dev pairs."""
    tok = Tokenizer.load(tiny_export / "tokenizer.json")
    model, _ = load_model(tiny_export / "model.safetensors", tiny_export / "config.json")
    pairs = synthetic_pairs(6, seed=3)
    split = TokenizedSplit.from_arrays(tok.encode_arrays([p["nl"] for p in pairs]),
                                       tok.encode_arrays([p["code"] for p in pairs]), tok.vocab_size)
    dev = train.make_dev_set(split, tok, 0, 10_000)
    assert len(dev.batches) == 1  # one batch, in dev order, so the direct decodes see the same rows
    seen: list[str] = []
    monkeypatch.setattr(train.metrics, "bleu", lambda hyps, refs: seen.extend(hyps) or 0.0)
    train.evaluate_dev(model, dev, tok, cfg, torch.device("cpu"))
    b = collate([dev.srcs[i] for i in dev.batches[0]], [dev.tgts[i] for i in dev.batches[0]],
                tok.pad_id, tok.bos_id, tok.eos_id, model.cfg.max_len)
    by_row = lambda hyps: [tok.decode(h.tokens) for _, h in sorted(zip(dev.batches[0], hyps))]
    g = by_row(greedy(model, b.src, b.src_mask, tok.bos_id, tok.eos_id, 8))
    bs = by_row([n[0] for n in beam_search(model, b.src, b.src_mask, tok.bos_id, tok.eos_id, 8, beam_size=3)])
    assert g != bs, "greedy and beam must differ on this model for the test to mean anything"
    return seen, g, bs


def test_dev_decode_is_greedy_by_default(monkeypatch, tiny_export):
    seen, g, _ = scored_hypotheses(monkeypatch, tiny_export, TrainConfig(eval_max_len=8))
    assert seen == g


def test_dev_decode_is_beam_search_when_configured(monkeypatch, tiny_export):
    seen, _, bs = scored_hypotheses(monkeypatch, tiny_export, TrainConfig(eval_max_len=8, eval_beam_size=3))
    assert seen == bs
