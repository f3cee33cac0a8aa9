"""The ``django`` source: pseudo-code -> Python lines of Django (Oda et al., ASE 2015).

Three origins (``data.django.origin``):

- ``shipped`` (the default): the standard train and dev splits, compressed inside this package
  (``corpora/django/``, with their licence and provenance), checked against their sha256. No
  network. There is no test file, so the selection split is carved from the end of train and the
  dev pairs are the test split: nothing is chosen on the pairs the scores report.
- ``download``: the authors' repository at a pinned commit, checked against known sha256 digests,
  then split in file order into the standard 16,000 train / 1,000 dev / 1,805 test pairs; dev
  selects and test reports.
- ``local``: ``data.django.local_dir`` holds ready ``train.jsonl``/``dev.jsonl`` and optionally
  ``test.jsonl``; without ``test.jsonl`` it is split like the shipped pairs.
"""

from __future__ import annotations

import hashlib
import http.client
import lzma
import urllib.error
import urllib.request
from pathlib import Path

from nmt.config import DjangoConfig
from nmt.data.pairs import FileRead, Pair, parse_lines, read_pairs
from nmt.data.source import SourceData
from nmt.errors import DataError
from nmt.io import project_path

# Read at call time (not bound as defaults) so tests can point them at a local server.
BASE_URL = "https://raw.githubusercontent.com/odashi/ase15-django-dataset/c37fa281ced0de16aa7868415522905f8380686e/django"
SHA256 = {
    "all.anno": "86b38c7bf6ffe2882d4603f799e92f48ddaab8a7d9b2af41bba923e59b41800a",
    "all.code": "d20b345fd3cdcf8d54b9cd123b3de4078f8f9a3c6bfc9fed9cd215bc857f99db",
}
SPLIT_SIZES = {"train": 16_000, "dev": 1_000, "test": 1_805}

SHIPPED_DIR = Path(__file__).parent / "corpora" / "django"
# sha256 of the decompressed JSON lines (corpora/django/PROVENANCE.md gives the files' own too).
SHIPPED_SHA256 = {
    "train.jsonl.xz": "aa1bf7b94f8706a84135b94e73e6b4d76bffa07a2a2d832e8df01a0af4c52542",
    "dev.jsonl.xz": "2ab553bcb457359b4d91856c4bd7d033b5308d3b8b1e377621c654752274a7f2",
}

LOCAL_DIR_HINT = ("set data.django.origin to shipped (the pairs in this repository), or to local with "
                  "data.django.local_dir naming a directory with train.jsonl, dev.jsonl and optionally test.jsonl")


def load(cfg: DjangoConfig, select_size: int) -> SourceData:
    if cfg.origin == "download":
        return load_download(cfg.timeout_s)
    if cfg.origin == "local":
        return load_local_dir(project_path(cfg.local_dir), select_size)
    return load_shipped(select_size)


def load_shipped(select_size: int) -> SourceData:
    """The standard train and dev pairs shipped in this package: select on train's tail, test on dev."""
    train, dev = (read_shipped(SHIPPED_DIR / name) for name in SHIPPED_SHA256)
    return SourceData.select_from_train(train, dev, select_size, "the shipped Django pairs have no test split")


def read_shipped(path: Path) -> FileRead:
    """The pairs of one shipped ``.jsonl.xz`` file, after checking its digest."""
    try:
        data = lzma.decompress(path.read_bytes())
    except (OSError, lzma.LZMAError) as e:
        raise DataError(f"{path}: cannot read the shipped Django pairs ({e}); restore the file with "
                        f"`git checkout -- {path.name}` in {path.parent}, or {LOCAL_DIR_HINT}") from e
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHIPPED_SHA256[path.name]:
        raise DataError(f"{path}: sha256 of its contents is {digest}, expected {SHIPPED_SHA256[path.name]} "
                        f"(the shipped file was changed); restore it with git, or {LOCAL_DIR_HINT}")
    return parse_lines(data.split(b"\n"), str(path))


def load_local_dir(directory: Path, select_size: int) -> SourceData:
    """Ready splits from ``directory``; without ``test.jsonl``, dev is the test split and train's tail selects."""
    if not directory.is_dir():
        raise DataError(f"{directory}: directory not found (data.django.local_dir)")
    train = read_pairs(directory / "train.jsonl")
    dev = read_pairs(directory / "dev.jsonl")
    test_path = directory / "test.jsonl"
    if test_path.is_file():
        return SourceData.from_files({"train": train, "dev": dev, "test": read_pairs(test_path)})
    return SourceData.select_from_train(train, dev, select_size, f"{test_path} does not exist")


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
