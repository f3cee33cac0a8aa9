"""The splits a training run learned from, selected on and is reported on, as MLflow dataset inputs.

Each split file the train stage reads (``data/tokenized/{train,dev,test}.safetensors``) becomes one
dataset input of the run, so the runs table's Dataset column names what a model saw:

- ``name``: ``<data.source>-<split>`` (``django-train``, ``jsonl-dev``...);
- ``digest``: the file's MD5, the hash DVC names it by in its cache, so a digest in MLflow finds the
  very file with ``dvc``; two runs with the same digest read the same bytes;
- ``source``: the file's path; the input's tag ``path`` says it relative to the repository;
- ``context``: ``training``, ``validation`` (dev: the selection split, where checkpoints and the
  champion are chosen) or ``test`` (the reported split, scored by the evaluate stage);
- schema and profile: one row per pair, its source and target token counts (read from the split's
  offsets, never its ids: a split is memory-mapped and may be larger than memory).

Only metadata is logged; the data stay where DVC keeps them.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

from nmt.data.source import SPLITS
from nmt.data.tokenized import TokenizedSplit

# The MLflow input context of each split (its role: data/raw/stats.json's "roles").
CONTEXTS = {"train": "training", "dev": "validation", "test": "test"}
assert set(CONTEXTS) == set(SPLITS)


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # DVC's file hash, not a security measure
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def split_inputs(data_dir: Path, data_source: str) -> list[tuple[Any, str, dict[str, str]]]:
    """(dataset, context, tags) of each split file under ``data_dir`` that exists, for :meth:`Run.log_inputs`."""
    import mlflow.data
    import pandas as pd

    inputs = []
    for split in SPLITS:
        path = data_dir / f"{split}.safetensors"
        if not path.is_file():
            continue
        pairs = TokenizedSplit.load(path)
        frame = pd.DataFrame({"source_tokens": pairs.src_lengths.numpy(), "target_tokens": pairs.tgt_lengths.numpy()})
        with warnings.catch_warnings():
            # MLflow warns that a local path matches its local-artifact source twice, and that integer
            # columns cannot hold missing values: neither applies to a file path and token counts.
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=str(path.resolve()), name=f"{data_source}-{split}",
                                              digest=file_md5(path))
            _ = dataset.schema  # inferred lazily (a cached property) when logged: infer it under this filter
        inputs.append((dataset, CONTEXTS[split], {"path": path.as_posix(), "split": split}))
    return inputs
