"""Reranking a beam's n-best list: by Python validity, and by what the description says.

``syntax`` puts the hypotheses that parse first, each group still best score first.

``lexical`` does the same, then orders each group by the model's score minus three penalties
that compare a hypothesis with its description through a :class:`Lexicon` (co-occurrence counts
of the training pairs). Words are identifiers and numbers (``strip_tags``, ``level``, ``2000``):

- **missing**: the description's words the hypothesis lacks, each weighted by how often a training
  description's word shows up in its code, P(w in code | w in description). ``increment level by
  one`` -> ``end += 1`` leaves out ``level``, which training code holds for most such descriptions;
  the template words (``call``, ``substitute``) weigh almost nothing.
- **unexplained**: the hypothesis's words its description lacks, each weighted by
  P(t in description | t in code): ``end`` in that output is almost always spelled out in its
  description when training code uses it; ``self`` or ``None`` rarely are.
- **repeated**: identifiers the hypothesis writes more often than its description names them
  (once at least): ``self . cdata_tag = self . cdata_tag = None`` for ``set self.cdata_tag to None``.

The score of a hypothesis is ``score - w_m * missing - w_u * unexplained - w_r * repeated``, plus
``w_c * log P(description | hypothesis)`` when a reverse model is trained (:mod:`nmt.decoding.reconstruction`,
the reconstruction score of neural rerankers, Yin & Neubig 2019). The penalties are its count-based
companion: what a model reading the code back would say about which description words it explains. A word the
training pairs never show gets :data:`PRIOR` (an unseen word is most likely a name the code copies),
with :data:`PRIOR_WEIGHT` pseudo-counts.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nmt.data.pairs import iter_jsonl
from nmt.errors import ModelFileError
from nmt.io import atomic_write_json, read_tokenize_output

WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?")
PRIOR = 0.8  # P(in the other side) of a word the training pairs never show
PRIOR_WEIGHT = 2.0  # pseudo-counts behind PRIOR
LEXICON_FILE = "lexicon.json"  # its name in data/tokenized/ and in an exported model directory
FORMAT = "nmt-lexicon"
VERSION = 1

Candidate = tuple[str, float]  # (text, score)


def words(text: str) -> list[str]:
    """Identifiers and numbers of ``text``, in order, repeats kept."""
    return WORD.findall(text)


@dataclass(frozen=True)
class Lexicon:
    """Per word: in how many training descriptions (codes) it occurs, and in how many of those the
    pair's other side holds it too."""

    described: dict[str, tuple[int, int]]  # word -> (descriptions holding it, of those: codes holding it)
    coded: dict[str, tuple[int, int]]  # word -> (codes holding it, of those: descriptions holding it)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Lexicon:
        """Count (description, code) pairs."""
        d_n, d_both, c_n, c_both = Counter(), Counter(), Counter(), Counter()
        for nl, code in pairs:
            in_nl, in_code = set(words(nl)), set(words(code))
            d_n.update(in_nl)
            d_both.update(in_nl & in_code)
            c_n.update(in_code)
            c_both.update(in_nl & in_code)
        return cls({w: (n, d_both[w]) for w, n in d_n.items()}, {w: (n, c_both[w]) for w, n in c_n.items()})

    @staticmethod
    def _smoothed(counts: tuple[int, int] | None) -> float:
        n, both = counts or (0, 0)
        return (both + PRIOR * PRIOR_WEIGHT) / (n + PRIOR_WEIGHT)

    def p_in_code(self, word: str) -> float:
        """P(a training pair's code holds ``word`` | its description does), smoothed."""
        return self._smoothed(self.described.get(word))

    def p_in_description(self, word: str) -> float:
        """P(a training pair's description holds ``word`` | its code does), smoothed."""
        return self._smoothed(self.coded.get(word))

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION,
                "described": {w: list(c) for w, c in sorted(self.described.items())},
                "coded": {w: list(c) for w, c in sorted(self.coded.items())}}

    @classmethod
    def from_dict(cls, data: object, source: str = "lexicon") -> Lexicon:
        """Validate and rebuild; raise :class:`ModelFileError` naming ``source`` and the first problem."""
        def fail(problem: str) -> ModelFileError:
            return ModelFileError(f"{source}: invalid lexicon file: {problem}. Rebuild it with the tokenize "
                                  "stage (`dvc repro tokenize`) or re-export the model.")

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise fail(f"expected a JSON object with format {FORMAT!r}")
        if data.get("version") != VERSION:
            raise fail(f"version {data.get('version')!r} is not supported (this code reads version {VERSION})")
        unknown = sorted(set(data) - {"format", "version", "described", "coded"})
        if unknown:
            raise fail(f"unknown key {unknown[0]!r} (known keys: format, version, described, coded)")
        tables = {}
        for key in ("described", "coded"):
            table = data.get(key)
            if not isinstance(table, dict):
                raise fail(f"{key!r} must be an object of word -> [count, count]")
            for word, c in table.items():
                ok = (isinstance(c, list) and len(c) == 2 and all(type(x) is int for x in c) and 0 <= c[1] <= c[0])
                if not ok:
                    raise fail(f"{key}[{word!r}] must be [n, both] with 0 <= both <= n, got {c!r}")
            tables[key] = {w: (c[0], c[1]) for w, c in table.items()}
        return cls(tables["described"], tables["coded"])

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Lexicon:
        return cls.from_dict(read_tokenize_output(path, "the lexicon"), source=str(path))


