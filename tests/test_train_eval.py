"""Dev scoring during training comes from real decoding: greedy by default, beam when configured."""

from __future__ import annotations

import json

import torch

from nmt.batching import collate
from nmt.checkpoint import load_model
from nmt.config import TrainConfig
from nmt.data.tokenized import TokenizedSplit
from nmt.decoding.search import Hypothesis, beam_search, greedy
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


def test_python_dev_lines_also_score_the_same_syntax_tree(monkeypatch, tiny_export):
    """Exact match counts whitespace tokens; for Python code dev also counts the lines whose syntax
    tree is the reference's (quote style does not matter), as TranX's Django evaluator does."""
    tok = Tokenizer.load(tiny_export / "tokenizer.json")
    model, _ = load_model(tiny_export / "model.safetensors", tiny_export / "config.json")
    refs, outputs = ["x = 'a'", "y = f ( 1 )"], ['x = "a"', "y = g ( 1 )"]
    split = TokenizedSplit.from_arrays(tok.encode_arrays(["set x to a", "call f with 1"]), tok.encode_arrays(refs),
                                       tok.vocab_size)
    decoded = lambda *args, **kwargs: [[Hypothesis(tok.encode(line), 0.0)] for line in outputs]
    monkeypatch.setattr(train, "decode", decoded)
    for python, expected in ((True, {"dev_exact_match": 0.0, "dev_exact_match_ast": 50.0}),
                             (False, {"dev_exact_match": 0.0})):
        dev = train.make_dev_set(split, tok, 0, 10_000, python=python)
        dev.batches = [[0, 1]]  # both rows in one batch, in order, as the stand-in decoder returns them
        scores = train.evaluate_dev(model, dev, tok, TrainConfig(eval_max_len=8), torch.device("cpu"))
        assert dev.references == refs
        assert {k: v for k, v in scores.items() if k.startswith("dev_exact")} == expected


def test_the_curve_leaves_a_score_dev_did_not_make_empty(tmp_path):
    """A row resumed from before the same-syntax-tree column existed, or of code that is not Python."""
    from nmt.results import read_curve
    from nmt.training.loop import History

    rows = [{"step": 10, "train_loss": 2.5, "dev_loss": 2.0, "dev_bleu": 30.0, "dev_exact_match": 10.0, "lr": 0.001},
            {"step": 20, "train_loss": 2.0, "dev_loss": 1.5, "dev_bleu": 40.0, "dev_exact_match": 20.0,
             "dev_exact_match_ast": 25.0, "lr": 0.001}]
    text = History(rows).csv()
    assert text.splitlines()[:2] == ["step,train_loss,dev_loss,dev_bleu,dev_exact_match,dev_exact_match_ast,lr",
                                     "10,2.5,2,30,10,,0.001"]
    (tmp_path / "curve.csv").write_text(text)
    assert read_curve(tmp_path / "curve.csv") == [{k: float(v) for k, v in row.items()} for row in rows]


def test_the_codes_language_comes_from_the_download_stages_stats(tmp_path):
    from nmt.data.source import language_of

    assert language_of(tmp_path) == "unknown"  # no stats.json: tokenized data alone
    for source, language in (("django", "python"), ("stdlib", "python"), ("concode", "java"), ("jsonl", "unknown")):
        (tmp_path / "stats.json").write_text(json.dumps({"source": source}))
        assert language_of(tmp_path) == language
