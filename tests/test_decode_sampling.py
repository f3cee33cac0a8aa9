"""Sampling (temperature, top-k, nucleus), the output length limit, and Translator's decoding options."""

from __future__ import annotations

import math

import pytest
import torch

import nmt.decoding.search
from nmt.decoding.search import filter_logits, greedy, length_limit, sample
from nmt.decoding.translator import Translator
from nmt.errors import InputTooLongError

from .test_model import BOS, EOS, MarkovModel, random_batch, tiny

INF = float("inf")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tokens_of(samples) -> list[list[list[int]]]:
    return [[h.tokens for h in hyps] for hyps in samples]


# --------------------------------------------------------------------------- filtering
def test_filter_logits_keeps_the_top_k_and_the_nucleus_in_vocabulary_order():
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])  # ranks: 1 -> 0.5, 3 -> 0.3, 0 -> 0.15, 2 -> 0.05
    logits = probs.log()[None]  # (1, 4)

    def kept(**kw) -> list[int]:
        return torch.isfinite(filter_logits(logits, **kw))[0].nonzero().squeeze(1).tolist()

    assert kept() == [0, 1, 2, 3]
    assert kept(top_k=2) == [1, 3]
    assert kept(top_k=10) == [0, 1, 2, 3]
    assert kept(top_p=0.45) == [1]  # 0.5 alone reaches 0.45
    assert kept(top_p=0.55) == [1, 3]  # mass before token 3 is 0.5 < 0.55
    assert kept(top_p=0.85) == [0, 1, 3]  # mass before token 0 is 0.8 < 0.85
    # top-p looks at the distribution top-k left: renormalised, token 1 has 0.625 >= 0.6 alone
    assert kept(top_k=2, top_p=0.6) == [1]
    assert kept(top_p=1e-6) == [1]
    torch.testing.assert_close(filter_logits(logits, top_k=2)[0, [1, 3]], logits[0, [1, 3]])  # kept ones unchanged


# --------------------------------------------------------------------------- sample()
def one_step_model(probs: list[float]) -> MarkovModel:
    """From BOS, token 3 + i with probability probs[i]; after it, EOS for certain. Nothing else."""
    table = torch.full((6, 6), -INF)
    table[BOS, 3:] = torch.tensor(probs).log()
    table[3:, EOS] = 0.0
    return MarkovModel(table)


@pytest.mark.parametrize("kwargs, expected", [
    ({}, [0.5, 0.3, 0.2]),
    ({"temperature": 2.0}, [math.sqrt(p) / sum(math.sqrt(q) for q in (0.5, 0.3, 0.2)) for p in (0.5, 0.3, 0.2)]),
    ({"temperature": 0.5}, [p * p / (0.25 + 0.09 + 0.04) for p in (0.5, 0.3, 0.2)]),
    ({"top_k": 2}, [0.625, 0.375, 0.0]),
    ({"top_p": 0.6}, [0.625, 0.375, 0.0]),
    ({"top_p": 0.4}, [1.0, 0.0, 0.0]),
])
def test_samples_follow_the_scaled_filtered_distribution_and_score_its_log_probability(kwargs, expected):
    model = one_step_model([0.5, 0.3, 0.2])
    src = torch.ones(1, 1, dtype=torch.long)
    n = 4000
    (hyps,) = sample(model, src, src > 0, BOS, EOS, 5, n_samples=n, generator=seeded(0), **kwargs)  # type: ignore[arg-type]
    assert len(hyps) == n and all(len(h.tokens) == 1 for h in hyps)
    counts = torch.bincount(torch.tensor([h.tokens[0] - 3 for h in hyps]), minlength=3)
    assert (counts / n).tolist() == pytest.approx(expected, abs=0.03)
    for h in hyps[:50]:
        assert h.score == pytest.approx(math.log(expected[h.tokens[0] - 3]), abs=1e-5)


def test_same_seed_same_samples_and_another_seed_other_samples():
    model = tiny(seed=2)
    _, _, b = random_batch(seed=2)

    def draw(seed: int):
        return sample(model, b.src, b.src_mask, BOS, EOS, 12, n_samples=2, generator=seeded(seed))

    first, again, other = draw(0), draw(0), draw(1)
    assert tokens_of(first) == tokens_of(again)
    assert [[h.score for h in hyps] for hyps in first] == [[h.score for h in hyps] for hyps in again]
    assert tokens_of(first) != tokens_of(other)


@pytest.mark.parametrize("kwargs", [{"top_k": 1}, {"top_p": 1e-6}, {"top_k": 1, "temperature": 3.0}])
def test_sampling_with_a_single_candidate_is_greedy_token_for_token(kwargs):
    model = tiny(seed=2)
    _, _, b = random_batch(seed=2, n=7)
    expected = [h.tokens for h in greedy(model, b.src, b.src_mask, BOS, EOS, 15)]
    assert len({tuple(t) for t in expected}) > 2, "sources must decode differently for this test to mean anything"
    samples = sample(model, b.src, b.src_mask, BOS, EOS, 15, n_samples=3, generator=seeded(0), **kwargs)
    # each source's samples are all its greedy output: the repeated rows stay with their source
    assert tokens_of(samples) == [[t, t, t] for t in expected]
    assert all(h.score == pytest.approx(0.0, abs=1e-6) for hyps in samples for h in hyps)


