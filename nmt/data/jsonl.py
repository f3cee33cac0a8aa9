"""The ``{"nl", "code"}`` pair format every source ends in, and the ``jsonl`` source (the user's own files)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from nmt.config import JsonlConfig
from nmt.errors import DataError
from nmt.io import project_path, read_jsonl

SPLITS = ("train", "dev", "test")


class Pair(NamedTuple):
    """One example: a natural-language description and the code it describes."""

    nl: str
    code: str


@dataclass(frozen=True)
class SourceData:
    """What a source yields: the three splits, plus facts about them for ``stats.json``."""

    splits: dict[str, list[Pair]]
    test_is_dev: bool = False
    note: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def dev_as_test(cls, train: list[Pair], dev: list[Pair], reason: str) -> SourceData:
        """A source without a usable test set: dev doubles as test, and stats.json says so."""
        note = f"{reason}: the test split is a copy of dev, so test scores are dev scores"
        return cls({"train": train, "dev": dev, "test": dev}, test_is_dev=True, note=note)


def read_pairs(path: Path) -> list[Pair]:
    """Read a non-empty JSON-lines file of ``{"nl": str, "code": str}`` objects; extra keys are dropped."""
    rows = read_jsonl(path)
    if not rows:
        raise DataError(f"{path}: no pairs (the file is empty)")
    pairs = [Pair(row["nl"], row["code"]) for row in rows]
    for i, pair in enumerate(pairs, start=1):
        _check_encodable(pair, path, i)
    return pairs


def _check_encodable(pair: Pair, path: Path, index: int) -> None:
    # A JSON escape like "\ud800" decodes to a lone surrogate, which cannot be written back as
    # UTF-8: catch it here, where the file is known, rather than when the splits are written.
    for key, text in pair._asdict().items():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise DataError(
                f"{path}: pair {index} (counting non-blank lines): {key!r} holds a lone surrogate escape "
                f"({text[e.start:e.end]!r}), which is not valid Unicode text"
            ) from e


def load(cfg: JsonlConfig) -> SourceData:
    """Read ``data.jsonl.train/dev/test`` (relative paths: from the repository root, see project_path)."""
    splits = {}
    for split in SPLITS:
        name = getattr(cfg, split)
        if not name or not project_path(name).is_file():
            raise DataError(f"data.jsonl.{split}: file not found: {name!r}")
        splits[split] = read_pairs(project_path(name))
    return SourceData(splits)
