"""Grammar-constrained beam search: which prefixes can still parse, and what the search does with the verdicts."""

from __future__ import annotations

import pytest
import torch

from nmt.batching import collate
from nmt.decoding import search as search_module
from nmt.decoding.grammar import PythonLineConstraint, viable
from nmt.decoding.search import Hypothesis, beam_search
from nmt.decoding.settings import DecodeSettings
from nmt.decoding.translator import Translator
from nmt.metrics import is_valid_python
from tests.test_model import BOS, EOS, PAD, tiny


@pytest.mark.parametrize("prefix", ["", "x = f (", "x = f ( a [ 1 ] ,", "return { 'a' : ( 1", "s = ')'",
                                    's = "]" + f (', "x = '''a ) ", "y = '\\')' ( 1", "f ( x ) # ) ]",
                                    "if x :"])
def test_viable_prefixes(prefix):
    assert viable(prefix)


@pytest.mark.parametrize("prefix", [")", "x = f ( a ]", "x = [ 1 , 2 ) ", "return { 'a' : 1 ] }", "f ( x ) )",
                                    "s = ']' ]"])
def test_a_prefix_closing_what_is_not_open_is_not_viable(prefix):
    assert not viable(prefix)


class NoToken:
    """A constraint refusing every hypothesis that holds ``token`` and ending only even-length ones."""

    def __init__(self, token: int):
        self.token, self.asked = token, 0

    def checks(self, token: int) -> bool:
        return token == self.token

    def allows(self, source: int, tokens: list[int], final: bool) -> bool:
        self.asked += 1
        return len(tokens) % 2 == 0 if final else self.token not in tokens


def test_beam_search_skips_what_the_constraint_refuses_and_puts_refused_endings_last():
    model = tiny(seed=3)
    g = torch.Generator().manual_seed(0)
    srcs = [torch.randint(3, 40, (6,), generator=g).tolist() for _ in range(4)]
    b = collate(srcs, [[3]] * 4, PAD, BOS, EOS, 64)
    free = beam_search(model, b.src, b.src_mask, BOS, EOS, 12, beam_size=4, n_best=4)
    banned = max(((t for hyps in free for h in hyps for t in h.tokens[:-1])), key=[
        t for hyps in free for h in hyps for t in h.tokens[:-1]].count)  # the commonest non-final token
    constraint = NoToken(banned)
    held = beam_search(model, b.src, b.src_mask, BOS, EOS, 12, beam_size=4, n_best=4, constraint=constraint)
    assert constraint.asked > 0
    for hyps in held:
        assert len(hyps) == 4
        # a refused token only ever stands last (the last step ends every live hypothesis unchecked)
        assert all(banned not in h.tokens[:-1] for h in hyps)
        flags = [h.parses for h in hyps]
        assert flags == sorted(flags, reverse=True)  # lines that "parse" first
        assert all(h.parses == (len(h.tokens) % 2 == 0) for h in hyps if len(h.tokens) < 12)


def test_constraint_checks_the_restored_line(tiny_export):
    t = Translator.from_pretrained(tiny_export, device="cpu")
    c = PythonLineConstraint(t.tokenizer, [["a'b"]])
    encode = t.tokenizer.encode
    assert c.allows(0, encode("f ( x )"), final=True)
    assert not c.allows(0, encode("f ( x"), final=True)
    assert c.allows(0, encode("f ( x"), final=False)
    assert not c.allows(0, encode("f ( x ]"), final=False)
    closing = encode(")")
    assert all(c.checks(i) for i in closing) and not any(c.checks(i) for i in encode("x"))


def test_translate_with_grammar_returns_parsing_lines_first(monkeypatch, tiny_export):
    """The translator hands beam search its constraint; with it the n-best's parsing lines lead."""
    t = Translator.from_pretrained(tiny_export, device="cpu")
    seen = []
    real = search_module.beam_search

    def spy(*args, constraint=None, **kwargs):
        seen.append(constraint)
        return real(*args, constraint=constraint, **kwargs)

    monkeypatch.setattr(search_module, "beam_search", spy)
    texts = ["return the absolute value of x", "call the function f with an argument y"]
    out = t.translate(texts, beam_size=4, n_best=4, grammar=True)
    assert isinstance(seen[-1], PythonLineConstraint)
    for r in out:
        valid = [is_valid_python(text) for text, _ in r.n_best]
        assert valid == sorted(valid, reverse=True)
    t.translate(texts, beam_size=4, grammar=False)
    assert seen[-1] is None


def test_grammar_is_a_decoding_setting():
    assert DecodeSettings().grammar is False
    assert DecodeSettings.from_dict({"grammar": True}).grammar is True
    assert Hypothesis([1], 0.0).parses