def test_n_samples_gives_a_list_of_n_per_source():
    model = tiny(seed=1)
    _, _, b = random_batch(seed=1, n=4)
    samples = sample(model, b.src, b.src_mask, BOS, EOS, 6, n_samples=5, generator=seeded(0))
    assert [len(hyps) for hyps in samples] == [5, 5, 5, 5]
    assert all(len(h.tokens) <= 6 and EOS not in h.tokens and math.isfinite(h.score)
               for hyps in samples for h in hyps)


@pytest.mark.parametrize("kwargs, name", [
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_k": -1}, "top_k"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"n_samples": 0}, "n_samples"),
])
def test_sample_rejects_bad_options_naming_them(kwargs, name):
    model = tiny()
    _, _, b = random_batch()
    with pytest.raises(ValueError, match=name):
        sample(model, b.src, b.src_mask, BOS, EOS, 5, **kwargs)


# --------------------------------------------------------------------------- length limit
def test_length_limit_is_a_times_source_length_plus_b():
    assert length_limit(10, 0.0, 200) == 200
    assert length_limit(10, 1.5, 3) == 18
    assert length_limit(7, 0.5, 1) == 4  # floor(3.5) + 1


def test_decoders_stop_at_the_limit_and_at_the_models_max_len():
    table = torch.zeros(6, 6)
    table[:, EOS] = -INF  # never ends on its own
    table = torch.log_softmax(table, dim=-1)
    src = torch.ones(2, 1, dtype=torch.long)
    model = MarkovModel(table, max_len=8)
    for max_len, expected in ((5, 5), (100, 8)):
        assert [len(h.tokens) for h in greedy(model, src, src > 0, BOS, EOS, max_len)] == [expected] * 2  # type: ignore[arg-type]
        out = sample(model, src, src > 0, BOS, EOS, max_len, generator=seeded(0))  # type: ignore[arg-type]
        assert [len(h[0].tokens) for h in out] == [expected] * 2


# --------------------------------------------------------------------------- Translator
@pytest.fixture(scope="module")
def translator(tiny_export) -> Translator:
    return Translator.from_pretrained(tiny_export, device="cpu")


TEXTS = ["print x", "return the sum of x and y", "set total to count", "", "return len(items) " * 3]


def test_translate_computes_each_batch_limit_from_its_longest_source(translator, monkeypatch):
    seen: list[tuple[int, int]] = []

    def spy(model, src, src_mask, bos_id, eos_id, max_len):
        seen.append((src.size(1), max_len))
        return greedy(model, src, src_mask, bos_id, eos_id, max_len)

    monkeypatch.setattr(nmt.decoding.search, "greedy", spy)
    translator.translate(TEXTS, max_len_a=1.5, max_len_b=3, batch_size=2)
    assert len(seen) == 3 and len({s for s, _ in seen}) > 1
    assert all(max_len == int(1.5 * s) + 3 for s, max_len in seen)


def test_sampled_translations_are_seeded_and_sorted_by_score(translator):
    out = translator.translate(TEXTS, sample=True, n_best=4, seed=3, max_len_b=10)
    assert [[c for c, _ in t.n_best] for t in out] == [
        [c for c, _ in t.n_best] for t in translator.translate(TEXTS, sample=True, n_best=4, seed=3, max_len_b=10)]
    for t in out:
        scores = [s for _, s in t.n_best]
        assert len(scores) == 4 and scores == sorted(scores, reverse=True)
        assert (t.text, t.score) == t.n_best[0]
    other = translator.translate(TEXTS, sample=True, n_best=4, seed=4, max_len_b=10)
    assert [t.n_best for t in out] != [t.n_best for t in other]


def test_sampling_top_k_1_translates_like_greedy(translator):
    greedy_out = translator.translate(TEXTS, max_len_b=10)
    sampled = translator.translate(TEXTS, sample=True, top_k=1, seed=0, max_len_b=10)
    assert [t.text for t in sampled] == [t.text for t in greedy_out]


def test_long_inputs_are_truncated_and_flagged_or_refused_when_strict(translator):
    texts = ["print x", "x " * 500, "y"]
    assert [t.truncated for t in translator.translate(texts, max_len_b=4)] == [False, True, False]
    with pytest.raises(InputTooLongError, match="input 1 ") as e:
        translator.translate(texts, max_len_b=4, strict=True)
    assert isinstance(e.value, ValueError) and e.value.index == 1 and e.value.limit == translator.model.cfg.max_len - 1


def test_on_batch_reports_each_batch_size(translator):
    sizes: list[int] = []
    translator.translate(TEXTS + TEXTS[:2], batch_size=3, max_len_b=2, on_batch=sizes.append)
    assert sizes == [3, 3, 1]


@pytest.mark.parametrize("kwargs, name", [
    ({"beam_size": 0}, "beam_size"),
    ({"n_best": 0}, "n_best"),
    ({"beam_size": 2, "n_best": 3}, "n_best"),
    ({"sample": True, "beam_size": 2}, "beam_size"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.01}, "top_p"),
    ({"temperature": 0.0}, "temperature"),
    ({"top_k": -1}, "top_k"),
    ({"max_len_a": -0.5}, "max_len_a"),
    ({"max_len_a": float("inf")}, "max_len_a"),
    ({"max_len_b": 0}, "max_len_b"),
    ({"batch_size": 0}, "batch_size"),
])
def test_translate_rejects_bad_options_naming_them(translator, kwargs, name):
    with pytest.raises(ValueError, match=name):
        translator.translate(["print x"], **kwargs)


def test_sampling_draws_n_best_samples_beyond_beam_size(translator):
    (t,) = translator.translate(["print x"], sample=True, n_best=3, seed=0, max_len_b=5)
    assert len(t.n_best) == 3
