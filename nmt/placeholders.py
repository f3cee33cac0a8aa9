"""Reversible string placeholders: quoted literals of a description stand in for the code's literals.

Descriptions of code often quote the string literals the code holds (Django: ``set help to string
'Show the SQL.'`` -> ``help = 'Show the SQL.'``). A rare literal is hard to generate token by
token but trivial to copy, so with ``tokenize.string_placeholders`` each distinct quoted literal of
the description becomes ``_STR:0_``, ``_STR:1_`` ... (numbered in order of first appearance), and
a string literal of the code whose contents equal one of them gets the same placeholder between
its own quotes::

    nl:   call the function warn with string 'get_cache is deprecated'.
    code: warn ( 'get_cache is deprecated' )
    ->    call the function warn with string '_STR:0_'.
          warn ( '_STR:0_' )                 literals = ["get_cache is deprecated"]

A placeholder stands for the *contents* of the literal: quotes and prefixes (``r``, ``b``, ``u``)
stay in the text, so the model still sees (and writes) them, and :func:`restore` puts the contents
back exactly. Only the description is needed to mask an input (:func:`mask_description`); the
code side (:func:`mask_pair`) is for training data.

Rules for a quoted literal in a description, chosen on the Django training split:

- it opens with ``'`` or ``"`` at the start of the text or after a character that is not a word
  character (so the apostrophes of ``don't`` and ``Django's`` open nothing);
- it closes at the next unescaped quote of the same kind that is followed by the end of the text
  or by a non-word character (so ``'Don't panic'`` is one literal; a backslash escapes the
  character after it, as in ``'couldn\\'t'``);
- an empty literal (``''``) is skipped: nothing to copy.

Code literals are found with Python's :mod:`tokenize`. A
text that already contains something shaped like a placeholder is left alone entirely, which makes
masking exactly reversible for every input.

**Names** (``tokenize.name_placeholders``, on top of the strings): a description also names the
identifiers its code uses, and on Django most identifiers of a dev line never seen in training
(27% of them) are written out in its description. Each distinct *code-like* name of the
description (:func:`is_code_like`: ``strip_tags``, ``__init__``, ``HttpResponse``, ``utf8``, not
English words like ``value``) becomes ``_ID:i_``, sharing the numbering with the strings, and every
whole-word occurrence of it in the code gets the same placeholder, so the model learns to copy
names by position instead of spelling them from subword pieces::

    nl:   call the function allow_lazy with 2 arguments: remove_tags, six.text_type
    code: remove_tags = allow_lazy ( remove_tags , six . text_type )
    ->    call the function _ID:0_ with 2 arguments: _ID:1_, six._ID:2_
          _ID:1_ = _ID:0_ ( _ID:1_ , six . _ID:2_ )
"""

from __future__ import annotations

import dataclasses
import io
import re
import tokenize
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

PLACEHOLDER = "_STR:{}_"
NAME_PLACEHOLDER = "_ID:{}_"
PATTERN = re.compile(r"_(?:STR|ID):(\d+)_")  # either kind; the number indexes the shared list
_IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_])[A-Za-z_][A-Za-z0-9_]*")
QUOTES = "'\""
# A literal's opening quote, after its optional prefix: ''' """ ' "
_CODE_QUOTE = re.compile(r"[A-Za-z]*('''|\"\"\"|'|\")")


def placeholder(index: int) -> str:
    return PLACEHOLDER.format(index)


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _closing(text: str, start: int, quote: str) -> int | None:
    """Index of the quote that closes a literal whose contents begin at ``start``, or None."""
    k, n = start, len(text)
    while k < n:
        ch = text[k]
        if ch == "\\":
            k += 2
            continue
        if ch == quote and (k + 1 == n or not _is_word(text[k + 1])):
            return k
        k += 1
    return None


