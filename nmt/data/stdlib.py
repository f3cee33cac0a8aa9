"""The ``stdlib`` source: (first docstring sentence, function source) pairs from Python's standard library.

Needs no network and no files beyond the running interpreter. Every documented function and
method (``def`` and ``async def``, nested ones included) whose body does more than hold its
docstring gives one pair:

* ``nl``: the first sentence of the docstring, whitespace normalised;
* ``code``: the function from its ``def`` line to its end, with the docstring statement removed and
  the block dedented to column 0. Decorators are left out, so every snippet starts with ``def`` or
  ``async def``; comments inside the function are kept.

Files are walked in sorted order, identical (nl, code) pairs are kept once, and a function's split
depends only on a hash of its qualified name (``module.Class.function``), so the same interpreter
always gives the same splits and a function keeps its split as the rest of the library changes.
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import platform
import re
import sysconfig
import tokenize
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from nmt.config import StdlibConfig
from nmt.data.pairs import Pair
from nmt.data.source import SPLITS, SourceData
from nmt.errors import DataError

# Directory names never walked into: tests (which document test cases, not library code), the IDE,
# demos, third-party packages and caches.
EXCLUDED_DIRS = frozenset(
    {"test", "tests", "idle_test", "idlelib", "turtledemo", "site-packages", "dist-packages", "__pycache__"}
)

# A sentence ends at . ! or ? followed by whitespace, unless the dot closes a common abbreviation.
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)(?<!\bvs)(?<!\bcf)[.!?](?=\s)")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")

Function = ast.FunctionDef | ast.AsyncFunctionDef


class FunctionPair(NamedTuple):
    """A pair together with the qualified name of the function it came from."""

    qualname: str
    nl: str
    code: str


@dataclass(frozen=True)
class Extraction:
    pairs: list[FunctionPair]
    files: int
    files_skipped: int
    duplicates_removed: int


def stdlib_root() -> Path:
    """The running interpreter's standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(root: Path) -> Iterator[Path]:
    """``.py`` files under ``root`` in sorted order, outside :data:`EXCLUDED_DIRS`."""
    for directory, dirnames, filenames in os.walk(root):
        # Pruning in place stops os.walk descending; sorting makes the walk order deterministic.
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield Path(directory, name)


def module_name(path: Path, root: Path) -> str:
    """``root/email/mime/text.py`` -> ``email.mime.text``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def extract_pairs(root: Path) -> Extraction:
    """Every documented function under ``root``, deduplicated on (nl, code), in walk order."""
    pairs: list[FunctionPair] = []
    seen: set[tuple[str, str]] = set()
    files = skipped = duplicates = 0
    for path in source_files(root):
        found = extract_file(path, module_name(path, root))
        if found is None:
            skipped += 1
            continue
        files += 1
        for pair in found:
            if (pair.nl, pair.code) in seen:
                duplicates += 1
                continue
            seen.add((pair.nl, pair.code))
            pairs.append(pair)
    return Extraction(pairs, files, skipped, duplicates)


def extract_file(path: Path, module: str) -> list[FunctionPair] | None:
    """The pairs of one file, or None if it cannot be decoded or parsed."""
    source = _read_source(path)
    if source is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences etc. in old code
            tree = ast.parse(source, filename=str(path))
    except (SyntaxError, ValueError):
        return None
    lines = source.split("\n")
    prefix = [module] if module else []
    pairs = []
    for qualname, node in _functions(tree, prefix):
        pair = function_pair(node, lines, qualname)
        if pair is not None:
            pairs.append(pair)
    return pairs


def _read_source(path: Path) -> str | None:
    try:
        data = path.read_bytes()
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
    except (OSError, SyntaxError, UnicodeDecodeError, LookupError):
        return None
    # ast numbers lines at \n, \r\n and \r only (str.splitlines also splits at \f and others), so
    # normalise once and split at \n to keep ast's line numbers valid.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _functions(node: ast.AST, prefix: list[str]) -> Iterator[tuple[str, Function]]:
    """(qualified name, node) of every function below ``node``, in source order."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield ".".join([*prefix, child.name]), child
            yield from _functions(child, [*prefix, child.name])
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, [*prefix, child.name])
        elif isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
            # functions defined under `if`, `try`, `with`, ...; expressions cannot hold a `def`
            yield from _functions(child, prefix)


