"""n-best reranking by validity, and the decoding defaults an exported model directory carries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nmt.cli import app
from nmt.decoding import search as search_module
from nmt.decoding.rerank import rerank_candidates
from nmt.decoding.search import Hypothesis
from nmt.decoding.settings import DecodeSettings
from nmt.decoding.translator import BUILTIN_SETTINGS, Translator
from nmt.errors import ModelFileError

from .conftest import synthetic_pairs, write_jsonl

runner = CliRunner()


# ---------------------------------------------------------------------- reranking
def test_rerank_puts_valid_python_first_keeping_the_score_order():
    cands = [("return (", -0.1), ("x = 1", -0.2), ("else :", -0.3), ("def", -0.4)]
    assert rerank_candidates(cands, "syntax") == [("x = 1", -0.2), ("else :", -0.3), ("return (", -0.1), ("def", -0.4)]
    assert rerank_candidates(cands, "none") == cands
    none_valid = [("return (", -0.1), ("def", -0.4)]
    assert rerank_candidates(none_valid, "syntax") == none_valid  # falls back to the top one


@pytest.fixture()
def fake_beam(monkeypatch, tiny_export):
    """The tiny model's Translator, its beam search replaced by fixed hypotheses (best first)."""
    t = Translator.from_pretrained(tiny_export, device="cpu")
    texts = ["return (", "print ( x", "return x", "x = 1"]
    calls = []

    def beam_search(model, src, src_mask, bos_id, eos_id, max_len, beam_size, alpha, n_best, constraint=None):
        calls.append(n_best)
        hyps = [Hypothesis(t.tokenizer.encode(s), -0.1 * (i + 1)) for i, s in enumerate(texts)]
        return [hyps[:n_best] for _ in range(src.size(0))]

    monkeypatch.setattr(search_module, "beam_search", beam_search)
    return t, calls


def test_translate_reranks_the_whole_beam_and_takes_the_best_valid_hypothesis(fake_beam):
    t, calls = fake_beam
    plain = t.translate(["a", "b"], beam_size=4)
    assert [r.text for r in plain] == ["return (", "return ("] and calls == [1]
    reranked = t.translate(["a", "b"], beam_size=4, rerank="syntax")
    assert calls[-1] == 4  # the whole beam was asked for, though one output per input comes back
    assert [r.text for r in reranked] == ["return x", "return x"]
    assert reranked[0].score == pytest.approx(-0.3) and len(reranked[0].n_best) == 1
    two = t.translate(["a"], beam_size=4, n_best=2, rerank="syntax")[0]
    assert [c for c, _ in two.n_best] == ["return x", "x = 1"]


def test_rerank_judges_the_restored_text(monkeypatch, tiny_export):
    """With placeholders, validity is checked after the literal is back: `'a'b'` is no Python."""
    t = Translator.from_pretrained(tiny_export, device="cpu")
    t.tokenizer.string_placeholders = True
    outputs = ["f ( '_STR:0_' )", 'f ( "_STR:0_" )']

    def beam_search(model, src, src_mask, bos_id, eos_id, max_len, beam_size, alpha, n_best, constraint=None):
        return [[Hypothesis(t.tokenizer.encode(s), -i) for i, s in enumerate(outputs)][:n_best]]

    monkeypatch.setattr(search_module, "beam_search", beam_search)
    out = t.translate(['call f with string "a\'b".'], beam_size=2, rerank="syntax")
    assert out[0].text == 'f ( "a\'b" )'


def test_rerank_is_checked():
    with pytest.raises(ValueError, match="rerank"):
        DecodeSettings(rerank="python").check()


# ---------------------------------------------------------------------- decoding defaults in the export
DECODING = {"beam_size": 3, "length_penalty": 1.0, "max_len_a": 0.0, "max_len_b": 6, "rerank": "syntax"}


def export_with(tiny_export: Path, tmp_path: Path, decoding) -> Path:
    out = tmp_path / "export"
    shutil.copytree(tiny_export, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "decoding": decoding}))
    return out


