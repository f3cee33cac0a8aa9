"""The tokenize stage streams: flat memory in data size, memory-mapped ids, nothing half-written."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from nmt.cl100k import base_tables as _base_tables
from nmt.data.tokenized import TokenizedSplit, load_literals
from nmt.errors import DataError
from nmt.stages.tokenize import _histogram_percentiles, tokenize_dataset
from nmt.tokenizer import Tokenizer

from .conftest import plain_tokenize

WORDS = ("call the method get_value with argument self and return result if x is none raise "
         "ValueError substitute for in list dict '%s' 'utf-8' toks endpos").split()


def write_pairs(raw: Path, n_train: int, n_eval: int = 50, seed: int = 0) -> None:
    """Django-like generated pairs: a few words of description, a line of code using some of them."""
    rng = random.Random(seed)
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_eval), ("test", n_eval)):
        with open(raw / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for _ in range(n):
                words = rng.choices(WORDS, k=rng.randint(3, 14))
                code = f"{words[0]} = {words[1]} ( {' , '.join(words[2:5])} )"
                f.write(json.dumps({"nl": " ".join(words), "code": code}) + "\n")


CFG = plain_tokenize(min_freq=1, string_placeholders=True, name_placeholders=True, rare_words=2,
                     placeholder_tokens=True)


def peak_traced_bytes(tmp_path: Path, n_train: int) -> int:
    raw = tmp_path / f"raw{n_train}"
    write_pairs(raw, n_train)
    _base_tables()  # cl100k's tables load once per process, whatever the data: not part of the comparison
    tracemalloc.start()
    try:
        tokenize_dataset(raw, tmp_path / f"tok{n_train}", CFG, chunk_pairs=256)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_when_the_data_grows_eightfold(tmp_path):
    """Peak Python + numpy allocations (tracemalloc) of the whole stage, 1,000 vs 8,000 training pairs.

    Holding the data would grow the peak about eightfold; streaming in chunks of 256 pairs keeps it
    within the chunk, the vocabulary build's batch of texts and the counters of distinct words.
    The 1 M-pair figure (peak RSS) is measured by benchmarks/tokenize_memory.py.
    """
    small = peak_traced_bytes(tmp_path, 1_000)
    large = peak_traced_bytes(tmp_path, 8_000)
    assert large < 1.25 * small, (small, large)


def test_split_files_are_ordinary_safetensors_and_load_memory_mapped(tmp_path):
    raw = tmp_path / "raw"
    write_pairs(raw, 600)
    tokenize_dataset(raw, tmp_path / "tok", CFG, chunk_pairs=100)  # several chunks per split
    tok = Tokenizer.load(tmp_path / "tok" / "vocab.json")
    path = tmp_path / "tok" / "train.safetensors"
    split = TokenizedSplit.load(path, tok.vocab_size)
    plain = load_file(str(path))  # the safetensors library reads the streamed file as it is
    rows = [json.loads(line) for line in (raw / "train.jsonl").read_text().splitlines()]
    assert len(split) == len(rows) == 600 and len(plain["src_offsets"]) == 601
    from nmt.placeholders import mask_pair
    for i in (0, 99, 100, 101, 599):  # either side of a chunk boundary
        nl, code, _ = mask_pair(rows[i]["nl"], rows[i]["code"], True, tok.common_words)
        assert split.src(i).tolist() == tok.encode(nl)
        assert split.tgt(i).tolist() == tok.encode(code)
    for key in ("src", "tgt"):
        assert torch.equal(plain[key], getattr(split, f"_{key}"))
    assert all(t.data_ptr() % t.element_size() == 0 for t in (split._src_offsets, split._tgt_offsets, split._src))
    # The ids live in a mapping of the file itself, not in memory read from it.
    address = split._src.untyped_storage().data_ptr()
    mapped = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path.resolve())):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            mapped.append(lo <= address < hi)
    assert any(mapped), "train.safetensors is not mapped where the src ids are"


def test_a_bad_line_in_the_last_split_leaves_the_previous_outputs_whole(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "tok"
    write_pairs(raw, 300)
    tokenize_dataset(raw, out, CFG)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with open(raw / "train.jsonl", "a") as f:  # a new vocabulary would be built...
        f.write(json.dumps({"nl": "brand new words", "code": "zebra = giraffe"}) + "\n")
    with open(raw / "test.jsonl", "a") as f:  # ...but test.jsonl, read last, is broken
        f.write('{"nl": "x", "code": 3}\n')
    with pytest.raises(DataError, match=r"test\.jsonl:51: 'code' must be a string"):
        tokenize_dataset(raw, out, CFG)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "tok"]  # no scratch directory left behind


def test_literals_stream_into_one_json_file(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [{"nl": "call get_value with 'a b'.", "code": "get_value ( 'a b' )"}, {"nl": "pass.", "code": "pass"}]
    for split in ("train", "dev", "test"):
        (raw / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = plain_tokenize(min_freq=1, string_placeholders=True, name_placeholders=True)
    tokenize_dataset(raw, tmp_path / "tok", cfg, chunk_pairs=1)
    table = json.loads((tmp_path / "tok" / "literals.json").read_text())
    assert table == {split: [["a b", "get_value"], []] for split in ("train", "dev", "test")}
    assert load_literals(tmp_path / "tok", "dev", 2) == [["a b", "get_value"], []]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=400))
def test_length_percentiles_from_a_histogram_match_numpys(lengths):
    expected = np.percentile(lengths, [50, 90, 99], method="higher")
    got = _histogram_percentiles(np.bincount(lengths))
    assert [got["p50"], got["p90"], got["p99"]] == [int(x) for x in expected]
    assert got["max"] == max(lengths)


def test_the_training_stream_slices_the_mapped_ids_instead_of_holding_them(tmp_path):
    """``Batches`` makes the same batches as collating Python lists of every pair's ids, but holds
    only the lengths: its traced memory is under a byte per id (0.7 here), where the lists took
    about 42 (a pointer and, past 256, an int object per id)."""
    from nmt.batching import collate, token_budget_batches
    from nmt.config import TrainConfig
    from nmt.training.stream import Batches

    write_pairs(tmp_path / "raw", 4000)
    tokenize_dataset(tmp_path / "raw", tmp_path / "tok", CFG)
    tok = Tokenizer.load(tmp_path / "tok" / "vocab.json")
    split = TokenizedSplit.load(tmp_path / "tok" / "train.safetensors", tok.vocab_size)
    cfg, max_len = TrainConfig(batch_tokens=512), 12  # short enough that some pairs are cut

    tracemalloc.start()
    try:
        stream = Batches(split, tok, cfg, max_len, seed=3)
        stream_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    n_ids = len(split._src) + len(split._tgt)
    assert stream_bytes < 2 * n_ids, (stream_bytes, n_ids)

    # the reference reads each pair through src(i) / tgt(i), not through the stream's TokenizedSplit.lists
    srcs = [split.src(i).tolist() for i in range(len(split))]
    tgts = [split.tgt(i).tolist() for i in range(len(split))]
    generator = torch.Generator().manual_seed(3)
    reference = token_budget_batches([min(len(s), max_len - 1) for s in srcs],
                                     [min(len(t), max_len - 1) for t in tgts], cfg.batch_tokens, generator)
    order = torch.randperm(len(reference), generator=generator).tolist()
    for indices, batch in zip((reference[k] for k in order), stream):
        expected = collate([srcs[i] for i in indices], [tgts[i] for i in indices],
                           tok.pad_id, tok.bos_id, tok.eos_id, max_len)
        assert all(torch.equal(a, b) for a, b in zip((batch.src, batch.tgt_in, batch.tgt_out),
                                                     (expected.src, expected.tgt_in, expected.tgt_out)))
        assert batch.n_tokens == expected.n_tokens
