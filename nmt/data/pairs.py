"""The ``{"nl", "code"}`` pair and the one JSON-lines reader.

Every line goes through the same checks, and a line that fails one is a :class:`BadLine` with a
``kind`` (for counts) and a ``reason`` (for messages): not UTF-8, invalid JSON, not an object, a
required key missing or not a string (:func:`parse_row`) and, for a training pair, also empty,
holding lone surrogates, or longer than :data:`MAX_LINE_BYTES` (:func:`parse_pair`). Blank lines
(only ASCII whitespace) are skipped and never numbered out: line numbers count every line.

Two policies use the checks:

- *count and skip* (:func:`read_pairs`, :func:`parse_lines`): a source's files, read by the
  download stage. Bad lines are counted in a :class:`LineReport`: one stray line should not sink a
  100,000-line file, but :func:`nmt.stages.download.prepare_data` stops when they are more than
  ``data.max_bad_fraction``.
- *stop at the first* (:func:`read_jsonl`, :func:`iter_jsonl`, :func:`parse_jsonl`,
  :func:`read_pair_file`): the files the download stage wrote (already clean), the CLI's ``--data``
  and ``--jsonl`` inputs, an export's retrieval pairs. A bad line is a
  :class:`DataError` as ``source:line: reason``. These keep the whole object (extra keys too) and
  check only the ``required`` keys: an empty description is still something to translate.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from nmt.errors import DataError

PAIR_KEYS = ("nl", "code")

# No description or snippet this model can learn from is 100 kB long (model.max_len tokens are a few
# kB); a longer line is a stray blob (minified file, base64 data) and counts as bad.
MAX_LINE_BYTES = 100_000


class Pair(NamedTuple):
    """One example: a natural-language description and the code it describes."""

    nl: str
    code: str


class BadLine(Exception):
    """Why one line is not a usable pair: ``kind`` for the counts, ``reason`` for the message."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason

    def at(self, source: str, lineno: int) -> str:
        """``source:line: reason``, how every message names a bad line."""
        return f"{source}:{lineno}: {self.reason}"


@dataclass
class LineReport:
    """The bad lines one file held: how many of each kind, and where the first one is."""

    path: str
    lines: int = 0  # non-blank lines read, good and bad
    bad: Counter[str] = field(default_factory=Counter)  # kind -> count
    first_bad: str = ""  # "path:line: reason" of the first bad line

    @property
    def n_bad(self) -> int:
        return sum(self.bad.values())

    def add_bad(self, lineno: int, problem: BadLine) -> None:
        self.bad[problem.kind] += 1
        if not self.first_bad:
            self.first_bad = problem.at(self.path, lineno)

    def summary(self) -> str:
        """``2 invalid_json, 1 code_empty``: the kinds, most frequent first."""
        return ", ".join(f"{n} {kind}" for kind, n in self.bad.most_common())

    def to_stats(self) -> dict[str, Any]:
        return {"file": self.path, "lines": self.lines, "bad": self.n_bad,
                "kinds": dict(sorted(self.bad.items())), "first_bad": self.first_bad}


class FileRead(NamedTuple):
    pairs: list[Pair]
    report: LineReport


# ---------------------------------------------------------------------------- one line
def parse_row(raw: bytes, required: tuple[str, ...] = PAIR_KEYS) -> dict:
    """The JSON object on one line, whose ``required`` keys hold strings; raise :class:`BadLine`."""
    row = _object(raw)
    for key in required:
        _string(row, key, required)
    return row


def parse_pair(raw: bytes) -> Pair:
    """The pair on one line; raise :class:`BadLine` saying why there is none."""
    if len(raw) > MAX_LINE_BYTES:
        raise BadLine("too_long", f"line of {len(raw):,} bytes, over the {MAX_LINE_BYTES:,}-byte cap")
    row = _object(raw)
    return Pair(_text(row, "nl"), _text(row, "code"))


def _object(raw: bytes) -> dict:
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BadLine("not_utf8", f"not valid UTF-8 ({e.reason})") from e
    except json.JSONDecodeError as e:
        raise BadLine("invalid_json", f"invalid JSON ({e.msg})") from e
    except RecursionError as e:  # [[[[... thousands deep
        raise BadLine("invalid_json", "invalid JSON (nested too deeply)") from e
    if not isinstance(row, dict):
        raise BadLine("not_an_object", f"expected a JSON object, got {type(row).__name__}")
    return row


