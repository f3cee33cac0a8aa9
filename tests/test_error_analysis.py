"""benchmarks.error_analysis sorts wrong lines into kinds the way its docstring says."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmarks.error_analysis import analyse, kind_of, markdown


@pytest.mark.parametrize("output, reference, kind", [
    ("x = foo ( y )", "x = bar ( y )", "name"),
    ("self . toks = None", "self . tokens = None", "name"),
    ("x = 'a'", "x = 'b'", "literal"),
    ("x = 1", "x = 2", "literal"),
    ("x = foo . bar", "x = foo ( bar )", "structure"),
    ("return x", "return x , y", "structure"),
    ("x = foo ( 'a'", "x = foo ( 'a' )", "structure"),  # does not tokenize: compared as words
    ("x = f ( 'a' )", "y = f ( 'b' )", "structure"),  # a name and a literal: not one kind
    ("if x :", "while x :", "structure"),  # keywords are structure, not names
])
def test_kind_of(output, reference, kind):
    assert kind_of(output, reference) == kind


def test_analyse_counts_each_wrong_line_once_by_kind_and_by_where_the_search_failed():
    rows = [{"nl": str(i), "code": code} for i, code in enumerate(["x = 1", "y = f ( a )", "z = g . h", "w = 2"])]
    t = lambda text, *others: SimpleNamespace(text=text, n_best=[(text, 0.0)] + [(o, -1.0) for o in others])
    translations = [t("x = 1"), t("y = f ( b )", "y = f ( a )"), t("z = g ( h )"), t("w  =  2")]
    result = analyse(rows, translations, examples=1)
    assert result["wrong"] == 2 and result["exact_match"] == 50.0
    assert result["counts"]["name"] == {"ranked lower": 1, "never in the n-best": 0}
    assert result["counts"]["structure"] == {"ranked lower": 0, "never in the n-best": 1}
    assert result["examples"]["name"][0]["reference"] == "y = f ( a )"
    assert "| name | 1 | 0 | 1 | 50.0 % |" in markdown(result)
    assert result["ceiling"] == 75.0  # x = 1, y = f ( a ) in the list, w = 2 chosen
    assert result["n_best_not_parsing_pct"] == 0.0 and result["neighbour_has_shape"] is None


def test_quote_style_neighbour_shape_and_unparsable_hypotheses_are_counted():
    rows = [{"nl": "a", "code": 'f ( "title" )'}, {"nl": "b", "code": "x = g ( y )"}, {"nl": "c", "code": "z = 1"}]
    t = lambda text, *others: SimpleNamespace(text=text, n_best=[(text, 0.0)] + [(o, -1.0) for o in others])
    translations = [t("f ( 'title' )", "f ( 'title'"), t("x = g . y"), t("z = 1")]
    neighbours = ["h ( 'x' )", "w = k ( v )", "z = 1"]
    result = analyse(rows, translations, examples=0, neighbours=neighbours)
    assert result["quote_style_only"] == 1  # 'title' for "title"
    assert result["neighbour_has_shape"] == 2  # f ( STRING ) and NAME = NAME ( NAME ): both wrong lines
    assert result["n_best_not_parsing_pct"] == 25.0  # f ( 'title' of 4 lines
    assert "wrong only in quote style" in markdown(result)
