"""`Translator.translate` on any text with any options: outputs are strings, or the documented
errors (ValueError naming a bad option; InputTooLongError in strict mode), never anything else."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nmt.decoding.translator import Translation, Translator
from nmt.device import torch_threads
from nmt.errors import InputTooLongError

from .conftest import fuzz_examples

OPTION_NAMES = ("beam_size", "n_best", "max_len_a", "max_len_b", "temperature", "top_k", "top_p", "batch_size", "rerank")
# check() and check_sampling() name the option first: "top_p must be in (0, 1] ..., got 2.0".
OPTION_ERROR = re.compile(rf"^({'|'.join(OPTION_NAMES)}) must ")
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TEXT = st.one_of(st.text(max_size=50), st.text(min_size=200, max_size=2000), st.just(""),
                 st.sampled_from(["<|endoftext|>", "print x", "_STR:0_ 'a' \"b\"", " " * 300, "x" * 500]))
TEXTS = st.lists(TEXT, max_size=3)
POSITIVE_FLOAT = st.floats(min_value=0, max_value=1e300, exclude_min=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The model is tiny: one thread is fastest, and on a busy machine extra threads spin-wait 10x longer."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def translator(tiny_export: Path) -> Translator:
    return Translator.from_pretrained(tiny_export, device="cpu")


@st.composite
def valid_options(draw: st.DrawFn) -> dict[str, Any]:
    """Options in their documented ranges: a search (beam or greedy) or sampling."""
    options: dict[str, Any] = {
        "max_len_a": draw(st.one_of(st.floats(0, 4), st.floats(0, 1e300))),
        "max_len_b": draw(st.one_of(st.integers(1, 80), st.integers(1, 2**62))),
        "length_penalty": draw(st.one_of(st.floats(0, 10), st.floats(0, 1e300))),
        "batch_size": draw(st.integers(1, 4)),
        "rerank": draw(st.sampled_from(["none", "syntax"])),
        "strict": draw(st.booleans()),
    }
    if draw(st.booleans()):
        options |= {"sample": True, "n_best": draw(st.integers(1, 4)), "temperature": draw(POSITIVE_FLOAT),
                    "top_k": draw(st.integers(0, 50)), "top_p": draw(st.floats(0, 1, exclude_min=True)),
                    "seed": draw(st.none() | st.integers(0, 2**32))}
    else:
        beam = draw(st.integers(1, 5))
        options |= {"beam_size": beam, "n_best": draw(st.integers(1, beam))}
    return options


def check_outputs(results: list[Translation], texts: list[str], n_best: int) -> None:
    assert len(results) == len(texts)
    for r in results:
        assert isinstance(r.text, str) and isinstance(r.score, float) and isinstance(r.truncated, bool)
        assert 1 <= len(r.n_best) <= n_best
        assert all(isinstance(text, str) and isinstance(score, float) for text, score in r.n_best)
        assert r.text == r.n_best[0][0]


@pytest.mark.fuzz
@settings(FUZZ, max_examples=fuzz_examples(300))
@given(texts=TEXTS, options=valid_options())
@example(texts=["x" * 500], options={"temperature": 1e-300, "sample": True, "n_best": 2})
@example(texts=["x" * 500], options={"max_len_a": 1.7e308, "max_len_b": 2**62})
@example(texts=["print x"], options={"beam_size": 3, "length_penalty": 1e300})
@example(texts=["print x"], options={"sample": True, "top_p": 5e-324})
def test_translate_any_text_with_valid_options(translator: Translator, texts: list[str], options: dict) -> None:
    limit = translator.model.cfg.max_len  # the source holds EOS too: limit - 1 tokens of text fit
    too_long = [i for i, text in enumerate(texts) if len(translator.tokenizer.encode(text)) >= limit]
    if options.get("strict") and too_long:
        with pytest.raises(InputTooLongError) as e:
            translator.translate(texts, **options)
        assert e.value.index == too_long[0]
        return
    results = translator.translate(texts, **options)
    check_outputs(results, texts, options.get("n_best", 1))
    assert [r.truncated for r in results] == [i in too_long for i in range(len(texts))]


ANY_NUMBER = st.one_of(st.integers(-3, 6), st.floats(allow_nan=True, allow_infinity=True))


def bad_options(options: dict[str, Any], sample: bool) -> set[str]:
    """The options out of their documented ranges (DecodeSettings.check, check_sampling, batch_size)."""
    o = {"beam_size": 1, "n_best": 1, "max_len_a": 0.0, "max_len_b": 200, "temperature": 1.0, "top_k": 0,
         "top_p": 1.0, "batch_size": 64, "rerank": "none", **options}
    bad = {name for name in ("beam_size", "n_best", "max_len_b", "batch_size") if o[name] < 1}
    bad |= {"beam_size"} if sample and o["beam_size"] != 1 else set()
    bad |= {"n_best"} if not sample and o["n_best"] > o["beam_size"] else set()
    bad |= {"max_len_a"} if not (math.isfinite(o["max_len_a"]) and o["max_len_a"] >= 0) else set()
    bad |= {"temperature"} if not o["temperature"] > 0 else set()
    bad |= {"top_k"} if o["top_k"] < 0 else set()
    bad |= {"top_p"} if not 0 < o["top_p"] <= 1 else set()
    bad |= {"rerank"} if o["rerank"] not in ("none", "syntax") else set()
    return bad


@pytest.mark.fuzz
@settings(FUZZ, max_examples=fuzz_examples(200))
@given(texts=st.lists(st.text(max_size=20), max_size=2), sample=st.booleans(),
       options=st.fixed_dictionaries({}, optional={
           "beam_size": st.integers(-2, 5), "n_best": st.integers(-2, 5), "max_len_a": ANY_NUMBER,
           "max_len_b": st.integers(-2, 30), "temperature": ANY_NUMBER, "top_k": st.integers(-2, 20),
           "top_p": ANY_NUMBER, "batch_size": st.integers(-1, 3), "rerank": st.sampled_from(["none", "syntax", "ast"]),
       }))
def test_translate_raises_valueerror_naming_a_bad_option_and_only_then(
    translator: Translator, texts: list[str], sample: bool, options: dict
) -> None:
    bad = bad_options(options, sample)
    if bad:
        with pytest.raises(ValueError) as e:
            translator.translate(texts, sample=sample, **options)
        assert OPTION_ERROR.match(str(e.value)) and str(e.value).split()[0] in bad, (str(e.value), bad)
    else:
        check_outputs(translator.translate(texts, sample=sample, **options), texts, options.get("n_best", 1))
