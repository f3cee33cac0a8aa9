"""Scores of generated code against references: BLEU, CodeXGLUE BLEU, chrF, exact match (of tokens, and of
Python syntax trees), syntax, CodeBLEU.

Every function takes two equally long lists of strings, ``hyps`` and ``refs`` (a length mismatch
raises ValueError), returns a percentage in 0..100 as a plain float, and accepts empty strings.
Empty lists score 0.0. Code is compared as whitespace-separated tokens (``s.split()``), so
``"a  b"`` and ``"a b"`` are the same code; :func:`exact_match_ast` also counts lines whose Python
syntax trees are equal. No torch here.
"""

from __future__ import annotations

import ast
import collections
import math
import re
import warnings
from collections.abc import Sequence

import sacrebleu

_BLOCK_AFTER_IF = ("else", "elif")
_BLOCK_AFTER_TRY = ("except", "finally")


def _check(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")


def _ws(s: str) -> str:
    return " ".join(s.split())


def bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (tokenize="none") over whitespace-normalised code."""
    _check(hyps, refs)
    if not hyps:
        return 0.0
    return float(sacrebleu.corpus_bleu([_ws(h) for h in hyps], [[_ws(r) for r in refs]], tokenize="none").score)


def codexglue_bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """BLEU of the CodeXGLUE text-to-code evaluator: TF-NMT ``compute_bleu(max_order=4, smooth=True)``.

    On whitespace tokens, with one reference per hypothesis. Over the corpus, let ``m_n`` be the
    clipped n-gram matches (each hypothesis n-gram counted at most as often as in its reference)
    and ``t_n`` the hypothesis n-grams, both summed over all pairs, ``c`` the total hypothesis
    length and ``r`` the total reference length. Then (Lin & Och 2004 "+1" smoothing, every order)::

        p_n  = (m_n + 1) / (t_n + 1)                       n = 1..4
        BP   = 1 if c > r else exp(1 - r / c)
        BLEU = 100 * BP * exp(sum_n log(p_n) / 4)

    Unlike sacrebleu, lower orders and short corpora never collapse to 0 thanks to the +1.
    Edge cases the original divides by zero on: ``c == 0`` gives 0, and ``r == 0 < c`` gives
    ``BP = 1``. The official evaluator rounds to 2 decimals; this returns the full float.
    """
    _check(hyps, refs)
    max_order = 4
    matches = [0] * max_order
    possible = [0] * max_order
    hyp_len = ref_len = 0
    for hyp, ref in zip(hyps, refs):
        h, r = hyp.split(), ref.split()
        hyp_len += len(h)
        ref_len += len(r)
        overlap = _ngrams(h, max_order) & _ngrams(r, max_order)
        for ngram, count in overlap.items():
            matches[len(ngram) - 1] += count
        for n in range(1, max_order + 1):
            possible[n - 1] += max(len(h) - n + 1, 0)
    if hyp_len == 0:
        return 0.0
    log_precision = sum(math.log((m + 1.0) / (p + 1.0)) for m, p in zip(matches, possible)) / max_order
    bp = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return 100.0 * bp * math.exp(log_precision)


def _ngrams(tokens: list[str], max_order: int) -> collections.Counter:
    return collections.Counter(
        tuple(tokens[i : i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1)
    )


def chrf(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """sacrebleu corpus chrF (character 6-grams, beta 2; whitespace is ignored by chrF itself)."""
    _check(hyps, refs)
    if not hyps:
        return 0.0
    return float(sacrebleu.corpus_chrf([_ws(h) for h in hyps], [[_ws(r) for r in refs]]).score)


def exact_match(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Percentage of pairs whose whitespace-token sequences are equal."""
    _check(hyps, refs)
    if not hyps:
        return 0.0
    return 100.0 * sum(map(same_tokens, hyps, refs)) / len(hyps)


def same_tokens(hyp: str, ref: str) -> bool:
    """Whether two lines have the same whitespace-separated tokens (:func:`exact_match`'s test)."""
    return hyp.split() == ref.split()


def is_valid_python(code: str) -> bool:
    """Whether ``code`` parses as Python, alone or as one line of a block that is cut out of context.

    A Django target is a single logical line, which may open or continue a block. The rule, applied
    only when ``code`` does not parse as it is (after stripping surrounding blank space):

    - a line starting with ``else`` / ``elif`` gets ``if x:\\n pass\\n`` in front;
      one starting with ``except`` / ``finally`` gets ``try:\\n pass\\n`` in front;
    - a line ending with ``:`` (a block header) gets an indented ``pass`` body appended;
    - a line starting with ``@`` (a decorator) gets ``def f(): pass`` appended;
    - a line starting with ``try`` then gets ``finally:\\n pass`` appended.

    ``return`` / ``yield`` / ``break`` outside a function or loop already parse (``ast.parse``
    does not check that). An empty or all-blank string is *not* valid: it is no code at all.
    """
    return parse_line(code) is not None


def parse_line(code: str) -> ast.Module | None:
    """The syntax tree of ``code`` by :func:`is_valid_python`'s rule (the added context included,
    so two lines that needed the same context compare), or None where it does not parse."""
    stripped = code.strip()
    if not stripped:
        return None
    tree = _parse(stripped)
    if tree is not None:
        return tree
    word = re.match(r"\w*", stripped).group()
    prefix = "if x:\n pass\n" if word in _BLOCK_AFTER_IF else "try:\n pass\n" if word in _BLOCK_AFTER_TRY else ""
    suffix = "\n pass" if stripped.endswith(":") else "\ndef f(): pass" if stripped.startswith("@") else ""
    if word == "try":
        suffix += "\nfinally:\n pass"
    return _parse(prefix + stripped + suffix) if prefix or suffix else None


def _parse(source: str) -> ast.Module | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. SyntaxWarning for "\d" in a string literal
        try:
            return ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None


def same_code(hyp: str, ref: str) -> bool:
    """Whether two lines are the same program: equal whitespace tokens, or both parse
    (:func:`parse_line`) into equal syntax trees.

    Equal trees ignore what Python itself ignores: the quote characters of a string (``'uri'`` and
    ``"uri"``, ``r'\\d'`` and ``'\\\\d'``), adjacent string literals (``'a' 'b'`` is ``'ab'``), and
    redundant brackets (``(a + b)``, ``for (k, v) in``). It is how TranX's Django evaluator (Yin &
    Neubig 2018, ``datasets/django/evaluator.py``) counts a hypothesis correct: the reference goes
    through Python's syntax tree and back (``astor.to_source``) and the hypothesis is generated from
    a tree, so quote style and brackets cannot differ.
    """
    if same_tokens(hyp, ref):
        return True
    a, b = parse_line(hyp), parse_line(ref)
    return a is not None and b is not None and ast.dump(a) == ast.dump(b)


def exact_match_ast(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Percentage of pairs that are the same program by :func:`same_code` (Python only)."""
    _check(hyps, refs)
    if not hyps:
        return 0.0
    return 100.0 * sum(map(same_code, hyps, refs)) / len(hyps)


def syntax_valid(hyps: Sequence[str]) -> float:
    """Percentage of hypotheses that are valid Python by :func:`is_valid_python`."""
    if not hyps:
        return 0.0
    return 100.0 * sum(map(is_valid_python, hyps)) / len(hyps)


def codebleu(hyps: Sequence[str], refs: Sequence[str], language: str = "java") -> dict[str, float]:
    """CodeBLEU (Ren et al. 2020) as the CodeXGLUE text-to-code leaderboard computes it.

    The ``codebleu`` package with its tree-sitter grammar: the mean of BLEU, keyword-weighted BLEU,
    AST subtree match and data-flow match, each weighted 0.25. Returns ``codebleu`` and its four
    parts, in percent. Where no reference has a data flow, that part degenerates to 0 (the package
    warns; the leaderboard's script does the same).
    """
    _check(hyps, refs)
    if not hyps:
        return {"codebleu": 0.0}
    import logging

    from codebleu import calc_codebleu

    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # its "no data-flows" warning goes through the root logger
    try:
        parts = calc_codebleu(list(refs), list(hyps), lang=language)
    finally:
        root.setLevel(level)
    names = {"codebleu": "codebleu", "ngram_match_score": "codebleu_ngram",
             "weighted_ngram_match_score": "codebleu_weighted_ngram", "syntax_match_score": "codebleu_syntax",
             "dataflow_match_score": "codebleu_dataflow"}
    return {names[k]: 100.0 * float(v) for k, v in parts.items() if k in names}


def score(hyps: Sequence[str], refs: Sequence[str], language: str = "python") -> dict[str, float]:
    """All metrics at once: bleu, codexglue_bleu, chrf, exact_match, n; exact_match_ast and syntax_valid for Python,
    CodeBLEU and its parts for Java (:func:`codebleu`)."""
    _check(hyps, refs)
    hyps, refs = list(hyps), list(refs)
    out: dict[str, float] = {
        "bleu": bleu(hyps, refs),
        "codexglue_bleu": codexglue_bleu(hyps, refs),
        "chrf": chrf(hyps, refs),
        "exact_match": exact_match(hyps, refs),
    }
    if language == "python":
        out["exact_match_ast"] = exact_match_ast(hyps, refs)
        out["syntax_valid"] = syntax_valid(hyps)
    if language == "java":
        out.update(codebleu(hyps, refs, "java"))
    out["n"] = len(hyps)
    return out
