"""The ``concode`` source: CodeXGLUE text-to-code (CONCODE, Java; Iyer et al. 2018).

From the Hugging Face hub (``google/code_x_glue_tc_text_to_code``: 100,000 train, 2,000
validation, 2,000 test), or from ``data.concode.local_dir`` holding CodeXGLUE's own
``train.json``/``dev.json``/``test.json`` (JSON lines with ``nl`` and ``code``).

CodeXGLUE has at times published its test set without the reference code. A test split in which
no line has non-empty ``code`` is therefore not an error: dev becomes the test split, the end of
train the selection split, and ``stats.json`` says so. In a test split where only some lines lack
code those lines are bad lines: skipped and counted, and the stage fails naming the first one when
they are more than ``data.max_bad_fraction``.

The hub is checked for reachability first (and ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` are
honoured), so an offline machine fails in seconds with a pointer to ``data.concode.local_dir``
instead of waiting on the ``datasets`` library's retries.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
import urllib.request
from pathlib import Path

from nmt.config import ConcodeConfig
from nmt.data.pairs import Pair, read_pairs
from nmt.data.source import SourceData
from nmt.errors import DataError
from nmt.io import project_path

HUB_DATASET = "google/code_x_glue_tc_text_to_code"
HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's spelling of a true environment variable

# The kinds of bad line that mean "this line has no reference code" (nmt.data.pairs.parse_pair).
NO_CODE = frozenset({"code_missing", "code_not_string", "code_empty"})

LOCAL_DIR_HINT = "set data.concode.local_dir to a directory with CodeXGLUE's train.json, dev.json and test.json"


def load(cfg: ConcodeConfig, select_size: int) -> SourceData:
    if cfg.local_dir:
        return load_local_dir(project_path(cfg.local_dir), select_size)
    return load_hub(cfg.hub_timeout_s, select_size)


def load_local_dir(directory: Path, select_size: int) -> SourceData:
    if not directory.is_dir():
        raise DataError(f"{directory}: directory not found (data.concode.local_dir)")
    train = read_pairs(directory / "train.json")
    dev = read_pairs(directory / "dev.json")
    test_path = directory / "test.json"
    test = read_pairs(test_path)
    if not test.pairs and all(kind in NO_CODE for kind in test.report.bad):
        return SourceData.select_from_train(train, dev, select_size, f"{test_path} has no reference code")
    # Some lines have code: the others are bad lines, counted against data.max_bad_fraction.
    return SourceData.from_files({"train": train, "dev": dev, "test": test})


def load_hub(timeout_s: float, select_size: int) -> SourceData:
    """Load the dataset with the ``datasets`` library, after checking that the hub can be reached."""
    check_hub_reachable(timeout_s)
    import datasets  # slow to import, and only this path needs it

    try:
        loaded = datasets.load_dataset(HUB_DATASET)
    except Exception as e:  # the library raises many types (HTTP, cache, format); all mean "no data"
        raise DataError(f"loading {HUB_DATASET} from the hub failed ({e}); {LOCAL_DIR_HINT}") from e
    splits = {
        ours: [Pair(nl, code) for nl, code in zip(loaded[theirs]["nl"], loaded[theirs]["code"])]
        for ours, theirs in HUB_SPLITS.items()
    }
    if not any(_has_code(pair.code) for pair in splits["test"]):
        reason = f"the hub's {HUB_SPLITS['test']!r} split has no reference code"
        return SourceData.select_from_train(splits["train"], splits["dev"], select_size, reason)
    return SourceData(splits)


def check_hub_reachable(timeout_s: float) -> None:
    """Raise DataError unless offline mode is off and a TCP connection to the hub (or its proxy) opens."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").upper() in _TRUE:
            raise DataError(f"{var} is set, so the hub is not used; {LOCAL_DIR_HINT}")
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT)  # mirrors, as huggingface_hub honours
    host, port = _host_port(endpoint)
    proxy = urllib.request.getproxies().get(urllib.parse.urlsplit(endpoint).scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        host, port = _host_port(proxy)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        raise DataError(
            f"cannot reach the Hugging Face hub at {host}:{port} within {timeout_s:g} s ({e}); {LOCAL_DIR_HINT}"
        ) from e


def _host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _has_code(code: object) -> bool:
    return isinstance(code, str) and bool(code.strip())
