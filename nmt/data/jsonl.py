"""The ``{"nl", "code"}`` pair format every source ends in, and the ``jsonl`` source (the user's own files).

Reading a file skips its bad lines (not UTF-8, not a JSON object, ``nl``/``code`` missing, not
strings, empty or holding lone surrogates, or longer than :data:`MAX_LINE_BYTES`) and counts them
in a :class:`LineReport`: one stray line should not sink a 100,000-line file, but
:func:`nmt.stages.download.prepare_data` stops when they are more than ``data.max_bad_fraction``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from nmt.config import JsonlConfig
from nmt.errors import DataError
from nmt.io import project_path

SPLITS = ("train", "dev", "test")

# No description or snippet this model can learn from is 100 kB long (model.max_len tokens are a few
# kB); a longer line is a stray blob (minified file, base64 data) and counts as bad.
MAX_LINE_BYTES = 100_000


class Pair(NamedTuple):
    """One example: a natural-language description and the code it describes."""

    nl: str
    code: str


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
            self.first_bad = f"{self.path}:{lineno}: {problem.reason}"

    def summary(self) -> str:
        """``2 invalid_json, 1 code_empty``: the kinds, most frequent first."""
        return ", ".join(f"{n} {kind}" for kind, n in self.bad.most_common())

    def to_stats(self) -> dict[str, Any]:
        return {"file": self.path, "lines": self.lines, "bad": self.n_bad,
                "kinds": dict(sorted(self.bad.items())), "first_bad": self.first_bad}


class BadLine(Exception):
    """Why one line is not a usable pair: ``kind`` for the counts, ``reason`` for the message."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class FileRead(NamedTuple):
    pairs: list[Pair]
    report: LineReport


@dataclass(frozen=True)
class SourceData:
    """What a source yields: the three splits, plus facts about them for ``stats.json``.

    ``dev`` is the selection split (best checkpoint, early stopping, reranker weights, thresholds)
    and ``test`` the reported one; ``origins`` says where each came from.
    """

    splits: dict[str, list[Pair]]
    note: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, LineReport] = field(default_factory=dict)  # per split, for sources read from files
    origins: dict[str, str] = field(default_factory=dict)  # split -> where its pairs came from, for stats.json

    @classmethod
    def from_files(cls, reads: dict[str, FileRead]) -> SourceData:
        return cls({s: r.pairs for s, r in reads.items()}, reports={s: r.report for s, r in reads.items()})

    @classmethod
    def select_from_train(
        cls, train: FileRead | list[Pair], dev: FileRead | list[Pair], size: int, reason: str
    ) -> SourceData:
        """A source without a usable test set: its dev pairs become the test split, and the last
        ``size`` train pairs the selection split, so nothing is chosen on the reported pairs.

        The tail rather than a random sample: benchmark files are ordered by source file, so the tail
        holds whole files the model never trains on, as the real dev and test splits do.
        """
        train_pairs = train.pairs if isinstance(train, FileRead) else list(train)
        dev_pairs = dev.pairs if isinstance(dev, FileRead) else list(dev)
        if len(train_pairs) <= size:
            raise DataError(f"{reason}, so the selection split is carved from the end of train, but train has "
                            f"{len(train_pairs)} pairs and data.select_size is {size}; lower data.select_size")
        cut = len(train_pairs) - size
        reports = {}
        if isinstance(train, FileRead) and isinstance(dev, FileRead):
            reports = {"train": train.report, "dev": train.report, "test": dev.report}
        return cls(
            {"train": train_pairs[:cut], "dev": train_pairs[cut:], "test": dev_pairs},
            note=f"{reason}: the last {size} train pairs are the selection split (dev) and the dev pairs "
                 "are the test split",
            reports=reports,
            origins={"train": f"train pairs 1-{cut}", "dev": f"train pairs {cut + 1}-{len(train_pairs)}",
                     "test": "dev pairs"},
        )


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
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        report.lines += 1
        try:
            pairs.append(parse_pair(raw))
        except BadLine as problem:
            report.add_bad(lineno, problem)
    if not report.lines:
        raise DataError(f"{name}: no pairs (the file is empty); each line needs a JSON object with 'nl' and 'code'")
    return FileRead(pairs, report)


def parse_pair(raw: bytes) -> Pair:
    """The pair on one line; raise :class:`BadLine` saying why there is none."""
    if len(raw) > MAX_LINE_BYTES:
        raise BadLine("too_long", f"line of {len(raw):,} bytes, over the {MAX_LINE_BYTES:,}-byte cap")
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
    return Pair(_text(row, "nl"), _text(row, "code"))


def _text(row: dict, key: str) -> str:
    if key not in row:
        raise BadLine(f"{key}_missing", f"missing key {key!r} (each line needs ['nl', 'code'])")
    text = row[key]
    if not isinstance(text, str):
        raise BadLine(f"{key}_not_string", f"{key!r} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise BadLine(f"{key}_empty", f"{key!r} is empty")
    # A JSON escape like "\ud800" decodes to a lone surrogate, which cannot be written back as UTF-8.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadLine(f"{key}_lone_surrogate", f"{key!r} holds a lone surrogate escape "
                                               f"({text[e.start:e.end]!r}), which is not valid Unicode text") from e
    return text


def load(cfg: JsonlConfig) -> SourceData:
    """Read ``data.jsonl.train/dev/test`` (relative paths: from the repository root, see project_path)."""
    reads = {}
    for split in SPLITS:
        name = getattr(cfg, split)
        if not name or not project_path(name).is_file():
            raise DataError(f"data.jsonl.{split}: file not found: {name!r}")
        reads[split] = read_pairs(project_path(name))
    return SourceData.from_files(reads)
