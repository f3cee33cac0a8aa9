"""Lexical reranking: the lexicon's counts, the three penalties, the order they give, and their files."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from nmt.cli import app
from nmt.decoding import search as search_module
from nmt.decoding.rerank import PRIOR, LexicalWeights, Lexicon, penalties, rerank_candidates, words, write_lexicon
from nmt.decoding.search import Hypothesis
from nmt.decoding.settings import DecodeSettings
from nmt.decoding.translator import Translator
from nmt.errors import ModelFileError

from .conftest import write_jsonl

PAIRS = [("set x to integer 1.", "x = 1"), ("call f with x.", "f ( x )"), ("call g.", "g ( )"),
         ("return y.", "return y")]


def test_words_are_identifiers_and_numbers():
    assert words("self . cdata_tag = 2000 + x2 ( '1.5' )") == ["self", "cdata_tag", "2000", "x2", "1.5"]


def test_lexicon_counts_each_word_once_per_pair_on_each_side():
    lex = Lexicon.from_pairs(PAIRS + [("x x x", "y")])
    assert lex.described["x"] == (3, 2)  # three descriptions hold x, two of their codes do
    assert lex.described["call"] == (2, 0)
    assert lex.coded["x"] == (2, 2) and lex.coded["y"] == (2, 1)
    assert lex.p_in_code("x") == pytest.approx((2 + 2 * PRIOR) / (3 + 2))
    assert lex.p_in_code("call") == pytest.approx(2 * PRIOR / 4)  # a template word: rarely in the code
    assert lex.p_in_code("never_seen") == pytest.approx(PRIOR) == lex.p_in_description("never_seen")


def test_penalties_count_missing_unexplained_and_repeated_words():
    lex = Lexicon.from_pairs(PAIRS)
    p = penalties("call f with x.", "f ( f ( z ) )", lex)
    assert p.missing == pytest.approx(lex.p_in_code("call") + lex.p_in_code("with") + lex.p_in_code("x"))
    assert p.unexplained == pytest.approx(lex.p_in_description("z"))
    assert p.repeated == 1  # f twice, the description names it once
    exact = penalties("call f with x.", "f ( x )", lex)
    assert exact.unexplained == exact.repeated == 0 and exact.missing < p.missing
    assert penalties("set x to integer 1.", "x = 1", lex).repeated == 0  # numbers are never 'repeated'


def test_lexical_rerank_prefers_the_hypothesis_that_says_what_the_description_says():
    lex = Lexicon.from_pairs(PAIRS * 5)
    cands = [("end += 1", -0.5), ("level += 1", -0.9), ("level +=", -0.1)]
    weights = LexicalWeights(2.0, 1.0, 1.0)
    best = rerank_candidates(cands, "lexical", "increment level by integer 1.", lex, weights)
    assert best == [("level += 1", -0.9), ("end += 1", -0.5), ("level +=", -0.1)]  # valid Python first
    # no weight: the syntax order, scores untouched
    assert rerank_candidates(cands, "lexical", "increment level by 1.", lex) == rerank_candidates(cands, "syntax")


def test_lexical_rerank_needs_a_lexicon_and_a_known_name():
    with pytest.raises(ModelFileError, match="lexicon.json"):
        rerank_candidates([("x", 0.0)], "lexical", "x")
    with pytest.raises(ValueError, match="rerank must be"):
        rerank_candidates([("x", 0.0)], "ast", "x")


def test_lexicon_file_round_trip(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"nl": nl, "code": code} for nl, code in PAIRS])
    written = write_lexicon(train, tmp_path / "lexicon.json")
    assert Lexicon.load(tmp_path / "lexicon.json") == written == Lexicon.from_pairs(PAIRS)


@pytest.mark.parametrize("edit, problem", [
    (lambda d: d.update(format="nmt-tokenizer"), "format"),
    (lambda d: d.update(version=9), "version 9"),
    (lambda d: d.update(extra=1), "unknown key 'extra'"),
    (lambda d: d["described"].update(x=[1, 2]), "described['x']"),
    (lambda d: d["coded"].update(x="1"), "coded['x']"),
    (lambda d: d.pop("coded"), "'coded'"),
])
def test_a_bad_lexicon_file_is_refused_naming_the_problem_and_the_fix(tmp_path, edit, problem):
    data = Lexicon.from_pairs(PAIRS).to_dict()
    edit(data)
    path = tmp_path / "lexicon.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelFileError) as e:
        Lexicon.load(path)
    assert problem in str(e.value) and str(path) in str(e.value) and "dvc repro tokenize" in str(e.value)


def test_a_missing_lexicon_file_names_the_stage_that_writes_it(tmp_path):
    with pytest.raises(ModelFileError, match="tokenize stage"):
        Lexicon.load(tmp_path / "lexicon.json")


# ---------------------------------------------------------------------- through the Translator and the CLI
@pytest.fixture()
def lexical_export(tmp_path, tiny_export):
    out = tmp_path / "export"
    shutil.copytree(tiny_export, out)
    Lexicon.from_pairs(PAIRS * 5).save(out / "lexicon.json")
    return out


def test_translate_reranks_by_the_description_with_the_exported_lexicon(monkeypatch, lexical_export):
    t = Translator.from_pretrained(lexical_export, device="cpu")
    outputs = ["end += 1", "level += 1"]

    def beam_search(model, src, src_mask, bos_id, eos_id, max_len, beam_size, alpha, n_best, constraint=None):
        return [[Hypothesis(t.tokenizer.encode(s), -0.1 * (i + 1)) for i, s in enumerate(outputs)][:n_best]]

    monkeypatch.setattr(search_module, "beam_search", beam_search)
    nl = ["increment level by integer 1."]
    assert t.translate(nl, beam_size=2, rerank="syntax")[0].text == "end += 1"
    assert t.translate(nl, beam_size=2, rerank="lexical")[0].text == "level += 1"  # the default weights


def test_literal_prefixes_reach_the_output_and_the_reranker(monkeypatch, tiny_export):
    t = Translator.from_pretrained(tiny_export, device="cpu")
    output = "x = 'a'"

    def beam_search(model, src, src_mask, bos_id, eos_id, max_len, beam_size, alpha, n_best, constraint=None):
        return [[Hypothesis(t.tokenizer.encode(output), -0.1)]]

    monkeypatch.setattr(search_module, "beam_search", beam_search)
    nl = ["x is a raw string 'a'."]
    assert t.translate(nl, beam_size=2)[0].text == "x = 'a'"
    assert t.translate(nl, beam_size=2, literal_prefixes=True)[0].text == "x = r'a'"


def test_lexical_rerank_without_a_lexicon_fails_before_decoding(tiny_export):
    with pytest.raises(ModelFileError, match="lexicon.json"):
        Translator.from_pretrained(tiny_export, device="cpu").translate(["x"], beam_size=2, rerank="lexical")
    result = CliRunner().invoke(app, ["generate", "--model", str(tiny_export), "--rerank", "lexical", "x"])
    assert result.exit_code == 2 and "lexicon.json" in result.output and "Traceback" not in result.output


def test_a_bad_rerank_weight_is_refused():
    with pytest.raises(ValueError, match="rerank_missing"):
        DecodeSettings(rerank="lexical", rerank_missing=-1.0).check()