def description_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the contents of each non-empty quoted literal of a description, in order."""
    spans, i, n = [], 0, len(text)
    while i < n:
        if text[i] in QUOTES and (i == 0 or not _is_word(text[i - 1])):
            end = _closing(text, i + 1, text[i])
            if end is not None:
                if end > i + 1:
                    spans.append((i + 1, end))
                i = end + 1
                continue
        i += 1
    return spans


def code_spans(code: str) -> list[tuple[int, int]]:
    """(start, end) of the contents of each string literal of ``code``.

    Code that stops tokenizing (an unclosed bracket or string at the end, a bad dedent) keeps the
    literals found before the problem.
    """
    line_starts = [0]
    for line in io.StringIO(code).readlines():  # the lines tokenize numbers (split at "\n" only)
        line_starts.append(line_starts[-1] + len(line))
    spans = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type != tokenize.STRING:
                continue
            quote = _CODE_QUOTE.match(tok.string)
            if quote is None:
                continue
            start = line_starts[tok.start[0] - 1] + tok.start[1] + quote.end()
            end = line_starts[tok.end[0] - 1] + tok.end[1] - len(quote.group(1))
            spans.append((start, end))
    except (tokenize.TokenError, SyntaxError, ValueError):
        pass
    return spans


def _replace(text: str, spans: list[tuple[int, int]], literals: list[str], add: bool) -> str:
    """``text`` with each span whose contents are among ``literals`` replaced by its placeholder.

    With ``add``, contents not seen yet are appended to ``literals`` (the description side).
    """
    out, last = [], 0
    for start, end in spans:
        body = text[start:end]
        if body not in literals:
            if not add:
                continue
            literals.append(body)
        out += [text[last:start], placeholder(literals.index(body))]
        last = end
    out.append(text[last:])
    return "".join(out)


def is_code_like(word: str) -> bool:
    """A name no English sentence would hold: an underscore, a digit, or a capital after the first letter."""
    return "_" in word or any(c.isdigit() for c in word) or any(c.isupper() for c in word[1:])


def _outside_placeholders(text: str, edit) -> str:
    """``text`` with ``edit`` applied to each stretch between placeholders (placeholders kept)."""
    out, last = [], 0
    for m in PATTERN.finditer(text):
        out += [edit(text[last : m.start()]), m.group(0)]
        last = m.end()
    out.append(edit(text[last:]))
    return "".join(out)


def is_name(word: str, common: frozenset[str] | None) -> bool:
    """Whether a description word becomes an ``_ID:i_``: code-like, or (given ``common``) not among them."""
    return is_code_like(word) or (common is not None and word not in common)


def common_words(descriptions: Iterable[str], min_count: int) -> frozenset[str]:
    """The words (identifier-shaped) that at least ``min_count`` of ``descriptions`` contain.

    With ``tokenize.rare_words``, every other word of a description is treated as a name: on Django
    the names a line's code needs but the model misspells (``toks``, ``hextet``, ``endpos``) are
    plain lowercase words that no rule about underscores or capitals catches, and they are rare.
    """
    counts = Counter(w for text in descriptions for w in set(_IDENTIFIER.findall(text)))
    return frozenset(w for w, n in counts.items() if n >= min_count)


def _mask_names(text: str, literals: list[str], names: dict[str, int], add: bool,
                common: frozenset[str] | None = None) -> str:
    """Replace the names of ``text`` that are in ``names`` by ``_ID:i_`` (i = ``names[word]``).

    With ``add`` (the description side), each new name (:func:`is_name`) gets the next index of
    ``literals``.
    """
    def one(m: re.Match) -> str:
        word = m.group(0)
        if word not in names:
            if not (add and is_name(word, common)):
                return word
            names[word] = len(literals)
            literals.append(word)
        return NAME_PLACEHOLDER.format(names[word])

    return _outside_placeholders(text, lambda part: _IDENTIFIER.sub(one, part))


@dataclass(frozen=True)
class Masked:
    text: str  # the description with placeholders
    literals: list[str]  # literals[i] is what placeholder i (_STR:i_ or _ID:i_) stands for
    names: dict[str, int] = dataclasses.field(default_factory=dict)  # name -> its index in literals


def mask_description(nl: str, names: bool = False, common: frozenset[str] | None = None) -> Masked:
    """Replace the description's quoted literals (and, with ``names``, its names) by placeholders.

    A name is a code-like word, or with ``common`` given, also any word not in ``common``.
    """
    literals: list[str] = []
    if PATTERN.search(nl):
        return Masked(nl, literals)
    text = _replace(nl, description_spans(nl), literals, add=True)
    found: dict[str, int] = {}
    if names:
        text = _mask_names(text, literals, found, add=True, common=common)
    return Masked(text, literals, found)


def mask_code(code: str, literals: list[str], names: dict[str, int] | None = None) -> str:
    """Replace the code's string literals whose contents are among ``literals``, then its
    occurrences of ``names``, by their placeholders."""
    if not literals or PATTERN.search(code):
        return code
    name_indices = set((names or {}).values())
    strings = [None if i in name_indices else lit for i, lit in enumerate(literals)]  # same indices, strings only
    code = _replace(code, code_spans(code), strings, add=False)
    return _mask_names(code, literals, dict(names), add=False) if names else code


def mask_pair(nl: str, code: str, names: bool = False,
              common: frozenset[str] | None = None) -> tuple[str, str, list[str]]:
    """(masked description, masked code, literals) of a training pair; ``restore`` inverts both."""
    if PATTERN.search(code):
        return nl, code, []
    m = mask_description(nl, names, common)
    return m.text, mask_code(code, m.literals, m.names), m.literals


def restore(text: str, literals: list[str]) -> str:
    """Put the literals back: every ``_STR:i_`` / ``_ID:i_`` with ``i < len(literals)`` becomes ``literals[i]``."""
    if not literals:
        return text

    def one(m: re.Match) -> str:
        i = int(m.group(1))
        return literals[i] if i < len(literals) else m.group(0)

    return PATTERN.sub(one, text)


def vocabulary_texts(n: int) -> list[str]:
    """Texts holding placeholders 0..n-1 between quotes as code and descriptions hold them.

    A vocabulary built for masked texts keeps their tokens (``Tokenizer.build``), so even a
    placeholder index rare in training is a few whole tokens, not bytes.
    """
    strings = [f"x = '{p}' , \"{p}\" , f('{p}', \"{p}\")" for p in map(placeholder, range(n))]
    names = [f"{p} = {p} ( {p} . {p} , {p}, ({p}) [{p}]" for p in map(NAME_PLACEHOLDER.format, range(n))]
    return strings + names


def coverage(nl: str, code: str) -> tuple[int, int]:
    """(string literals in ``code``, how many of them a placeholder covers) for one pair."""
    spans = code_spans(code)
    literals = [] if PATTERN.search(code) else mask_description(nl).literals
    return len(spans), sum(code[a:b] in literals for a, b in spans)


# "raw string '...'" / "raw literal string '...'" -> r; "bytes string '...'" -> b (ends where the quote opens)
_DESCRIBED_PREFIX = ((re.compile(r"\braw\s+(?:\w+\s+)?string\s*$", re.IGNORECASE), "r"),
                     (re.compile(r"\bbytes\s+string\s*$", re.IGNORECASE), "b"))
# The prefix and opening quote that end just before a literal's contents.
_OPENING_BEFORE = re.compile(r"([A-Za-z]*)('''|\"\"\"|'|\")$")


def described_prefixes(nl: str) -> dict[str, str]:
    """Contents of each quoted literal the description calls a raw or bytes string -> ``r`` or ``b``."""
    found = {}
    for start, end in description_spans(nl):
        before = nl[: start - 1]  # up to the opening quote
        for pattern, prefix in _DESCRIBED_PREFIX:
            if pattern.search(before):
                found.setdefault(nl[start:end], prefix)
    return found


def add_described_prefixes(nl: str, code: str) -> str:
    """``code`` with the prefix its description names put on each such literal that has none.

    ``__D is a raw string '(?P<day>\\d{2})'.`` -> ``__D = '(?P<day>\\d{2})'`` becomes
    ``__D = r'(?P<day>\\d{2})'``. Only literals whose contents equal the described one change; a
    literal with any prefix already keeps it.
    """
    wanted = described_prefixes(nl)
    if not wanted:
        return code
    out, last = [], 0
    for start, end in code_spans(code):
        opening = _OPENING_BEFORE.search(code[:start])
        prefix = wanted.get(code[start:end])
        if prefix and opening is not None and not opening.group(1):
            out += [code[last : opening.start(2)], prefix]
            last = opening.start(2)
    out.append(code[last:])
    return "".join(out)
