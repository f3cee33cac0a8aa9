"""Retrieval-augmented sources (tokenize.neighbour_code): the index, the tokenize stage, the Translator,
and the reverse model's descriptions."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from nmt.checkpoint import save_model
from nmt.config import ModelConfig
from nmt.data.pairs import read_pair_file
from nmt.data.tokenized import TokenizedSplit
from nmt.decoding.translator import Translator
from nmt.errors import DataError, ModelFileError
from nmt.model import Transformer
from nmt.neighbours import code_for, description_ids, joined, neighbour_codes, neighbour_index
from nmt.placeholders import mask_description
from nmt.retrieval import PAIRS_FILE
from nmt.stages.tokenize import tokenize_dataset
from nmt.tokenizer import Tokenizer

from .conftest import plain_tokenize, write_jsonl

TRAIN = [
    {"nl": "call the method handler.endElement with an argument string 'rss'.", "code": "handler.endElement('rss')"},
    {"nl": "call the method handler.startElement with an argument string 'item'.",
     "code": "handler.startElement('item')"},
    {"nl": "return the length of items", "code": "return len(items)"},
    {"nl": "return the length of items", "code": "return len(items)  # twin"},
    {"nl": "set total to zero", "code": "total = 0"},
]


def test_a_query_never_gets_the_pair_it_excludes_and_a_verbatim_twin_wins():
    index = neighbour_index([(r["nl"], r["code"]) for r in TRAIN])
    nl = [r["nl"] for r in TRAIN]
    got = [i for i, _ in index.neighbours(nl, exclude=range(len(TRAIN)))]
    assert all(g != i for i, g in enumerate(got))
    assert got[2] == 3 and got[3] == 2  # identical descriptions: each other's nearest
    assert got[0] == 1 and got[1] == 0  # the same template with other names
    assert [i for i, _ in index.neighbours(nl[:1])] == [0]  # without exclude, a pair is its own nearest
    with pytest.raises(ValueError, match="exclude has 1 entries for 2 queries"):
        index.neighbours(nl[:2], exclude=[0])


def test_the_neighbours_code_takes_the_descriptions_placeholders_and_keeps_its_other_names():
    m = mask_description("call the method handler.startElement with an argument string 'channel'.", names=True)
    assert code_for("handler.endElement('channel')", m) == f"handler.endElement('_STR:{m.literals.index('channel')}_')"
    name = m.literals.index("startElement")
    assert code_for("handler.startElement('x')", m) == f"handler._ID:{name}_('x')"
    assert code_for("handler.startElement('x')", None) == "handler.startElement('x')"


def test_joined_sources_give_back_their_description():
    assert joined([5, 6], [7, 8], eos_id=2) == [5, 6, 2, 7, 8]
    assert description_ids([5, 6, 2, 7, 2], eos_id=2) == [5, 6]
    assert description_ids([5, 6], eos_id=2) == [5, 6]


def test_cutting_sources_at_eos_keeps_each_description_and_every_target():
    rows = [[5, 6, 2, 7, 8], [9], [4, 2, 2, 5]]
    flat = torch.tensor([x for r in rows for x in r], dtype=torch.int32)
    offsets = torch.tensor([0, 5, 6, 10], dtype=torch.int64)
    split = TokenizedSplit(flat, offsets, flat.clone(), offsets.clone(), vocab_size=20)
    src, tgt = split.sources_cut_at(2).lists(range(3))
    assert src == [[5, 6], [9], [4]] and tgt == rows


def write_raw(raw, train=TRAIN, dev=None):
    write_jsonl(raw / "train.jsonl", train)
    for split in ("dev", "test"):
        write_jsonl(raw / f"{split}.jsonl", dev or [{"nl": "call the method handler.endElement with an argument "
                                                            "string 'channel'.", "code": "handler.endElement('channel')"}])


@pytest.mark.parametrize("placeholders", [False, True])
def test_the_tokenize_stage_completes_every_source_with_its_neighbours_code(tmp_path, placeholders):
    write_raw(tmp_path / "raw")
    options = {"string_placeholders": True, "name_placeholders": True, "placeholder_tokens": True} if placeholders else {}
    cfg = plain_tokenize(min_freq=1, neighbour_code=True, **options)
    tokenize_dataset(tmp_path / "raw", tmp_path / "tok", cfg)
    tok = Tokenizer.load(tmp_path / "tok" / "vocab.json")
    assert tok.neighbour_code
    plain = plain_tokenize(min_freq=1, **options)
    tokenize_dataset(tmp_path / "raw", tmp_path / "plain", plain)  # the same pairs without neighbours
    assert Tokenizer.load(tmp_path / "plain" / "vocab.json").cl100k_ids == tok.cl100k_ids  # same vocabulary
    index = neighbour_index([(r["nl"], r["code"]) for r in TRAIN])
    for split, rows, exclude in (("train", TRAIN, range(len(TRAIN))), ("dev", None, None)):
        rows = rows or [json.loads(line) for line in (tmp_path / "raw" / "dev.jsonl").read_text().splitlines()]
        with_code = TokenizedSplit.load(tmp_path / "tok" / f"{split}.safetensors")
        without = TokenizedSplit.load(tmp_path / "plain" / f"{split}.safetensors")
        masked = [mask_description(r["nl"], names=True) if placeholders else None for r in rows]
        masked = [m if m is not None and m.literals else None for m in masked]
        codes = neighbour_codes(index, [r["nl"] for r in rows], masked, exclude)
        src, tgt = with_code.lists(range(len(rows)))
        plain_src, plain_tgt = without.lists(range(len(rows)))
        assert tgt == plain_tgt
        assert src == [joined(d, tok.encode(c), tok.eos_id) for d, c in zip(plain_src, codes)]
    # dev's nearest training pair is its template twin, whose name the description also says
    assert codes[0] == ("handler._ID:1_('rss')" if placeholders else "handler.endElement('rss')")


def export_with_neighbours(tmp_path, pairs=True):
    """An export directory whose tokenizer reads neighbours, with random weights."""
    out = tmp_path / "export"
    out.mkdir()
    tok = Tokenizer.build([r["nl"] for r in TRAIN] + [r["code"] for r in TRAIN], min_freq=1, max_vocab=500,
                          neighbour_code=True)
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ff=32, dropout=0.0, max_len=64, copy=False)
    save_model(Transformer(cfg, tok.vocab_size, tok.pad_id), out / "model.safetensors", out / "config.json",
               tok.bos_id, tok.eos_id)
    tok.save(out / "tokenizer.json")
    if pairs:
        lines = "".join(json.dumps(r) + "\n" for r in TRAIN).encode()
        (out / PAIRS_FILE).write_bytes(gzip.compress(lines, mtime=0))
    return out, tok


def test_the_translator_reads_each_description_with_its_neighbours_code(tmp_path):
    out, tok = export_with_neighbours(tmp_path)
    t = Translator.from_pretrained(out, device="cpu")
    text = "call the method handler.endElement with an argument string 'channel'."
    _, encoded, sources = t._sources([text], strict=False)
    assert encoded == [tok.encode(text)]  # what the reverse model is asked to give back
    assert sources == [tok.encode(text) + [tok.eos_id] + tok.encode("handler.endElement('rss')") + [tok.eos_id]]
    assert len(t.translate([text], beam_size=2, max_len_b=4)) == 1


def test_a_model_that_reads_neighbours_refuses_to_load_without_the_training_pairs(tmp_path):
    out, _ = export_with_neighbours(tmp_path, pairs=False)
    with pytest.raises(ModelFileError, match=r"nearest training pair's code \(tokenize.neighbour_code\).*retrieval"):
        Translator.from_pretrained(out, device="cpu")


def test_reading_pairs_names_the_file_and_the_problem(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_pair_file(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a gzip file"):
        read_pair_file(bad)
    assert read_pair_file(write_jsonl(tmp_path / "ok.jsonl", TRAIN[:2])) == [(r["nl"], r["code"]) for r in TRAIN[:2]]


def test_the_tokenizer_file_records_neighbour_code_and_rejects_a_non_boolean(tmp_path):
    tok = Tokenizer.build(["return the length of items"], min_freq=1, max_vocab=50, neighbour_code=True)
    data = tok.to_dict()
    assert data["neighbour_code"] is True and Tokenizer.from_dict(data) == tok
    assert "neighbour_code" not in Tokenizer.build(["x"], min_freq=1, max_vocab=5).to_dict()
    with pytest.raises(ModelFileError, match="neighbour_code must be true or false"):
        Tokenizer.from_dict({**data, "neighbour_code": "yes"})
