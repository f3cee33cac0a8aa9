"""Bad data in the download stage: every bad line is skipped and counted, too many stop the stage,
duplicates and train/test overlap are reported, and nothing is ever dropped silently."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmt.config import ConcodeConfig, DataConfig, DjangoConfig, JsonlConfig
from nmt.data.django import SHIPPED_DIR
from nmt.data.pairs import MAX_LINE_BYTES, BadLine, LineReport, parse_pair
from nmt.errors import ConfigError, DataError
from nmt.params import params_from_dict
from nmt.stages.download import portable, prepare_data

from .conftest import fuzz_examples


def line(nl: str, code: str) -> bytes:
    return json.dumps({"nl": nl, "code": code}).encode() + b"\n"


def good_lines(n: int, tag: str = "") -> bytes:
    return b"".join(line(f"add {i}{tag}", f"x + {i}") for i in range(n))


# One line of every kind of bad input, and the kind it is counted under.
BAD_LINES = [
    (b'{"nl": "caf\xe9", "code": "x"}', "not_utf8"),
    (b'\xff\xfe{"nl": "a", "code": "b"}', "not_utf8"),
    (b'{"nl": "a", "code": ', "invalid_json"),
    (b"\x00\x00", "invalid_json"),
    (b"[" * 50_000, "invalid_json"),  # nested too deeply for the json module: RecursionError
    (b'\xef\xbb\xbf{"nl": "a", "code": "b"}', "invalid_json"),  # a UTF-8 byte order mark
    (b"[1, 2]", "not_an_object"),
    (b"null", "not_an_object"),
    (b'{"code": "x"}', "nl_missing"),
    (b'{"nl": "x", "src": "y"}', "code_missing"),
    (b'{"nl": 3, "code": "x"}', "nl_not_string"),
    (b'{"nl": "x", "code": null}', "code_not_string"),
    (b'{"nl": "x", "code": ["a"]}', "code_not_string"),
    (b'{"nl": "", "code": "x"}', "nl_empty"),
    (b'{"nl": "x", "code": " \\t "}', "code_empty"),
    (b'{"nl": "\\udc00", "code": "x"}', "nl_lone_surrogate"),
    (b'{"nl": "x", "code": "a\\ud800b"}', "code_lone_surrogate"),
    (line("a" * MAX_LINE_BYTES, "b"), "too_long"),
]


def jsonl_cfg(tmp_path: Path, train: bytes, dev: bytes, test: bytes, **options: object) -> DataConfig:
    paths = {}
    for split, content in (("train", train), ("dev", dev), ("test", test)):
        paths[split] = tmp_path / f"{split}.jsonl"
        paths[split].write_bytes(content)
    return DataConfig(source="jsonl", jsonl=JsonlConfig(**{k: str(v) for k, v in paths.items()}), **options)


@pytest.mark.parametrize(("raw", "kind"), BAD_LINES, ids=[kind for _, kind in BAD_LINES])
def test_each_kind_of_bad_line_is_named(raw: bytes, kind: str) -> None:
    with pytest.raises(BadLine) as bad:
        parse_pair(raw)
    assert bad.value.kind == kind


def test_bad_lines_below_the_fraction_are_skipped_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = b"".join(raw.rstrip(b"\n") + b"\n" for raw, _ in BAD_LINES)
    train = good_lines(40) + bad + good_lines(60, tag="b")
    cfg = jsonl_cfg(tmp_path, train, good_lines(3), good_lines(3), max_bad_fraction=0.2, max_code_tokens=50)
    stats = prepare_data(cfg, tmp_path / "out")

    report = stats["bad_lines"]["train"]
    expected: dict[str, int] = {}
    for _, kind in BAD_LINES:
        expected[kind] = expected.get(kind, 0) + 1
    assert report["kinds"] == dict(sorted(expected.items()))
    assert report["bad"] == len(BAD_LINES) and report["lines"] == 100 + len(BAD_LINES)
    assert report["first_bad"] == f"{tmp_path / 'train.jsonl'}:41: not valid UTF-8 (invalid continuation byte)"
    assert stats["counts"]["train"] == 100
    assert stats["bad_lines"]["dev"]["bad"] == 0
    assert f"train.jsonl: {len(BAD_LINES)} of its {100 + len(BAD_LINES)} non-blank lines are bad" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats


def test_too_many_bad_lines_stop_the_stage_naming_file_counts_first_line_and_fix(tmp_path: Path) -> None:
    out = tmp_path / "out"
    test = good_lines(5) + b'{"nl": "x"}\n' + good_lines(3, tag="c") + b"[1]\n"
    cfg = jsonl_cfg(tmp_path, good_lines(10), good_lines(3), test)  # the default data.max_bad_fraction: 0.01
    with pytest.raises(DataError) as err:
        prepare_data(cfg, out)
    message = str(err.value)
    assert f"{tmp_path / 'test.jsonl'}: 2 of its 10 non-blank lines are bad" in message
    assert "1 code_missing, 1 not_an_object" in message and "20.0% > data.max_bad_fraction=0.01" in message
    assert f"First bad line: {tmp_path / 'test.jsonl'}:6: missing key 'code'" in message
    assert "Fix or remove the bad lines, or raise data.max_bad_fraction" in message
    assert not out.exists()


@pytest.mark.parametrize(("n_bad", "fraction", "fails"), [(1, 0.01, False), (2, 0.01, True), (1, 0.0, True), (99, 1.0, False)])
def test_the_fraction_is_a_share_of_the_file(tmp_path: Path, n_bad: int, fraction: float, fails: bool) -> None:
    train = good_lines(100 - n_bad) + b"{}\n" * n_bad
    cfg = jsonl_cfg(tmp_path, train, good_lines(2), good_lines(2), max_bad_fraction=fraction)
    if fails:
        with pytest.raises(DataError, match=r"data\.max_bad_fraction"):
            prepare_data(cfg, tmp_path / "out")
    else:
        assert prepare_data(cfg, tmp_path / "out")["bad_lines"]["train"]["bad"] == n_bad


def test_a_file_of_only_bad_lines_is_never_an_empty_split(tmp_path: Path) -> None:
    cfg = jsonl_cfg(tmp_path, b"{}\n[]\n", good_lines(2), good_lines(2), max_bad_fraction=1.0)
    with pytest.raises(DataError, match=r"train split has no usable pairs: all 2 lines of .*train\.jsonl are bad"):
        prepare_data(cfg, tmp_path / "out")


@pytest.mark.parametrize("content", [b"", b"\n \n\t\n"], ids=["zero_bytes", "blank_lines"])
@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_an_empty_file_is_a_clear_error(tmp_path: Path, split: str, content: bytes) -> None:
    files = {s: content if s == split else good_lines(2) for s in ("train", "dev", "test")}
    with pytest.raises(DataError, match=rf"{split}\.jsonl: no pairs \(the file is empty\)"):
        prepare_data(jsonl_cfg(tmp_path, **files), tmp_path / "out")


def test_a_1mb_line_is_counted_not_choked_on(tmp_path: Path) -> None:
    huge = line("describe " * 120_000, "x = 1")  # ~1 MB: over the byte cap
    big = line("long", "y = 1 + " * 11_000)  # ~90 kB: under the cap, dropped by the token limit
    train = good_lines(300) + huge + big
    start = time.monotonic()
    stats = prepare_data(jsonl_cfg(tmp_path, train, good_lines(2), good_lines(2)), tmp_path / "out")
    assert time.monotonic() - start < 5
    assert stats["bad_lines"]["train"]["kinds"] == {"too_long": 1}
    assert stats["dropped"]["train"]["max_code_tokens"] == 1
    assert stats["counts"]["train"] == 300


def test_duplicates_are_counted_everywhere_and_kept_by_default(tmp_path: Path) -> None:
    train = good_lines(5) + line("add 1", "x + 1") * 3
    stats = prepare_data(jsonl_cfg(tmp_path, train, good_lines(2, tag="d"), good_lines(2, tag="t") * 2),
                         tmp_path / "out")
    assert stats["duplicates"] == {"dropped_from": [], "found": {"train": 3, "dev": 0, "test": 2}}
    assert stats["counts"] == {"train": 8, "dev": 2, "test": 4}  # a benchmark's train set stays as published


def test_drop_duplicates_drops_them_from_train(tmp_path: Path) -> None:
    train = good_lines(5) + line("add 1", "x + 1") * 3 + line("add 1", "x + 2")  # same nl, other code: kept
    test = good_lines(2, tag="t") * 2
    stats = prepare_data(jsonl_cfg(tmp_path, train, good_lines(2, tag="d"), test, drop_duplicates=True),
                         tmp_path / "out")
    assert stats["duplicates"] == {"dropped_from": ["train"], "found": {"train": 3, "dev": 0, "test": 2}}
    assert stats["counts"] == {"train": 6, "dev": 2, "test": 4}  # the user's test file stays whole
    rows = [json.loads(r) for r in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert len({(r["nl"], r["code"]) for r in rows}) == len(rows)


def test_dev_and_test_pairs_seen_in_train_are_counted_and_kept(tmp_path: Path) -> None:
    test = good_lines(3) + good_lines(2, tag="t")  # "add 0..2" also occur in train
    dev = good_lines(1)
    stats = prepare_data(jsonl_cfg(tmp_path, good_lines(10), dev, test), tmp_path / "out")
    assert stats["overlap"] == {"dev_in_train": 1, "test_in_train": 3, "removed_from_train": False}
    assert stats["counts"] == {"train": 10, "dev": 1, "test": 5}


def test_django_and_concode_local_files_report_bad_lines(tmp_path: Path) -> None:
    django = tmp_path / "django"
    django.mkdir()
    (django / "train.jsonl").write_bytes(good_lines(20) + b"oops\n")
    (django / "dev.jsonl").write_bytes(good_lines(2))
    cfg = DataConfig(source="django", max_bad_fraction=0.1, select_size=5,
                     django=DjangoConfig(origin="local", local_dir=str(django)))
    stats = prepare_data(cfg, tmp_path / "out1")
    assert stats["origins"]["test"] == "dev pairs" and stats["bad_lines"]["train"]["kinds"] == {"invalid_json": 1}

    concode = tmp_path / "concode"
    concode.mkdir()
    for name in ("train.json", "dev.json"):
        (concode / name).write_bytes(good_lines(4))
    (concode / "test.json").write_bytes(good_lines(19) + b'{"nl": "no code"}\n')
    cfg = DataConfig(source="concode", max_bad_fraction=0.1, concode=ConcodeConfig(local_dir=str(concode)))
    stats = prepare_data(cfg, tmp_path / "out2")
    assert stats["note"] == "" and stats["counts"]["test"] == 19
    assert stats["bad_lines"]["test"]["kinds"] == {"code_missing": 1}


@pytest.mark.parametrize("value", [-0.01, 1.5, "most", None])
def test_max_bad_fraction_must_be_a_share(value: object) -> None:
    with pytest.raises(ConfigError, match=r"data\.max_bad_fraction"):
        params_from_dict({"data": {"max_bad_fraction": value}})


# --------------------------------------------------------------------------- every line accounted for
GOOD = st.builds(line, st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["x", "y"]))
BAD = st.sampled_from([raw.rstrip(b"\n") + b"\n" for raw, _ in BAD_LINES[:-1]])  # the 1 MB one is tested above
LONG = st.just(line("long", "z = " + " + ".join(["1"] * 60)))  # over max_code_tokens=50
FILE = st.lists(st.one_of(GOOD, GOOD, BAD, LONG, st.just(b"\n")), max_size=30)


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(train=FILE, test=FILE, fraction=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_every_line_is_kept_or_accounted_for(train: list[bytes], test: list[bytes], fraction: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = jsonl_cfg(root, b"".join(train), good_lines(2), b"".join(test), max_bad_fraction=fraction,
                        max_code_tokens=50, drop_duplicates=True)
        try:
            stats = prepare_data(cfg, root / "out")
        except DataError as e:
            assert str(e) and not (root / "out").exists()
            return
    for split in ("train", "test"):
        bad = stats["bad_lines"][split]
        assert bad["bad"] <= fraction * bad["lines"]
        dups = stats["duplicates"]["found"][split] if split == "train" else 0
        kept = stats["counts"][split] + bad["bad"] + dups + stats["dropped"][split]["total"]
        assert kept == bad["lines"]


def test_stats_name_files_as_every_checkout_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """stats.json is a DVC output: an absolute path in it would change its hash from clone to clone."""
    shipped = str(SHIPPED_DIR / "train.jsonl.xz")
    assert portable(LineReport(shipped, 3).to_stats())["file"] == "nmt/data/corpora/django/train.jsonl.xz"
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)  # the repository: a user's file inside it is named from its root
    inside, outside = tmp_path / "data" / "mine.jsonl", "/elsewhere/theirs.jsonl"
    report = LineReport(str(inside))
    report.add_bad(7, BadLine("invalid_json", "not JSON"))
    stats = portable(report.to_stats())
    assert stats["file"] == "data/mine.jsonl" and stats["first_bad"] == "data/mine.jsonl:7: not JSON"
    assert portable(LineReport(outside).to_stats())["file"] == outside  # outside both: as the user gave it
    assert portable(LineReport("", 5).to_stats())["file"] == ""  # a split read from no file