@dataclass(frozen=True)
class Penalties:
    """How far a hypothesis strays from its description (module docstring)."""

    missing: float
    unexplained: float
    repeated: float


def penalties(description: str, code: str, lexicon: Lexicon) -> Penalties:
    return _penalties(Counter(words(description)), code, lexicon)


def _penalties(nl_counts: Counter, code: str, lexicon: Lexicon) -> Penalties:
    """:func:`penalties` with the description's words counted once for all its hypotheses."""
    code_counts = Counter(words(code))
    missing = sum(lexicon.p_in_code(w) for w in nl_counts if w not in code_counts)
    unexplained = sum(lexicon.p_in_description(t) for t in code_counts if t not in nl_counts)
    repeated = sum(max(0, n - max(1, nl_counts[t])) for t, n in code_counts.items() if not t[0].isdigit())
    return Penalties(missing, unexplained, repeated)


@dataclass(frozen=True)
class LexicalWeights:
    missing: float = 0.0
    unexplained: float = 0.0
    repeated: float = 0.0
    reconstruction: float = 0.0  # of log P(description | hypothesis) under the reverse model (nmt.decoding.reconstruction)

    @classmethod
    def of(cls, cfg: Any) -> LexicalWeights:
        """The weights of anything holding the evaluate section's rerank_* options."""
        return cls(cfg.rerank_missing, cfg.rerank_unexplained, cfg.rerank_repeated, cfg.rerank_reconstruction)

    def score(self, score: float, p: Penalties, reconstruction: float = 0.0) -> float:
        return (score - self.missing * p.missing - self.unexplained * p.unexplained - self.repeated * p.repeated
                + self.reconstruction * reconstruction)


def rerank_candidates(candidates: list[Candidate], how: str, description: str = "", lexicon: Lexicon | None = None,
                      weights: LexicalWeights = LexicalWeights(),
                      reconstruction: Sequence[float] | None = None) -> list[Candidate]:
    """(text, score) candidates, best first, reordered by ``how`` (none, syntax or lexical).

    The scores that come back are the model's own: reranking changes the order, not the scores.
    Valid Python comes first under both syntax and lexical, so the top one is valid whenever any
    candidate is (:func:`nmt.metrics.is_valid_python`). ``reconstruction`` holds each candidate's
    log P(description | candidate) (:mod:`nmt.decoding.reconstruction`), needed when its weight is not 0.
    """
    return [candidates[i] for i in rerank_order(candidates, how, description, lexicon, weights, reconstruction)]


def rerank_order(candidates: list[Candidate], how: str, description: str = "", lexicon: Lexicon | None = None,
                 weights: LexicalWeights = LexicalWeights(),
                 reconstruction: Sequence[float] | None = None) -> list[int]:
    """The indices of ``candidates`` in the order :func:`rerank_candidates` gives them."""
    everything = list(range(len(candidates)))
    if how == "none":
        return everything
    from nmt.metrics import is_valid_python

    if how == "syntax":
        return sorted(everything, key=lambda i: not is_valid_python(candidates[i][0]))  # stable: scores keep their order
    if how != "lexical":
        raise ValueError(f"rerank must be none, syntax or lexical, got {how!r}")
    if lexicon is None:
        raise ModelFileError("rerank 'lexical' needs the model's lexicon.json (written by the tokenize stage and "
                             "copied by the export stage: re-export the model, or use --rerank syntax)")
    if weights.reconstruction and (reconstruction is None or len(reconstruction) != len(candidates)):
        raise ValueError("a reconstruction weight needs one reconstruction score per candidate")
    rec = reconstruction if weights.reconstruction else [0.0] * len(candidates)
    nl_counts = Counter(words(description))
    keys = [(not is_valid_python(text), -weights.score(score, _penalties(nl_counts, text, lexicon), r))
            for (text, score), r in zip(candidates, rec)]
    return sorted(everything, key=keys.__getitem__)


def write_lexicon(train: Path, out: Path) -> Lexicon:
    """Count the raw (unmasked) training pairs of ``train`` into ``out``: the reranker compares
    outputs with the descriptions users write, not with their masked forms."""
    lexicon = Lexicon.from_pairs((r["nl"], r["code"]) for r in iter_jsonl(train))
    lexicon.save(out)
    return lexicon
