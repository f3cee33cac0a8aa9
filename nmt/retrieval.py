"""Retrieval baseline: answer with the code of the most similar training description.

Descriptions become lowercase word tokens: maximal runs of letters and digits (``[^\\W_]+`` on the
lowercased text), so ``snake_case`` splits into ``snake`` and ``case`` and punctuation is dropped.
Each description ``d`` is a TF-IDF vector over the training vocabulary, L2-normalised::

    w(t, d) = (1 + log tf(t, d)) * idf(t),     idf(t) = log((1 + N) / (1 + df(t))) + 1

(sublinear term frequency, smoothed idf as in scikit-learn; N training descriptions, df(t) of
them contain t). The score of a training pair for a query ``q`` is the cosine
``<v(q), v(d)>``; terms the training set never saw are ignored. The prediction is the code of the
highest-scoring pair, ties (a query sharing no term with any description included) going to the
lowest training index. An inverted index makes each query cost only the postings of its terms.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

_WORD = re.compile(r"[^\W_]+")
# The training pairs the baseline searches, as an exported model directory carries them (the export
# stage writes it; `nmt demo` reads it): gzipped JSON lines {"nl", "code"}.
PAIRS_FILE = "retrieval.jsonl.gz"


def terms(text: str) -> list[str]:
    """Lowercase letter/digit runs of ``text``."""
    return _WORD.findall(text.lower())


def pairs_bytes(pairs: Iterable[tuple[str, str]]) -> bytes:
    """``pairs`` as :data:`PAIRS_FILE`'s bytes: the same pairs give the same bytes (no gzip timestamp),
    so DVC sees an unchanged export as unchanged."""
    lines = "".join(json.dumps({"nl": nl, "code": code}, ensure_ascii=False) + "\n" for nl, code in pairs)
    return gzip.compress(lines.encode("utf-8"), mtime=0)


class RetrievalBaseline:
    """Nearest training description by TF-IDF cosine; see the module docstring for the maths."""

    def __init__(self) -> None:
        self._code: list[str] = []
        self._idf: dict[str, float] = {}
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # term -> (doc ids, weights)

    def fit(self, train_nl: Sequence[str], train_code: Sequence[str]) -> RetrievalBaseline:
        if len(train_nl) != len(train_code):
            raise ValueError(f"{len(train_nl)} descriptions but {len(train_code)} code strings")
        if not train_nl:
            raise ValueError("the retrieval baseline needs at least one training pair")
        n = len(train_nl)
        tfs = [Counter(terms(text)) for text in train_nl]
        df = Counter(term for tf in tfs for term in tf)
        self._idf = {term: math.log((1 + n) / (1 + count)) + 1.0 for term, count in df.items()}
        docs: dict[str, list[int]] = {term: [] for term in df}
        weights: dict[str, list[float]] = {term: [] for term in df}
        for i, tf in enumerate(tfs):
            w = {term: (1.0 + math.log(c)) * self._idf[term] for term, c in tf.items()}
            norm = math.sqrt(sum(x * x for x in w.values()))  # 0 only when w is empty (no words)
            for term, x in w.items():
                docs[term].append(i)
                weights[term].append(x / norm)
        self._postings = {t: (np.array(docs[t], dtype=np.int64), np.array(weights[t])) for t in df}
        self._code = list(train_code)
        return self

    def nearest(self, nl: Sequence[str]) -> list[int]:
        """Index of the best training pair for each query."""
        return [i for i, _ in self.neighbours(nl)]

    def neighbours(self, nl: Sequence[str], exclude: Sequence[int] | None = None) -> list[tuple[int, float]]:
        """The best training pair for each query: its index and its cosine with the query, over the
        words the training descriptions hold (0 for a query sharing no word with any of them).
        ``exclude[q]``: a training pair query ``q`` may not get (itself, when the queries are the
        training descriptions), or -1 for none."""
        if not self._code:
            raise RuntimeError("RetrievalBaseline.fit must be called before nearest/neighbours/predict")
        if exclude is not None and len(exclude) != len(nl):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(nl)} queries")
        if exclude is not None and len(self._code) < 2:
            raise ValueError("excluding a pair needs at least two training pairs")
        out = []
        scores = np.zeros(len(self._code))
        for q, text in enumerate(nl):
            w = {t: (1.0 + math.log(c)) * self._idf[t] for t, c in Counter(terms(text)).items() if t in self._idf}
            scores[:] = 0.0
            for term in sorted(w):  # a fixed summation order: identical descriptions tie exactly
                idx, dw = self._postings[term]
                scores[idx] += w[term] * dw
            if exclude is not None and exclude[q] >= 0:
                scores[exclude[q]] = -np.inf
            best = int(np.argmax(scores))  # first maximum = lowest index
            # The query's norm scales every score alike: it changes the cosine, not the argmax.
            norm = math.sqrt(sum(x * x for x in w.values()))
            out.append((best, float(scores[best]) / norm if norm else 0.0))
        return out

    def code(self, i: int) -> str:
        """The code of training pair ``i``."""
        return self._code[i]

    def predict(self, nl: Sequence[str]) -> list[str]:
        """The code of the nearest training pair for each query."""
        return [self._code[i] for i in self.nearest(nl)]
