"""How many wrong predictions leave out a description word that the rare-word threshold keeps as a word.

    .venv/bin/python -m benchmarks.missed_words PREDICTIONS.jsonl TRAIN.jsonl [--thresholds 10 30 100]

``tokenize.rare_words: N`` masks a plain description word as an ``_ID:i_`` when fewer than N
training descriptions hold it; the model copies those. A common word stays a word, and the model
has to write it from the vocabulary. This counts, for each N, the wrong lines of the evaluate
stage's ``predictions.jsonl`` (exact match on whitespace tokens) whose gold code holds a word of
the description that N keeps as a word (not code-like, in N's common words) and the prediction
lacks. It is an upper bound on what raising N could fix: most of those lines are wrong elsewhere too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nmt.data.pairs import read_jsonl
from nmt.placeholders import _IDENTIFIER, common_words, is_name


def missed_common_words(nl: str, code: str, prediction: str, common: frozenset[str]) -> set[str]:
    """Words of ``nl`` kept as words under ``common`` that ``code`` holds and ``prediction`` lacks."""
    words = set(_IDENTIFIER.findall(nl))
    predicted = set(prediction.split())
    return {w for w in code.split() if w in words and not is_name(w, common) and w not in predicted}


def wrong_lines(predictions: list[dict]) -> list[dict]:
    """The predictions that are not an exact match on whitespace tokens."""
    return [r for r in predictions if r["prediction"].split() != r["code"].split()]


def count(predictions: list[dict], train_descriptions: list[str], thresholds: list[int]) -> dict[int, int]:
    """For each threshold: the number of wrong predictions that miss such a word."""
    wrong = wrong_lines(predictions)
    result = {}
    for n in thresholds:
        common = common_words(train_descriptions, n)
        result[n] = sum(bool(missed_common_words(r["nl"], r["code"], r["prediction"], common)) for r in wrong)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path, help="the evaluate stage's predictions.jsonl")
    parser.add_argument("train", type=Path, help="the training pairs ({nl, code} jsonl) the model saw")
    parser.add_argument("--thresholds", type=int, nargs="+", default=[10, 30, 100], help="values of tokenize.rare_words")
    args = parser.parse_args()
    predictions = read_jsonl(args.predictions)
    wrong = len(wrong_lines(predictions))
    counts = count(predictions, [r["nl"] for r in read_jsonl(args.train)], args.thresholds)
    print(f"{wrong} of {len(predictions)} predictions are wrong; of those, missing a description word kept as a word:")
    for n, k in counts.items():
        print(f"  rare_words {n}: {k}")


if __name__ == "__main__":
    main()
