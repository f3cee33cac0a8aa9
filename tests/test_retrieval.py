"""Retrieval baseline: nearest training description by TF-IDF cosine."""

from __future__ import annotations

import pytest

from nmt.retrieval import RetrievalBaseline, terms

NL = [
    "define the function strip_tags with an argument value.",
    "import module warnings.",
    "from django.conf import settings into default name space.",
    "return the result of the call to the function strip_tags.",
    "import module warnings.",  # duplicate description, different code
    "",
]
CODE = ["def strip_tags ( value ) :", "import warnings", "from django . conf import settings",
        "return strip_tags ( value )", "import warnings as w", "pass"]


@pytest.fixture(scope="module")
def rb() -> RetrievalBaseline:
    return RetrievalBaseline().fit(NL, CODE)


def test_terms_lowercase_and_split_identifiers() -> None:
    assert terms("Call strip_tags(Value), 2x!") == ["call", "strip", "tags", "value", "2x"]


def test_identical_description_returns_its_code(rb: RetrievalBaseline) -> None:
    assert rb.predict([NL[0], NL[2], NL[3]]) == [CODE[0], CODE[2], CODE[3]]


def test_near_match_wins(rb: RetrievalBaseline) -> None:
    assert rb.predict(["Settings from DJANGO conf"]) == [CODE[2]]
    assert rb.predict(["call function strip_tags, return its result"]) == [CODE[3]]


def test_ties_go_to_the_lowest_index(rb: RetrievalBaseline) -> None:
    assert rb.nearest(["import module warnings."]) == [1]  # indices 1 and 4 tie exactly
    assert rb.nearest(["zzz qqq", ""]) == [0, 0]  # no known word: every score is 0
    assert RetrievalBaseline().fit(NL[::-1], CODE[::-1]).nearest(["import module warnings."]) == [1]


def test_deterministic(rb: RetrievalBaseline) -> None:
    queries = ["import warnings", "strip tags value", "name space default"]
    assert rb.predict(queries) == RetrievalBaseline().fit(NL, CODE).predict(queries)


def test_errors() -> None:
    with pytest.raises(RuntimeError, match="fit"):
        RetrievalBaseline().predict(["x"])
    with pytest.raises(ValueError):
        RetrievalBaseline().fit(["a"], [])
    with pytest.raises(ValueError):
        RetrievalBaseline().fit([], [])


def test_neighbours_give_the_cosine_with_the_query(rb: RetrievalBaseline) -> None:
    (same, score_same), (near, score_near), (none, score_none) = rb.neighbours(
        [NL[2], "Settings from DJANGO conf", "zzz qqq"])
    assert (same, near, none) == (2, 2, 0)
    assert score_same == pytest.approx(1.0)  # a description compared with itself
    assert 0.0 < score_near < 1.0
    assert score_none == 0.0  # no known word
    assert [i for i, _ in rb.neighbours(NL)] == rb.nearest(NL)
