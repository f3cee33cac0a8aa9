"""What every source yields: the three splits of pairs, and the facts ``stats.json`` records about them.

Each source module (:mod:`nmt.data.stdlib`, :mod:`nmt.data.django`, :mod:`nmt.data.concode`,
:mod:`nmt.data.jsonl`) has a ``load`` that returns a :class:`SourceData`; the download stage
(:mod:`nmt.stages.download`) filters and writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmt.data.pairs import FileRead, LineReport, Pair
from nmt.errors import DataError
from nmt.io import read_json

SPLITS = ("train", "dev", "test")
# The language of each source's code: Python scores also count the same syntax tree and valid syntax.
LANGUAGES = {"stdlib": "python", "django": "python", "concode": "java"}


def language_of(raw_dir: Path) -> str:
    """The code's language, from the download stage's ``stats.json`` in ``raw_dir``: Python for the
    stdlib and Django sources, Java for CONCODE; unknown for the user's own files, or without the file
    (a model trained on tokenized data alone)."""
    stats = raw_dir / "stats.json"
    return LANGUAGES.get(read_json(stats).get("source"), "unknown") if stats.is_file() else "unknown"


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
