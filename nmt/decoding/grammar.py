"""Grammar-constrained beam search for one-line Python: which hypotheses may grow, which may end.

A quarter of a Django model's 10-best hypotheses do not parse (24 % on the selection split,
``benchmarks/error_analysis.py``). Reranking already puts valid ones first, but every invalid
hypothesis held a beam slot that a valid one could have had. :class:`PythonLineConstraint` gives
those slots back during the search (:func:`nmt.decoding.search.beam_search`):

- **lines that parse come first**: a hypothesis that ends is checked (its literals put back,
  :func:`nmt.metrics.is_valid_python`: alone or as one line of a block); one that does not parse
  is kept behind every one that does, and is the first to go when more than K have ended;
- **a hypothesis grows only while it can still become valid**: a token may not close a bracket
  that is not open, or close it with the wrong kind (``f(x]``) — no continuation can repair that
  (:func:`viable`).

Both are exact for what they check: a prefix :func:`viable` refuses has no valid completion, so
the constraint never removes a line that could have parsed. The search stops when it would without
the constraint (its bound looks at every ended line), so it costs the same number of steps.
"""

from __future__ import annotations

from collections.abc import Sequence

from nmt.metrics import is_valid_python
from nmt.placeholders import restore
from nmt.tokenizer import Tokenizer

OPENING = {")": "(", "]": "[", "}": "{"}
# A token whose text holds none of these cannot change whether a prefix is viable.
SIGNIFICANT = frozenset("()[]{}'\"\\#")


def viable(text: str) -> bool:
    """Whether ``text`` can still be the start of a valid line: no bracket closed that is not open,
    none closed by the wrong kind. Brackets inside string literals (single, double or triple
    quoted, backslash escapes honoured) and after a ``#`` comment do not count; a string left open
    at the end is fine (it may still close)."""
    stack: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"":
            quote = text[i : i + 3] if text[i : i + 3] in ("'''", '"""') else c
            i += len(quote)
            while i < n and not text.startswith(quote, i):
                i += 2 if text[i] == "\\" else 1
            i += len(quote)
            continue
        if c == "#":
            return True
        if c in "([{":
            stack.append(c)
        elif c in OPENING:
            if not stack or stack.pop() != OPENING[c]:
                return False
        i += 1
    return True


def significant_tokens(tokenizer: Tokenizer) -> list[bool]:
    """Per token id, whether its text holds a character of :data:`SIGNIFICANT`."""
    return [bool(SIGNIFICANT & set(tokenizer.token_bytes(i).decode("utf-8", "replace")))
            for i in range(tokenizer.vocab_size)]


class PythonLineConstraint:
    """The rules of the module docstring, for one batch of sources: ``literals[s]`` puts source
    ``s``'s literals back into its hypotheses (:func:`nmt.placeholders.restore`)."""

    def __init__(self, tokenizer: Tokenizer, literals: Sequence[list[str]], significant: list[bool] | None = None):
        self.tokenizer, self.literals = tokenizer, literals
        # per token id: can it change viability? One vocabulary pass; a translator passes its own
        # table (significant_tokens) so each batch does not redo it.
        self._significant = significant_tokens(tokenizer) if significant is None else significant

    def checks(self, token: int) -> bool:
        """Whether appending ``token`` can make a viable prefix unviable (else it needs no check)."""
        return self._significant[token]

    def allows(self, source: int, tokens: list[int], final: bool) -> bool:
        """Whether hypothesis ``tokens`` of ``source`` may go on (``final``: may end here)."""
        text = restore(self.tokenizer.decode(tokens), self.literals[source])
        return is_valid_python(text) if final else viable(text)
