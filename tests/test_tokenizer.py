"""Tokenizer (compact cl100k vocabulary + byte fallback) and the tokenize stage."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from nmt.cl100k import base_encoding
from nmt.data.tokenized import TokenizedSplit
from nmt.errors import DataError, ModelFileError
from nmt.stages.tokenize import tokenize_dataset
from nmt.tokenizer import BYTE_OFFSET, FIRST_CL100K_ID, Tokenizer

from .conftest import fuzz_examples, plain_tokenize

CORPUS = [
    "define the function strip_tags with an argument value.",
    "def strip_tags ( value ) :",
    "return value . strip ( )",
    "call the method value.strip, return the result.",
    "from django . conf import settings",
    "import module warnings.",
    "if value is None :",
    "return None",
] * 3 + ["héllo 世界 😀", "rare_identifier_xyz"]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.build(CORPUS, min_freq=2, max_vocab=1000)


def cl100k_counts(texts: list[str]) -> Counter:
    enc = base_encoding()
    return Counter(t for text in texts for t in enc.encode_ordinary(text))


# ---------------------------------------------------------------------- round trips
# Any text without lone surrogates (st.text() leaves them out): arbitrary code points, long texts,
# and joins of pieces that stress cl100k's pre-tokenizer (special-token text, runs of spaces,
# newlines or digits, combining marks, BOM, NUL, zero-width joiners).
TRICKY_PIECES = ["<|endoftext|>", "<|fim_middle|>", " " * 40, "\n" * 9, "\r\n", "\t", "9" * 30, "e\u0301",
                 "\U0001f600", "\u200d", "\x00", "\ufeff", "\u01c5", "\u0130", "'s", "   x", "\U0010ffff"]
ANY_TEXT = st.one_of(
    st.text(),
    st.text(min_size=200, max_size=3000),
    st.lists(st.sampled_from(TRICKY_PIECES) | st.text(max_size=4), max_size=40).map("".join),
)


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(300), deadline=None)
@given(ANY_TEXT)
def test_encode_decode_is_exact_for_any_text(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert all(tok.n_specials <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Zs", "So", "Lo", "Ll", "Nd", "Po"])))
def test_round_trip_through_a_vocabulary_built_on_the_text_itself(text: str) -> None:
    tok = Tokenizer.build([text], min_freq=1, max_vocab=10_000)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    # Every cl100k token is in this vocabulary, so no token falls back to several bytes.
    assert len(ids) == len(base_encoding().encode_ordinary(text))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=8))
def test_encode_batch_and_arrays_agree_with_encode(tok: Tokenizer, texts: list[str]) -> None:
    batch = tok.encode_batch(texts)
    assert batch == [tok.encode(t) for t in texts]
    ids, offsets = tok.encode_arrays(texts)
    assert offsets.tolist()[0] == 0 and len(offsets) == len(texts) + 1
    assert [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])] == batch


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_decode_of_any_in_range_ids_is_a_string(tok: Tokenizer, data: st.DataObject) -> None:
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=40))
    assert isinstance(tok.decode(ids), str)


def test_decode_replaces_invalid_utf8(tok: Tokenizer) -> None:
    assert tok.decode([BYTE_OFFSET + 0xFF]) == "\ufffd"
    cut = [BYTE_OFFSET + b for b in "世".encode()[:2]]  # a character cut short
    assert tok.decode(cut + tok.encode("a")) == "\ufffda"


def test_decode_out_of_range_raises(tok: Tokenizer) -> None:
    for bad in ([tok.vocab_size], [5, -1], [10**9]):
        with pytest.raises(ValueError, match="outside"):
            tok.decode(bad)
    with pytest.raises(ValueError):
        tok.token_bytes(tok.vocab_size)


def test_specials_decode_to_nothing_and_accept_tensors(tok: Tokenizer) -> None:
    ids = [tok.bos_id, *tok.encode("return value"), tok.eos_id, tok.pad_id]
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.n_specials) == (0, 1, 2, 3)
    assert tok.decode(ids) == "return value"
    assert tok.decode(torch.tensor(ids)) == "return value"


def test_special_token_text_is_plain_text(tok: Tokenizer) -> None:
    text = "a <|endoftext|> b <|fim_prefix|>"
    assert tok.decode(tok.encode(text)) == text


def test_unknown_tokens_fall_back_to_their_bytes(tok: Tokenizer) -> None:
    text = " zebra"  # not in the corpus
    assert tok.encode(text) == [BYTE_OFFSET + b for b in text.encode()]
    assert all(tok.is_byte(i) for i in tok.encode(text))
    assert not any(tok.is_byte(i) for i in tok.encode(" value"))


# ---------------------------------------------------------------------- building
def test_vocab_follows_min_freq_max_vocab_and_order() -> None:
    counts = cl100k_counts(CORPUS)
    single_byte = {t for t in counts if len(base_encoding().decode_single_token_bytes(t)) == 1}
    expected_all = sorted((t for t, c in counts.items() if c >= 2 and t not in single_byte), key=lambda t: (-counts[t], t))
    full = Tokenizer.build(CORPUS, min_freq=2, max_vocab=10_000)
    assert list(full.cl100k_ids) == expected_all
    assert full.vocab_size == FIRST_CL100K_ID + len(expected_all)
    capped = Tokenizer.build(CORPUS, min_freq=2, max_vocab=5)
    assert list(capped.cl100k_ids) == expected_all[:5]
    strict = Tokenizer.build(CORPUS, min_freq=4, max_vocab=10_000)
    assert strict.cl100k_ids and all(counts[t] >= 4 for t in strict.cl100k_ids)
    assert len(strict.cl100k_ids) < len(full.cl100k_ids)
    assert Tokenizer.build(CORPUS, min_freq=2, max_vocab=0).vocab_size == FIRST_CL100K_ID


def test_build_is_deterministic_and_order_free() -> None:
    shuffled = CORPUS[:]
    random.Random(0).shuffle(shuffled)
    a = Tokenizer.build(CORPUS, 2, 50)
    assert a == Tokenizer.build(iter(shuffled), 2, 50)
    assert a.to_dict() == Tokenizer.build(CORPUS, 2, 50).to_dict()


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Tokenizer.build(CORPUS, min_freq=0, max_vocab=10)
    with pytest.raises(ValueError):
        Tokenizer.build(CORPUS, min_freq=1, max_vocab=-1)


# ---------------------------------------------------------------------- files
def test_save_load_round_trip(tok: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "vocab.json"
    tok.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "nmt-tokenizer" and data["version"] == 1 and data["base_encoding"] == "cl100k_base"
    loaded = Tokenizer.load(path)
    assert loaded == tok and loaded.vocab_size == tok.vocab_size
    assert loaded.encode("def strip_tags ( value ) :") == tok.encode("def strip_tags ( value ) :")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(extra=1), "unknown key 'extra'"),
        (lambda d: d.pop("cl100k_ids"), "missing key 'cl100k_ids'"),
        (lambda d: d.update(format="something-else"), "format is 'something-else'"),
        (lambda d: d.update(version=99), "version 99"),
        (lambda d: d.update(specials=["<s>"]), "specials"),
        (lambda d: d["cl100k_ids"].append(d["cl100k_ids"][0]), "duplicate id"),
        (lambda d: d["cl100k_ids"].append(100256), "outside cl100k"),
        (lambda d: d["cl100k_ids"].append(-3), "outside cl100k"),
        (lambda d: d["cl100k_ids"].append("12"), "expected an integer"),
        (lambda d: d["cl100k_ids"].append(64), "single-byte token"),  # 64 is b"a"
    ],
)
def test_load_rejects_corrupt_files(tok: Tokenizer, tmp_path: Path, mutate, message: str) -> None:
    data = tok.to_dict()
    mutate(data)
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match=message) as err:
        Tokenizer.load(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_load_rejects_non_tokenizer_json(tmp_path: Path, content: str) -> None:
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(ModelFileError, match=str(path)):
        Tokenizer.load(path)


def test_load_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="tokenize"):
        Tokenizer.load(tmp_path / "nope.json")


# ---------------------------------------------------------------------- the tokenize stage
RAW = {
    "train": [
        {"nl": "return the value.", "code": "return value"},
        {"nl": "return the value 😀.", "code": "return value  # 😀"},
        {"nl": "call strip on value.", "code": "value . strip ( )"},
        {"nl": "", "code": "pass"},
    ],
    "dev": [{"nl": "zebra zebra zebra", "code": "zebra ( )"}, {"nl": "return the value.", "code": ""}],
    "test": [{"nl": "return 世界.", "code": "return '世界'"}],
}


def write_raw(raw_dir: Path, raw: dict = RAW) -> Path:
    raw_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in raw.items():
        (raw_dir / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return raw_dir


def test_tokenize_dataset_round_trips(tmp_path: Path) -> None:
    raw = write_raw(tmp_path / "raw")
    out = tmp_path / "tok"
    stats = tokenize_dataset(raw, out, plain_tokenize(min_freq=1, max_vocab=100))
    tok = Tokenizer.load(out / "vocab.json")
    assert stats["vocab_size"] == tok.vocab_size and stats["n_cl100k_kept"] == len(tok.cl100k_ids)
    assert json.loads((out / "stats.json").read_text()) == stats
    for split, rows in RAW.items():
        data = TokenizedSplit.load(out / f"{split}.safetensors", vocab_size=tok.vocab_size)
        assert len(data) == len(rows) == stats["splits"][split]["n_pairs"]
        for i, row in enumerate(rows):
            assert data.src(i).tolist() == tok.encode(row["nl"])
            assert data.tgt(i).tolist() == tok.encode(row["code"])
            assert tok.decode(data.tgt(i)) == row["code"]
        assert data.src_lengths.tolist() == [len(tok.encode(r["nl"])) for r in rows]
        assert data.tgt_lengths.tolist() == [len(tok.encode(r["code"])) for r in rows]
        assert data.src(0).dtype == torch.int32
    # The vocabulary comes from train only: dev's " zebra" is bytes.
    assert " zebra" not in {tok.token_bytes(i).decode("utf-8", "replace") for i in range(tok.vocab_size)}
    assert stats["splits"]["dev"]["src_byte_pct"] > 50
    assert set(stats["splits"]["train"]["src_len"]) == {"p50", "p90", "p99", "max"}


def test_tokenize_dataset_is_deterministic(tmp_path: Path) -> None:
    raw = write_raw(tmp_path / "raw")
    cfg = plain_tokenize(min_freq=1, max_vocab=100)
    tokenize_dataset(raw, tmp_path / "a", cfg)
    tokenize_dataset(raw, tmp_path / "b", cfg)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["dev.safetensors", "stats.json", "test.safetensors", "train.safetensors", "vocab.json"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_tokenize_dataset_needs_training_pairs(tmp_path: Path) -> None:
    raw = write_raw(tmp_path / "raw", {**RAW, "train": []})
    with pytest.raises(DataError, match="train.jsonl"):
        tokenize_dataset(raw, tmp_path / "tok", plain_tokenize())


def test_tokenize_dataset_missing_split(tmp_path: Path) -> None:
    raw = write_raw(tmp_path / "raw", {"train": RAW["train"], "dev": RAW["dev"]})
    with pytest.raises(DataError, match="test.jsonl"):
        tokenize_dataset(raw, tmp_path / "tok", plain_tokenize())


def _tensors(**override: torch.Tensor) -> dict[str, torch.Tensor]:
    t = {
        "src": torch.tensor([3, 4, 5], dtype=torch.int32),
        "src_offsets": torch.tensor([0, 1, 3], dtype=torch.int64),
        "tgt": torch.tensor([6], dtype=torch.int32),
        "tgt_offsets": torch.tensor([0, 0, 1], dtype=torch.int64),
    }
    t.update(override)
    return t


META = {"nmt": json.dumps({"format": "nmt-tokenized-split", "version": 1, "vocab_size": 300})}


@pytest.mark.parametrize(
    ("tensors", "metadata", "message"),
    [
        (_tensors(), META, None),
        (_tensors(src_offsets=torch.tensor([0, 2, 1])), META, "src_offsets"),
        (_tensors(tgt_offsets=torch.tensor([0, 1])), META, "n\\+1"),
        (_tensors(src=torch.tensor([3, 4, 5])), META, "int32"),
        (_tensors(tgt=torch.tensor([300], dtype=torch.int32)), META, "0..299"),
        ({k: v for k, v in _tensors().items() if k != "tgt"}, META, "missing \\['tgt'\\]"),
        (_tensors(), {"format": "x"}, "not a nmt-tokenized-split"),
    ],
)
def test_tokenized_split_validates(tmp_path: Path, tensors, metadata, message) -> None:
    path = tmp_path / "x.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    if message is None:
        data = TokenizedSplit.load(path)
        assert len(data) == 2 and data.src(1).tolist() == [4, 5] and data.tgt(0).tolist() == []
        with pytest.raises(IndexError):
            data.src(2)
        with pytest.raises(DataError, match="vocabulary of 300"):
            TokenizedSplit.load(path, vocab_size=301)
    else:
        with pytest.raises(DataError, match=message) as err:
            TokenizedSplit.load(path)
        assert str(path) in str(err.value)


def test_tokenized_split_unreadable_or_missing(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="safetensors"):
        TokenizedSplit.load(path)
    with pytest.raises(DataError, match="not found"):
        TokenizedSplit.load(tmp_path / "none.safetensors")