def test_an_export_without_decoding_defaults_decodes_as_before(tiny_export):
    assert Translator.from_pretrained(tiny_export, device="cpu").defaults == BUILTIN_SETTINGS
    assert BUILTIN_SETTINGS.recorded() == {
        "beam_size": 1, "length_penalty": 0.6, "max_len_a": 0.0, "max_len_b": 200, "rerank": "none",
        "rerank_missing": 2.0, "rerank_unexplained": 1.0, "rerank_repeated": 2.0, "rerank_reconstruction": 0.0,
        "literal_prefixes": False, "grammar": False}


def test_nmt_evaluate_uses_the_exports_decoding_unless_told_otherwise(tiny_export, tmp_path):
    model = export_with(tiny_export, tmp_path, DECODING)
    rows = synthetic_pairs(6, seed=4)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    t = Translator.from_pretrained(model, device="cpu")
    nl = [r["nl"] for r in rows]
    as_exported = [x.text for x in t.translate(nl, beam_size=3, length_penalty=1.0, max_len_b=6, rerank="syntax")]
    builtin = [x.text for x in t.translate(nl, beam_size=1, length_penalty=0.6, max_len_b=200, rerank="none")]
    assert as_exported != builtin
    assert [x.text for x in t.translate(nl)] == as_exported  # the API's defaults too

    def predictions(*options: str) -> list[str]:
        out = tmp_path / "pred.jsonl"
        result = runner.invoke(app, ["evaluate", "--model", str(model), "--data", str(data),
                                     "--output", str(out), *options])
        assert result.exit_code == 0, result.output
        return [json.loads(line)["prediction"] for line in out.read_text().splitlines()]

    assert predictions() == as_exported
    assert predictions("--beam", "1", "--max-len", "200", "--length-penalty", "0.6", "--rerank", "none") == builtin
    only_beam = [x.text for x in t.translate(nl, beam_size=2)]  # the rest still from the export
    assert predictions("--beam", "2") == only_beam


def test_nmt_generate_uses_the_exports_decoding_unless_told_otherwise(tiny_export, tmp_path):
    model = export_with(tiny_export, tmp_path, DECODING)
    t = Translator.from_pretrained(model, device="cpu")
    texts = ["print x", "return the sum of x and y"]

    def generate(*options: str) -> list[str]:
        result = runner.invoke(app, ["generate", "--model", str(model), *options, *texts])
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines()

    assert generate() == [x.text for x in t.translate(texts, beam_size=3, length_penalty=1.0, max_len_b=6)]
    assert generate("--beam", "1", "--max-len", "9") == [x.text for x in t.translate(texts, beam_size=1, max_len_b=9)]
    # Sampling ignores the exported beam (sampling has no beam) but keeps the length limit.
    sampled = generate("--sample", "--seed", "3")
    assert sampled == [x.text for x in t.translate(texts, sample=True, seed=3, max_len_b=6)]
    result = runner.invoke(app, ["generate", "--model", str(model), "--n-best", "4", "x"])
    assert result.exit_code == 2 and "--n-best" in result.output and "model's default" in result.output


@pytest.mark.parametrize("decoding, problem", [
    ({"beam_size": 0}, "decoding.beam_size"),
    ({"rerank": "python"}, "decoding.rerank"),
    ({"beam": 3}, "decoding.beam: unknown key"),
    ([3], "decoding: expected a mapping"),
])
def test_bad_decoding_defaults_are_named(tiny_export, tmp_path, decoding, problem):
    model = export_with(tiny_export, tmp_path, decoding)
    with pytest.raises(ModelFileError, match=problem):
        Translator.from_pretrained(model, device="cpu")
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(2, seed=0))
    result = runner.invoke(app, ["evaluate", "--model", str(model), "--data", str(data)])
    assert result.exit_code == 2 and problem in result.output and "Traceback" not in result.output


def test_bad_rerank_option_exits_2_naming_it(tiny_export):
    result = runner.invoke(app, ["generate", "--model", str(tiny_export), "--rerank", "python", "x"])
    assert result.exit_code == 2 and "--rerank" in result.output
