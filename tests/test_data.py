"""The download stage: every source, the length limits, stats.json, and the all-or-nothing writes."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import lzma
import shutil
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nmt.config import ConcodeConfig, DataConfig, DjangoConfig, JsonlConfig, StdlibConfig
from nmt.data import concode, django, stdlib
from nmt.errors import ConfigError, DataError
from nmt.params import params_from_dict
from nmt.stages.download import prepare_data, token_lengths

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def read_split(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content), encoding="utf-8")
    return root


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A 127.0.0.1 port that refuses connections: bound (so nobody else takes it) but not listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


# --------------------------------------------------------------------------- stdlib
FAKE_MODULE = '''\
"""Module docstring: not a function."""


def plain(x):
    """Return x plus one. A second sentence.

    More detail.
    """

    # a comment that stays
    return x + 1


def only_doc():
    """Nothing else here."""


def doc_and_pass():
    """Placeholder."""
    pass


def doc_and_ellipsis():
    """Placeholder too."""
    ...


def undocumented():
    return 1


class Outer:
    class Inner:
        @staticmethod
        def method(x):
            """Double x, e.g. 2 gives 4.

            Longer text.
            """
            text = """
keep this
"""
            return x * 2, text


async def fetch(url):
    """Fetch   a
    url!   Then more."""
    return url


if True:
    def conditional():
        """Defined under if."""
        return 2


def outer():
    """Call a helper."""
    def helper():
        """Help outer."""
        return 1
    return helper()
'''

EXCLUDED = {
    "test/test_a.py",
    "pkg/tests/t.py",
    "unittest/test/u.py",
    "idlelib/i.py",
    "idlelib/idle_test/t.py",
    "site-packages/s.py",
    "turtledemo/d.py",
    "__pycache__/c.py",
}


@pytest.fixture
def fake_stdlib(tmp_path: Path) -> Path:
    files: dict[str, str | bytes] = {
        "mod.py": FAKE_MODULE,
        "pkg/__init__.py": 'def init_func():\n    """Package level."""\n    return 0\n',
        # identical (nl, code) to mod.plain: kept once
        "pkg/sub.py": 'def plain(x):\n    """Return x plus one."""\n    # a comment that stays\n    return x + 1\n',
        "bad.py": "def broken(:\n",
        "latin.py": b'def f():\n    """caf\xe9."""\n    return 1\n',  # not UTF-8, no coding cookie
    }
    for i, name in enumerate(sorted(EXCLUDED)):
        files[name] = f'def excluded_{i}():\n    """Must not appear."""\n    return {i}\n'
    return write_tree(tmp_path / "lib", files)


def test_stdlib_extraction_removes_docstrings_and_names_functions(fake_stdlib: Path) -> None:
    extraction = stdlib.extract_pairs(fake_stdlib)
    got = {p.qualname: (p.nl, p.code) for p in extraction.pairs}

    assert got["mod.plain"] == ("Return x plus one.", "def plain(x):\n    # a comment that stays\n    return x + 1")
    # Decorators dropped, class nesting in the name, lines inside a string keep their own indentation.
    assert got["mod.Outer.Inner.method"] == (
        "Double x, e.g. 2 gives 4.",
        'def method(x):\n    text = """\nkeep this\n"""\n    return x * 2, text',
    )
    assert got["mod.fetch"] == ("Fetch a url!", "async def fetch(url):\n    return url")
    assert got["mod.conditional"] == ("Defined under if.", "def conditional():\n    return 2")
    assert got["pkg.init_func"] == ("Package level.", "def init_func():\n    return 0")
    assert got["mod.outer.helper"] == ("Help outer.", "def helper():\n    return 1")
    assert set(got) == {
        "mod.plain", "mod.Outer.Inner.method", "mod.fetch", "mod.conditional", "mod.outer", "mod.outer.helper",
        "pkg.init_func",
    }
    assert extraction.duplicates_removed == 1  # pkg.sub.plain
    assert extraction.files_skipped == 2  # bad.py, latin.py
    assert extraction.files == 3  # mod, pkg/__init__, pkg/sub: nothing from the excluded dirs


def test_stdlib_excluded_directories(fake_stdlib: Path) -> None:
    walked = {p.relative_to(fake_stdlib).as_posix() for p in stdlib.source_files(fake_stdlib)}
    assert not walked & EXCLUDED
    assert "mod.py" in walked


@pytest.mark.parametrize(
    ("docstring", "sentence"),
    [
        ("Return x. More.", "Return x."),
        ("Use e.g. this one. Then", "Use e.g. this one."),
        ("No full stop", "No full stop"),
        ("Wrapped over\n   two lines. Next.", "Wrapped over two lines."),
        ("First paragraph\n\nSecond paragraph.", "First paragraph"),
        ("Call os.path.join() first.", "Call os.path.join() first."),
    ],
)
def test_first_sentence(docstring: str, sentence: str) -> None:
    assert stdlib.first_sentence(docstring) == sentence


def test_split_is_sha256_of_qualified_name() -> None:
    names = [f"mod.f{i}" for i in range(3000)]
    for name in names[:50]:
        u = int(hashlib.sha256(name.encode()).hexdigest()[:16], 16) / 2**64
        expected = "test" if u < 0.1 else "dev" if u < 0.3 else "train"
        assert stdlib.split_of(name, 0.2, 0.1) == expected
    shares = {s: sum(stdlib.split_of(n, 0.2, 0.1) == s for n in names) / len(names) for s in ("train", "dev", "test")}
    assert shares["test"] == pytest.approx(0.1, abs=0.02)
    assert shares["dev"] == pytest.approx(0.2, abs=0.03)


def many_functions(n_short: int, n_long: int) -> str:
    short = [f'def short_{i}(x):\n    """Short {i}."""\n    return x + {i}\n' for i in range(n_short)]
    body = "".join(f"    y{j} = x * {j}\n" for j in range(40))
    long = [f'def long_{i}(x):\n    """Long {i}."""\n{body}    return x\n' for i in range(n_long)]
    return "\n\n".join(short + long)


def test_stdlib_length_limit_applies_to_every_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_tree(tmp_path / "lib", {"many.py": many_functions(60, 30)})
    monkeypatch.setattr(stdlib, "stdlib_root", lambda: root)
    cfg = DataConfig(source="stdlib", max_nl_tokens=64, max_code_tokens=100,
                     stdlib=StdlibConfig(dev_fraction=0.3, test_fraction=0.3))
    assert token_lengths(["def short_1(x):\n    return x + 1"])[0] <= 100 < token_lengths([many_functions(0, 1)])[0]

    stats = prepare_data(cfg, tmp_path / "out")

    for split in ("train", "dev", "test"):
        n_long = sum(stdlib.split_of(f"many.long_{i}", 0.3, 0.3) == split for i in range(30))
        n_short = sum(stdlib.split_of(f"many.short_{i}", 0.3, 0.3) == split for i in range(60))
        assert n_long > 0
        assert stats["dropped"][split] == {"max_nl_tokens": 0, "max_code_tokens": n_long, "total": n_long}
        assert stats["counts"][split] == n_short
        assert all(row["code"].startswith("def short_") for row in read_split(tmp_path / "out" / f"{split}.jsonl"))
    assert stats["limits"]["applied_to"] == ["train", "dev", "test"]


def test_stdlib_output_is_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_stdlib: Path) -> None:
    write_tree(fake_stdlib, {"many.py": many_functions(60, 0)})
    monkeypatch.setattr(stdlib, "stdlib_root", lambda: fake_stdlib)
    cfg = DataConfig(source="stdlib", stdlib=StdlibConfig(dev_fraction=0.3, test_fraction=0.3))
    first = prepare_data(cfg, tmp_path / "a")
    second = prepare_data(cfg, tmp_path / "b")
    assert first == second
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "stats.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first["python_version"]
    assert first["duplicates_removed"] == 1


def test_stdlib_empty_split_names_the_fraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_stdlib: Path) -> None:
    monkeypatch.setattr(stdlib, "stdlib_root", lambda: fake_stdlib)
    cfg = DataConfig(source="stdlib", stdlib=StdlibConfig(dev_fraction=0.3, test_fraction=0.0))
    with pytest.raises(DataError, match=r"data\.stdlib\.test_fraction"):
        prepare_data(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_real_stdlib_gives_thousands_of_pairs_deterministically() -> None:
    cfg = StdlibConfig()
    first = stdlib.load(cfg)
    second = stdlib.load(cfg)
    assert first == second
    total = sum(len(pairs) for pairs in first.splits.values())
    assert total > 4000
    assert len(first.splits["dev"]) / total == pytest.approx(cfg.dev_fraction, abs=0.02)
    assert len(first.splits["test"]) / total == pytest.approx(cfg.test_fraction, abs=0.02)
    assert all(p.code.startswith(("def ", "async def ")) and p.nl for pairs in first.splits.values() for p in pairs)


# --------------------------------------------------------------------------- django
def test_django_local_dir_with_test_split(tmp_path: Path) -> None:
    cfg = DataConfig(source="django", max_nl_tokens=20,
                     django=DjangoConfig(origin="local", local_dir=str(FIXTURES / "django")))
    stats = prepare_data(cfg, tmp_path)
    # The long train description is dropped; the long dev one stays (limits are train-only here).
    assert stats["counts"] == {"train": 3, "dev": 2, "test": 3}
    assert stats["dropped"]["train"]["max_nl_tokens"] == 1
    assert stats["dropped"]["dev"]["total"] == 0
    assert stats["roles"] == {"train": "training", "dev": "selection", "test": "report"}
    assert stats["origins"]["test"] == "test split of the source"
    assert read_split(tmp_path / "test.jsonl")[0] == {"nl": "call the method self.close.", "code": "self . close ( )"}


def django_without_test(tmp_path: Path) -> Path:
    """A local Django directory holding only the fixture's train.jsonl and dev.jsonl."""
    local = tmp_path / "django"
    local.mkdir()
    for name in ("train.jsonl", "dev.jsonl"):
        shutil.copy(FIXTURES / "django" / name, local / name)
    return local


