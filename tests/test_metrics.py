"""Metrics: BLEU flavours, chrF, exact match of tokens and of syntax trees, Python syntax validity."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import sacrebleu
from hypothesis import given
from hypothesis import strategies as st

from nmt import metrics
from nmt.metrics import (bleu, chrf, codexglue_bleu, exact_match, exact_match_ast, is_valid_python, same_code, score,
                         syntax_valid)

HYPS = ["def f ( x ) :", "return x + 1", "import os", "x = [ 1 , 2 , 3 ]"]
REFS = ["def f ( y ) :", "return x + 2", "import sys", "x = [ 1 , 2 , 3 ]"]


def test_bleu_is_sacrebleu_on_whitespace_tokens() -> None:
    expected = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="none").score
    assert bleu(HYPS, REFS) == pytest.approx(expected)
    assert 0 < expected < 100
    spaced = [h.replace(" ", "  \t") for h in HYPS]
    assert bleu(spaced, REFS) == pytest.approx(expected)


def test_chrf_is_sacrebleu() -> None:
    assert chrf(HYPS, REFS) == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert chrf(["a b"], ["a b"]) == pytest.approx(100.0)


def test_exact_match_ignores_whitespace_layout() -> None:
    assert exact_match(["a  b", "x", " y\t"], ["a b", "z", "y"]) == pytest.approx(200 / 3)
    assert exact_match(HYPS, REFS) == pytest.approx(25.0)


def test_codexglue_bleu_identical_is_100() -> None:
    assert codexglue_bleu(REFS, REFS) == pytest.approx(100.0)


def test_codexglue_bleu_hand_computed() -> None:
    # hyp "a b c d" vs ref "a b c e": matches 3/4, 2/3, 1/2, 0/1 -> smoothed 4/5, 3/4, 2/3, 1/2; c = r -> BP 1.
    assert codexglue_bleu(["a b c d"], ["a b c e"]) == pytest.approx(100 * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)
    # Short hypothesis: every smoothed precision is 1 (0 + 1) / (0 + 1), so only BP = exp(1 - 4/2) counts.
    assert codexglue_bleu(["a b"], ["a b c d"]) == pytest.approx(100 * math.exp(-1))
    # Clipping: "a" matches once only; p = 2/5, 1/4, 1/3, 1/2; c = 4 > r = 2 -> BP 1.
    assert codexglue_bleu(["a a a a"], ["a b"]) == pytest.approx(100 * (2 / 5 * 1 / 4 * 1 / 3 * 1 / 2) ** 0.25)


def test_codexglue_bleu_is_corpus_level() -> None:
    # Counts are summed over pairs before the precisions: m = 3+1, 2+0, 1+0, 0+0; t = 4+1, 3+0, 2+0, 1+0.
    got = codexglue_bleu(["a b c d", "x"], ["a b c e", "x"])
    assert got == pytest.approx(100 * (5 / 6 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)


@pytest.mark.parametrize(
    "code",
    [
        "def f ( x ) :",
        "else :",
        "elif x == 1 :",
        "except ValueError as e :",
        "except :",
        "finally :",
        "try :",
        "class A ( object ) :",
        "for k , v in d . items ( ) :",
        "with open ( p ) as f :",
        "@property",
        "return x",
        "x = 1",
        "else : return 1",
        "def f(x):\n    return x\n",
    ],
)
def test_syntax_valid_accepts_django_lines(code: str) -> None:
    assert is_valid_python(code)


@pytest.mark.parametrize("code", ["", "   ", "x = (", "def f ( x )", "else", "x ==", "1 +* 2", "a\x00b", "try : x = ("])
def test_syntax_valid_rejects(code: str) -> None:
    assert not is_valid_python(code)


def test_syntax_valid_percentage() -> None:
    assert syntax_valid(["else :", "x = (", "", "import os"]) == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("hyp", "ref"),
    [
        ("handler . addQuickElement ( 'uri' , x )", 'handler . addQuickElement ( "uri" , x )'),  # quote characters
        ("raise ValueError ( 'Unable to configure filter %r' % name )",
         "raise ValueError ( 'Unable to configure '  'filter %r' % name )"),  # adjacent literals are one
        ("x = a + b", "x = ( a + b )"),  # redundant brackets
        ("for k , v in d :", "for ( k , v ) in d :"),  # a block header, parsed with a body added
        ("elif ch == '^' :", 'elif ch == "^" :'),  # a line that continues a block, parsed after an if
        ("x = r'\\d'", "x = '\\\\d'"),  # a raw string and the escaped string it equals
    ],
)
def test_same_code_ignores_what_python_ignores(hyp: str, ref: str) -> None:
    assert same_code(hyp, ref) and same_code(ref, hyp)
    assert exact_match([hyp], [ref]) == 0.0 and exact_match_ast([hyp], [ref]) == 100.0


@pytest.mark.parametrize(
    ("hyp", "ref"),
    [
        ("x = 'a'", "x = 'b'"),  # another literal
        ("x = a . b", "x = a [ 'b' ]"),  # attribute against item
        ("f ( a , b )", "f ( b , a )"),  # argument order
        ("x = 1", "x = 1 ,"),  # a tuple is not its element
        ("if x :", "elif x :"),  # the same test, a different statement
        ("x = (", "x = ( )"),  # a hypothesis that does not parse matches on its tokens only
        ("x = 'a'", "x = ('a'"),  # nor does a reference that does not parse
    ],
)
def test_same_code_keeps_what_changes_the_program(hyp: str, ref: str) -> None:
    assert not same_code(hyp, ref) and not same_code(ref, hyp)


def test_same_code_of_lines_that_do_not_parse_is_token_equality() -> None:
    assert same_code("x = (  a", "x = ( a") and not same_code("x = ( a", "x = ( b")


@given(st.lists(st.sampled_from(["x", "=", "(", ")", "'a'", '"a"', "+", "1", ",", ":", "if", "else", "f", "."]),
                max_size=8),
       st.lists(st.sampled_from(["x", "=", "(", ")", "'a'", '"a"', "+", "1", ",", ":", "if", "else", "f", "."]),
                max_size=8))
def test_exact_match_ast_is_at_least_token_exact_match(a: list[str], b: list[str]) -> None:
    hyp, ref = " ".join(a), " ".join(b)
    assert same_code(hyp, hyp) and same_code(hyp, ref) == same_code(ref, hyp)
    assert exact_match_ast([hyp], [ref]) >= exact_match([hyp], [ref])


def test_score_keys_and_empty_hypotheses() -> None:
    out = score(["", "", "else :"], ["x = 1", "pass", "else :"])
    assert set(out) == {"bleu", "codexglue_bleu", "chrf", "exact_match", "exact_match_ast", "syntax_valid", "n"}
    assert out["n"] == 3 and out["exact_match"] == pytest.approx(100 / 3) == out["exact_match_ast"]
    assert all(0 <= v <= 100 for k, v in out.items() if k != "n")
    assert score([""], ["x"]) == {"bleu": 0.0, "codexglue_bleu": 0.0, "chrf": 0.0, "exact_match": 0.0,
                                  "exact_match_ast": 0.0, "syntax_valid": 0.0, "n": 1}
    java = score(["int x ;"], ["int x ;"], language="java")
    assert "syntax_valid" not in java and "exact_match_ast" not in java  # Python syntax trees only
    assert score([], [])["n"] == 0


@pytest.mark.parametrize("fn", [bleu, codexglue_bleu, chrf, exact_match, exact_match_ast, score])
def test_length_mismatch_raises(fn) -> None:
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        fn(["a", "b"], ["a"])


def test_metrics_does_not_import_torch() -> None:
    code = "import sys, nmt.metrics, nmt.retrieval; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert metrics.__name__ == "nmt.metrics"


# ---------------------------------------------------------------------- CodeBLEU (Java, CONCODE)
JAVA = "public int add ( int a , int b ) { return a + b ; }"


def test_codebleu_is_100_for_identical_java_and_lower_for_a_wrong_body():
    same = metrics.codebleu([JAVA], [JAVA])
    assert same["codebleu"] == pytest.approx(100.0)
    wrong = metrics.codebleu(["public int add ( int a , int b ) { return a * a ; }"], [JAVA])
    assert 0.0 < wrong["codebleu"] < 100.0
    assert wrong["codebleu_dataflow"] < 100.0  # b no longer flows into the result
    renamed = metrics.codebleu(["public int add ( int x , int y ) { return x + y ; }"], [JAVA])
    # renaming keeps the tree and the data flow: CodeBLEU scores it above plain n-gram overlap
    assert renamed["codebleu_dataflow"] == pytest.approx(100.0) and renamed["codebleu"] > renamed["codebleu_ngram"]


def test_score_adds_codebleu_for_java_only():
    java = metrics.score([JAVA], [JAVA], "java")
    assert java["codebleu"] == pytest.approx(100.0) and "syntax_valid" not in java
    assert "codebleu" not in metrics.score(["x = 1"], ["x = 1"], "python")
    assert metrics.codebleu([], []) == {"codebleu": 0.0}
    with pytest.raises(ValueError):
        metrics.codebleu([JAVA], [])