def _string(row: dict, key: str, required: tuple[str, ...]) -> str:
    if key not in row:
        raise BadLine(f"{key}_missing", f"missing key {key!r} (each line needs {list(required)})")
    text = row[key]
    if not isinstance(text, str):
        raise BadLine(f"{key}_not_string", f"{key!r} must be a string, got {type(text).__name__}")
    return text


def _text(row: dict, key: str) -> str:
    """``row[key]`` as a training text: a non-empty string that is valid Unicode."""
    text = _string(row, key, PAIR_KEYS)
    if not text.strip():
        raise BadLine(f"{key}_empty", f"{key!r} is empty")
    # A JSON escape like "\ud800" decodes to a lone surrogate, which cannot be written back as UTF-8.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadLine(f"{key}_lone_surrogate", f"{key!r} holds a lone surrogate escape "
                                               f"({text[e.start:e.end]!r}), which is not valid Unicode text") from e
    return text


def _numbered(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, line) of every non-blank line."""
    for lineno, raw in enumerate(lines, start=1):
        if raw.strip():
            yield lineno, raw


# ---------------------------------------------------------------------------- count and skip
def read_pairs(path: Path) -> FileRead:
    """The good pairs of a JSON-lines file of ``{"nl": str, "code": str}`` objects (extra keys are
    dropped), and a report of the bad lines skipped. Blank lines are skipped; an empty file is an error."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        return parse_lines(f, str(path))


def parse_lines(lines: Iterable[bytes], name: str) -> FileRead:
    """:func:`read_pairs` on lines already read (``name`` for the messages)."""
    report = LineReport(name)
    pairs = []
    for lineno, raw in _numbered(lines):
        report.lines += 1
        try:
            pairs.append(parse_pair(raw))
        except BadLine as problem:
            report.add_bad(lineno, problem)
    if not report.lines:
        raise DataError(f"{name}: no pairs (the file is empty); each line needs a JSON object with 'nl' and 'code'")
    return FileRead(pairs, report)


# ---------------------------------------------------------------------------- stop at the first
def read_jsonl(path: str | os.PathLike, required: tuple[str, ...] = PAIR_KEYS) -> list[dict]:
    """Read a JSON-lines file of objects whose ``required`` keys hold strings.

    Blank lines are skipped. Any other problem raises :class:`DataError` naming file and line.
    """
    return list(iter_jsonl(path, required))


def iter_jsonl(path: str | os.PathLike, required: tuple[str, ...] = PAIR_KEYS) -> Iterator[dict]:
    """:func:`read_jsonl` one object at a time: memory stays flat however long the file is.

    A missing file raises at the call, not at the first ``next``.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")

    def rows() -> Iterator[dict]:
        with open(p, "rb") as f:
            for _, row in _rows(f, str(p), required):
                yield row

    return rows()


def read_pair_file(path: Path) -> list[tuple[str, str]]:
    """The (description, code) pairs of JSON lines ``path``, gzipped (an export's
    ``nmt.retrieval.PAIRS_FILE``) or not, every line checked: unlike :func:`read_pairs` (a source's
    files, bad lines counted and skipped), a bad line raises DataError naming the file and line."""
    if not path.is_file():
        raise DataError(f"{path}: no such file (the training pairs, JSON lines with 'nl' and 'code')")
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a gzip file ({e}); re-export the model") from e
    rows = [(row["nl"], row["code"]) for _, row in parse_jsonl(data.split(b"\n"), str(path), ("nl", "code"))]
    if not rows:
        raise DataError(f"{path}: no pairs; retrieval needs at least one training pair")
    return rows


def parse_jsonl(lines: Iterable[bytes], source: str, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of ``lines``, as :func:`read_jsonl` checks them.

    Raises :class:`DataError` as ``source:line: problem``.
    """
    return list(_rows(lines, source, required))


def _rows(lines: Iterable[bytes], source: str, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """:func:`parse_jsonl`, lazily."""
    for lineno, raw in _numbered(lines):
        try:
            row = parse_row(raw, required)
        except BadLine as problem:
            raise DataError(problem.at(source, lineno)) from problem
        yield lineno, row