def test_django_local_dir_without_test_selects_on_the_end_of_train(tmp_path: Path) -> None:
    local = django_without_test(tmp_path)
    cfg = DataConfig(source="django", select_size=1, django=DjangoConfig(origin="local", local_dir=str(local)))
    stats = prepare_data(cfg, tmp_path / "out")
    train = read_split(local / "train.jsonl")
    assert read_split(tmp_path / "out" / "dev.jsonl") == train[-1:]  # the selection split: train's tail
    assert read_split(tmp_path / "out" / "train.jsonl") == train[:-1]
    assert read_split(tmp_path / "out" / "test.jsonl") == read_split(local / "dev.jsonl")  # dev reports
    assert stats["origins"] == {"train": "train pairs 1-3", "dev": "train pairs 4-4", "test": "dev pairs"}
    assert "test.jsonl" in stats["note"] and "selection" in stats["note"]
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats


def test_a_selection_split_larger_than_train_names_the_param(tmp_path: Path) -> None:
    local = django_without_test(tmp_path)
    cfg = DataConfig(source="django", select_size=4, django=DjangoConfig(origin="local", local_dir=str(local)))
    with pytest.raises(DataError, match=r"train has 4 pairs and data\.select_size is 4"):
        prepare_data(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_shipped_django_pairs_are_the_default_and_match_their_provenance(tmp_path: Path) -> None:
    params = params_from_dict({})
    assert params.data.source == "django" and params.data.django.origin == "shipped"
    provenance = (django.SHIPPED_DIR / "PROVENANCE.md").read_text()
    for name, digest in django.SHIPPED_SHA256.items():
        path = django.SHIPPED_DIR / name
        assert hashlib.sha256(lzma.decompress(path.read_bytes())).hexdigest() == digest
        assert digest in provenance and hashlib.sha256(path.read_bytes()).hexdigest() in provenance
    assert (django.SHIPPED_DIR / "LICENSE").read_text().startswith("MIT License")
    stats = prepare_data(params.data, tmp_path)
    assert stats["counts"]["test"] == 1_000 and stats["counts"]["dev"] == 1_000
    assert stats["counts"]["train"] + stats["dropped"]["train"]["total"] == 15_000
    assert stats["origins"] == {"train": "train pairs 1-15000", "dev": "train pairs 15001-16000", "test": "dev pairs"}
    shipped_train = [json.loads(line) for line in lzma.decompress(
        (django.SHIPPED_DIR / "train.jsonl.xz").read_bytes()).decode().splitlines()]
    shipped_dev = [json.loads(line) for line in lzma.decompress(
        (django.SHIPPED_DIR / "dev.jsonl.xz").read_bytes()).decode().splitlines()]
    # Selection: train's last 1,000 pairs; test: the dev pairs, whole. (Django repeats lines such as
    # `try :`, so a test pair may equal a train pair; stats.json counts them under overlap.)
    assert read_split(tmp_path / "dev.jsonl") == shipped_train[-1000:]
    assert read_split(tmp_path / "test.jsonl") == shipped_dev
    assert stats["overlap"]["test_in_train"] < 200


def test_a_changed_shipped_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = tmp_path / "corpora"
    shipped.mkdir()
    for name in django.SHIPPED_SHA256:
        shutil.copy(django.SHIPPED_DIR / name, shipped / name)
    (shipped / "dev.jsonl.xz").write_bytes(lzma.compress(b'{"nl": "a", "code": "b"}\n'))
    monkeypatch.setattr(django, "SHIPPED_DIR", shipped)
    with pytest.raises(DataError, match=r"dev\.jsonl\.xz: sha256 .*changed.*data\.django\.origin"):
        prepare_data(DataConfig(source="django"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("django_params", "problem"), [
    ({"origin": "local"}, r"data\.django\.local_dir: required when data\.django\.origin is 'local'"),
    ({"local_dir": "x"}, r"data\.django\.local_dir: only read with data\.django\.origin: local"),
    ({"origin": "web"}, r"data\.django\.origin"),
])
def test_django_origin_and_local_dir_must_agree(django_params: dict, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        params_from_dict({"data": {"source": "django", "django": django_params}})


def test_django_missing_local_dir_names_the_param(tmp_path: Path) -> None:
    cfg = DataConfig(source="django", django=DjangoConfig(origin="local", local_dir=str(tmp_path / "nope")))
    with pytest.raises(DataError, match=r"data\.django\.local_dir"):
        prepare_data(cfg, tmp_path / "out")


N_DJANGO = sum(django.SPLIT_SIZES.values())


@pytest.fixture
def django_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Serve a fake all.anno/all.code over real HTTP on 127.0.0.1 and point the module at it."""
    root = tmp_path / "www"
    files = {
        "django/all.anno": "".join(f"  anno {i}\r\n" for i in range(N_DJANGO)).encode(),
        "django/all.code": "".join(f"code_{i} = {i}   \n" for i in range(N_DJANGO)).encode(),
    }
    write_tree(root, files)
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}/django"
    monkeypatch.setattr(django, "BASE_URL", base_url)
    monkeypatch.setattr(
        django, "SHA256", {name.split("/")[1]: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    )
    yield base_url
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_django_download_splits_in_file_order(tmp_path: Path, django_server: str) -> None:
    stats = prepare_data(DataConfig(source="django", django=DjangoConfig(origin="download")), tmp_path)
    assert stats["counts"] == {"train": 16_000, "dev": 1_000, "test": 1_805}
    assert stats["note"] == ""
    assert read_split(tmp_path / "train.jsonl")[0] == {"nl": "anno 0", "code": "code_0 = 0"}
    assert read_split(tmp_path / "dev.jsonl")[0] == {"nl": "anno 16000", "code": "code_16000 = 16000"}
    assert read_split(tmp_path / "test.jsonl")[-1] == {"nl": "anno 18804", "code": "code_18804 = 18804"}


def test_django_download_rejects_a_sha256_mismatch(tmp_path: Path, django_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(django.SHA256, "all.code", "0" * 64)
    with pytest.raises(DataError, match=r"sha256.*data\.django\.local_dir"):
        prepare_data(DataConfig(source="django", django=DjangoConfig(origin="download")), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_django_unreachable_download_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed_port: int) -> None:
    monkeypatch.setattr(django, "BASE_URL", f"http://127.0.0.1:{closed_port}/django")
    start = time.monotonic()
    with pytest.raises(DataError, match=r"data\.django\.origin"):
        prepare_data(DataConfig(source="django", django=DjangoConfig(origin="download")), tmp_path / "out")
    assert time.monotonic() - start < 5
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- concode
def test_concode_local_dir(tmp_path: Path) -> None:
    cfg = DataConfig(source="concode", concode=ConcodeConfig(local_dir=str(FIXTURES / "concode")))
    stats = prepare_data(cfg, tmp_path)
    assert stats["counts"] == {"train": 3, "dev": 2, "test": 2}
    assert stats["note"] == ""
    assert read_split(tmp_path / "test.jsonl")[1]["code"] == "void function ( ) { count = 0 ; }"


def copy_concode(tmp_path: Path, test_lines: list[dict]) -> Path:
    local = tmp_path / "concode"
    local.mkdir()
    for name in ("train.json", "dev.json"):
        shutil.copy(FIXTURES / "concode" / name, local / name)
    (local / "test.json").write_text("".join(json.dumps(row) + "\n" for row in test_lines))
    return local


def test_concode_test_without_code_selects_on_the_end_of_train(tmp_path: Path) -> None:
    local = copy_concode(tmp_path, [{"nl": "Returns the size."}, {"nl": "Resets.", "code": ""}])
    cfg = DataConfig(source="concode", select_size=1, concode=ConcodeConfig(local_dir=str(local)))
    stats = prepare_data(cfg, tmp_path / "out")
    assert "test.json" in stats["note"] and stats["origins"]["test"] == "dev pairs"
    assert read_split(tmp_path / "out" / "test.jsonl") == read_split(local / "dev.json")
    assert read_split(tmp_path / "out" / "dev.jsonl") == read_split(local / "train.json")[-1:]


def test_concode_test_with_some_code_missing_names_the_line(tmp_path: Path) -> None:
    local = copy_concode(tmp_path, [{"nl": "Returns the size.", "code": "int f ( ) { }"}, {"nl": "Resets."}])
    with pytest.raises(DataError, match=r"test\.json:2: missing key 'code'"):
        prepare_data(DataConfig(source="concode", concode=ConcodeConfig(local_dir=str(local))), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the reachability check connect directly, whatever the machine running the tests uses."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)


def test_concode_unreachable_hub_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed_port: int, no_proxy: None
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    start = time.monotonic()
    with pytest.raises(DataError, match=r"cannot reach the Hugging Face hub.*data\.concode\.local_dir"):
        prepare_data(DataConfig(source="concode"), tmp_path / "out")
    assert time.monotonic() - start < 15
    assert not (tmp_path / "out").exists()


def test_concode_offline_mode_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_proxy: None) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(concode.socket, "create_connection", pytest.fail)  # offline means: do not even try
    start = time.monotonic()
    with pytest.raises(DataError, match=r"HF_HUB_OFFLINE.*data\.concode\.local_dir"):
        prepare_data(DataConfig(source="concode"), tmp_path / "out")
    assert time.monotonic() - start < 15
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- jsonl
GOOD = '{"nl": "add one", "code": "x + 1"}\n'


def jsonl_cfg(tmp_path: Path, train: bytes, dev: bytes, test: bytes, **limits: int) -> DataConfig:
    paths = {}
    for split, content in (("train", train), ("dev", dev), ("test", test)):
        paths[split] = tmp_path / f"my_{split}.jsonl"
        paths[split].write_bytes(content)
    return DataConfig(source="jsonl", jsonl=JsonlConfig(**{k: str(v) for k, v in paths.items()}), **limits)


def test_jsonl_keeps_only_nl_and_code_and_limits_train_only(tmp_path: Path) -> None:
    long_code = "x = " + " + ".join(["1"] * 100)
    train = (GOOD + json.dumps({"nl": "long", "code": long_code, "id": 7}) + "\n\n").encode()
    dev = json.dumps({"nl": "long too", "code": long_code}).encode() + b"\n"
    test = b'{"id": 1, "nl": "caf\\u00e9 <|endoftext|>", "code": "y"}\n'
    stats = prepare_data(jsonl_cfg(tmp_path, train, dev, test, max_code_tokens=50), tmp_path / "out")

    out = tmp_path / "out"
    assert read_split(out / "train.jsonl") == [{"nl": "add one", "code": "x + 1"}]
    assert read_split(out / "dev.jsonl") == [{"nl": "long too", "code": long_code}]
    assert read_split(out / "test.jsonl") == [{"nl": "café <|endoftext|>", "code": "y"}]
    assert stats["counts"] == {"train": 1, "dev": 1, "test": 1}
    assert stats["dropped"]["train"] == {"max_nl_tokens": 0, "max_code_tokens": 1, "total": 1}
    assert stats["tokens"]["dev"]["code"]["max"] > 50
    for name, digest in stats["sha256"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert json.loads((out / "stats.json").read_text(encoding="utf-8")) == stats


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        (b'{"nl": "a", "code": \n', "invalid JSON"),
        (b'{"nl": "a"}\n', "missing key 'code'"),
        (b'{"nl": "a", "code": 3}\n', "'code' must be a string"),
        (b'{"nl": "caf\xe9", "code": "b"}\n', "not valid UTF-8"),
    ],
)
def test_jsonl_malformed_line_names_file_and_line(tmp_path: Path, bad_line: bytes, problem: str) -> None:
    cfg = jsonl_cfg(tmp_path, GOOD.encode(), GOOD.encode(), GOOD.encode() + bad_line)
    with pytest.raises(DataError) as err:
        prepare_data(cfg, tmp_path / "out")
    assert f"{tmp_path / 'my_test.jsonl'}:2:" in str(err.value)
    assert problem in str(err.value)
    assert not (tmp_path / "out").exists()


def test_jsonl_lone_surrogate_is_rejected_before_writing(tmp_path: Path) -> None:
    cfg = jsonl_cfg(tmp_path, GOOD.encode(), GOOD.encode(), GOOD.encode() + b'{"nl": "\\ud800", "code": "b"}\n')
    with pytest.raises(DataError, match=r"my_test\.jsonl:2: .*surrogate"):
        prepare_data(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_jsonl_missing_or_empty_file(tmp_path: Path) -> None:
    cfg = jsonl_cfg(tmp_path, GOOD.encode(), b"\n", GOOD.encode())
    with pytest.raises(DataError, match=r"my_dev\.jsonl: no pairs"):
        prepare_data(cfg, tmp_path / "out")
    cfg = jsonl_cfg(tmp_path, GOOD.encode(), GOOD.encode(), GOOD.encode())
    cfg.jsonl.test = str(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match=r"data\.jsonl\.test: file not found"):
        prepare_data(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_split_emptied_by_the_limits_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_text("old\n")  # a previous run's output must survive untouched
    cfg = jsonl_cfg(tmp_path, GOOD.encode(), GOOD.encode(), GOOD.encode(), max_code_tokens=1)
    with pytest.raises(DataError, match=r"train split is empty.*data\.max_code_tokens=1"):
        prepare_data(cfg, out)
    assert sorted(p.name for p in out.iterdir()) == ["train.jsonl"]
    assert (out / "train.jsonl").read_text() == "old\n"
