"""The ``django`` source: pseudo-code -> Python lines of Django (Oda et al., ASE 2015).

Downloaded from the authors' repository at a pinned commit and checked against known sha256
digests, then split in file order into the standard 16,000 train / 1,000 dev / 1,805 test pairs.
Offline, ``data.django.local_dir`` names a directory of ready ``train.jsonl``/``dev.jsonl`` and
optionally ``test.jsonl``; without ``test.jsonl`` the dev split doubles as the test split, and
``stats.json`` says so.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from pathlib import Path

from nmt.config import DjangoConfig
from nmt.data.jsonl import Pair, SourceData, read_pairs
from nmt.errors import DataError
from nmt.io import project_path

# Read at call time (not bound as defaults) so tests can point them at a local server.
BASE_URL = "https://raw.githubusercontent.com/odashi/ase15-django-dataset/c37fa281ced0de16aa7868415522905f8380686e/django"
SHA256 = {
    "all.anno": "86b38c7bf6ffe2882d4603f799e92f48ddaab8a7d9b2af41bba923e59b41800a",
    "all.code": "d20b345fd3cdcf8d54b9cd123b3de4078f8f9a3c6bfc9fed9cd215bc857f99db",
}
SPLIT_SIZES = {"train": 16_000, "dev": 1_000, "test": 1_805}

LOCAL_DIR_HINT = "set data.django.local_dir to a directory with train.jsonl, dev.jsonl and optionally test.jsonl"


def load(cfg: DjangoConfig) -> SourceData:
    if cfg.local_dir:
        return load_local_dir(project_path(cfg.local_dir))
    return load_download(cfg.timeout_s)


def load_local_dir(directory: Path) -> SourceData:
    """Ready splits from ``directory``; dev stands in for a missing ``test.jsonl``."""
    if not directory.is_dir():
        raise DataError(f"{directory}: directory not found (data.django.local_dir)")
    train = read_pairs(directory / "train.jsonl")
    dev = read_pairs(directory / "dev.jsonl")
    test_path = directory / "test.jsonl"
    if test_path.is_file():
        return SourceData.from_files({"train": train, "dev": dev, "test": read_pairs(test_path)})
    return SourceData.dev_as_test(train, dev, f"{test_path} does not exist")


def load_download(timeout_s: float) -> SourceData:
    """Download, verify and split the standard dataset."""
    anno = _lines(fetch("all.anno", timeout_s), "all.anno")
    code = _lines(fetch("all.code", timeout_s), "all.code")
    expected = sum(SPLIT_SIZES.values())
    if len(anno) != expected or len(code) != expected:
        raise DataError(
            f"{BASE_URL}: all.anno has {len(anno)} lines and all.code {len(code)}, expected {expected} each"
        )
    pairs = [Pair(nl, c) for nl, c in zip(anno, code)]
    splits, start = {}, 0
    for split, size in SPLIT_SIZES.items():  # file order: train, dev, test
        splits[split] = pairs[start : start + size]
        start += size
    return SourceData(splits)


def fetch(name: str, timeout_s: float) -> bytes:
    """The bytes of ``BASE_URL/name``, checked against ``SHA256[name]``."""
    url = f"{BASE_URL}/{name}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            data = response.read()
    except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError and timeouts are OSErrors
        reason = getattr(e, "reason", e)
        raise DataError(f"could not download {url} ({reason}); without internet access, {LOCAL_DIR_HINT}") from e
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[name]:
        raise DataError(
            f"{url}: sha256 is {digest}, expected {SHA256[name]} (corrupt download or changed file); "
            f"retry, or {LOCAL_DIR_HINT}"
        )
    return data


def _lines(data: bytes, name: str) -> list[str]:
    """Stripped lines of a verified file (split at \\n only: code lines may hold other line breaks)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{BASE_URL}/{name}: not valid UTF-8 ({e.reason} at byte {e.start})") from e
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]
