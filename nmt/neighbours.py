"""Retrieval-augmented sources (``tokenize.neighbour_code``): a description, then a similar line's code.

Django's lines repeat with new names: "call the method handler.endElement with an argument string
'rss'." has dozens of training pairs shaped like it. With ``tokenize.neighbour_code`` the encoder
reads, after the description, the code of the training pair whose description is nearest (TF-IDF
cosine, :class:`nmt.retrieval.RetrievalBaseline`), so the decoder can take its structure and the
copy pointer its names and operators::

    source = description ids, EOS, neighbour code ids        (then EOS, as every source)

EOS is the separator: it never occurs inside a description, so the description part is everything
before the first EOS (:func:`description_ids`: what the reverse model reads and writes).

The neighbour's code is masked with the *description's* literals (:func:`nmt.placeholders.mask_code`):
a name or string the description quotes becomes the same ``_ID:i_`` / ``_STR:i_`` in the neighbour's
code as in the description, so a placeholder means one thing across the source; the neighbour's
other names stay text. A training pair gets its nearest *other* training pair (the pair itself
would be its own answer), an identical description elsewhere in train included, as a test
description with a verbatim training twin gets that twin.
"""

from __future__ import annotations

from collections.abc import Sequence

from nmt.placeholders import Masked, mask_code
from nmt.retrieval import RetrievalBaseline


def neighbour_index(pairs: Sequence[tuple[str, str]]) -> RetrievalBaseline:
    """The raw training pairs (description, code) as the index sources are completed from."""
    return RetrievalBaseline().fit([nl for nl, _ in pairs], [code for _, code in pairs])


def neighbour_codes(index: RetrievalBaseline, descriptions: Sequence[str], masked: Sequence[Masked | None],
                    exclude: Sequence[int] | None = None) -> list[str]:
    """For each raw description, its nearest training pair's code masked with the description's
    literals (``masked[i]``, None without placeholders); ``exclude[i]``: a training pair it may not
    get (-1: none)."""
    return [code_for(index.code(i), m) for (i, _), m in zip(index.neighbours(descriptions, exclude), masked)]


def code_for(code: str, masked: Masked | None) -> str:
    """A neighbour's ``code`` with the literals of the description ``masked`` as placeholders."""
    return code if masked is None else mask_code(code, masked.literals, masked.names)


def joined(description: Sequence[int], neighbour: Sequence[int], eos_id: int) -> list[int]:
    """The source ids: the description's, EOS, the neighbour code's."""
    return [*description, eos_id, *neighbour]


def description_ids(source: Sequence[int], eos_id: int) -> list[int]:
    """The description part of a joined source: the ids before its first EOS (all of them if none)."""
    source = list(source)
    return source[: source.index(eos_id)] if eos_id in source else source
