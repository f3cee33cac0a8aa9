"""The ``jsonl`` source: the user's own ``{"nl", "code"}`` files, read by :func:`nmt.data.pairs.read_pairs`."""

from __future__ import annotations

from nmt.config import JsonlConfig
from nmt.data.pairs import read_pairs
from nmt.data.source import SPLITS, SourceData
from nmt.errors import DataError
from nmt.io import project_path


def load(cfg: JsonlConfig) -> SourceData:
    """Read ``data.jsonl.train/dev/test`` (relative paths: from the repository root, see project_path)."""
    reads = {}
    for split in SPLITS:
        name = getattr(cfg, split)
        if not name or not project_path(name).is_file():
            raise DataError(f"data.jsonl.{split}: file not found: {name!r}")
        reads[split] = read_pairs(project_path(name))
    return SourceData.from_files(reads)