def function_pair(node: Function, lines: list[str], qualname: str) -> FunctionPair | None:
    """The pair of one function, or None if it has no docstring, no usable sentence, or no real body."""
    docstring = ast.get_docstring(node)
    if docstring is None:
        return None
    nl = first_sentence(docstring)
    code = _code_without_docstring(node, lines)
    if not nl or code is None:
        return None
    return FunctionPair(qualname, nl, code)


def first_sentence(docstring: str) -> str:
    """The first sentence of the first paragraph, on one line."""
    paragraph = " ".join(_PARAGRAPH_BREAK.split(docstring.strip(), maxsplit=1)[0].split())
    end = _SENTENCE_END.search(paragraph)
    return paragraph[: end.end()] if end else paragraph


def _code_without_docstring(node: Function, lines: list[str]) -> str | None:
    doc, rest = node.body[0], node.body[1:]
    if not rest or all(_is_placeholder(stmt) for stmt in rest):
        return None
    # Cutting whole lines only works when the docstring has its lines to itself (not
    # `def f(): "doc"; return 1`), which is the case for nearly all real code.
    if _text_before(lines[doc.lineno - 1], doc.col_offset).strip() or rest[0].lineno <= doc.end_lineno:
        return None
    header = lines[node.lineno - 1 : doc.lineno - 1]
    body = lines[doc.end_lineno : node.end_lineno]
    while body and not body[0].strip():  # the blank line that usually follows a docstring
        body.pop(0)
    return "\n".join(_dedent(header + body, node.col_offset))


def _is_placeholder(stmt: ast.stmt) -> bool:
    """``pass`` or a bare ``...``."""
    if isinstance(stmt, ast.Pass):
        return True
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and stmt.value.value is Ellipsis


def _text_before(line: str, col_offset: int) -> str:
    # ast's col_offset counts UTF-8 bytes, not characters.
    return line.encode("utf-8")[:col_offset].decode("utf-8", errors="replace")


def _dedent(lines: list[str], indent: int) -> list[str]:
    """Remove the def's own indentation; lines indented less (inside multi-line strings) stay as they are."""
    return [line[indent:] if not line[:indent].strip() else line for line in lines]


def split_of(qualname: str, dev_fraction: float, test_fraction: float) -> str:
    """``test``, ``dev`` or ``train``, from sha256(qualname) read as a number in [0, 1)."""
    u = int.from_bytes(hashlib.sha256(qualname.encode("utf-8")).digest()[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + dev_fraction:
        return "dev"
    return "train"


def load(cfg: StdlibConfig, root: Path | None = None) -> SourceData:
    """Extract, deduplicate and split the pairs of the standard library at ``root`` (default: this interpreter's)."""
    root = stdlib_root() if root is None else root
    extraction = extract_pairs(root)
    if not extraction.pairs:
        raise DataError(f"{root}: no documented functions found (is this a Python standard library?)")
    splits: dict[str, list[Pair]] = {split: [] for split in SPLITS}
    for fp in extraction.pairs:
        splits[split_of(fp.qualname, cfg.dev_fraction, cfg.test_fraction)].append(Pair(fp.nl, fp.code))
    for split in ("dev", "test"):
        if not splits[split]:
            fraction = getattr(cfg, f"{split}_fraction")
            raise DataError(f"the stdlib {split} split is empty: raise data.stdlib.{split}_fraction (now {fraction})")
    info = {
        "python_version": platform.python_version(),
        "stdlib_files": extraction.files,
        "stdlib_files_skipped": extraction.files_skipped,
        "duplicates_removed": extraction.duplicates_removed,
    }
    return SourceData(splits, info=info)
