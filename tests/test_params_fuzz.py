"""Bad params.yaml: whatever a user writes, loading it either succeeds or raises ConfigError whose
every problem names a dotted key, and a stage given it exits 2 with a clean message, never a traceback."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nmt.errors import ConfigError
from nmt.params import describe, params_from_dict

from .conftest import REPO, fuzz_examples

BASE = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
LEAVES = sorted(key for key, _, _ in describe())
SECTIONS = sorted({leaf.rsplit(".", 1)[0] for leaf in LEAVES if "." in leaf})
KNOWN = set(LEAVES) | set(SECTIONS)
# "model.n_heads: ..." or "(top level): ...": a dotted key, then the problem.
PROBLEM = re.compile(r"^(\(top level\)|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*): \S")


def problems_of(raw: Any) -> list[str]:
    with pytest.raises(ConfigError) as e:
        params_from_dict(raw)
    return e.value.problems


# --------------------------------------------------------------------------- the promised rejections
# Integers too large for a float (OverflowError) and too long to print (over Python's 4300 digits).
BIG_INT, LONG_INT = 10**400, 10**5000


@pytest.mark.parametrize(("path", "value", "key"), [
    ("train.lr", -1e-3, "train.lr"),
    ("model.dropout", 1.0, "model.dropout"),
    ("model.dropout", 1.5, "model.dropout"),
    ("model.n_heads", 3, "model.n_heads"),  # does not divide d_model=256
    ("evaluate.beam_size", 0, "evaluate.beam_size"),
    ("evaluate.beam_width", 4, "evaluate.beam_width"),  # unknown key
    ("model.d_model", "256", "model.d_model"),  # string for int
    ("train.max_steps", 2.5, "train.max_steps"),  # float for int
    ("model", [256, 4], "model"),  # list for a section
    ("data.stdlib", "default", "data.stdlib"),  # scalar for a section
    ("train.lr", None, "train.lr"),  # null
    ("model.copy", None, "model.copy"),
    ("data.max_bad_fraction", 2.0, "data.max_bad_fraction"),
    ("train.lr", BIG_INT, "train.lr"),
    ("train.lr", LONG_INT, "train.lr"),
    ("model.d_model", -LONG_INT, "model.d_model"),
    ("data.source", LONG_INT, "data.source"),
], ids=lambda v: f"int_of_{v.bit_length()}_bits" if isinstance(v, int) and abs(v) > 2**64 else None)
def test_bad_value_is_rejected_naming_its_key(path: str, value: Any, key: str) -> None:
    raw = copy.deepcopy(BASE)
    set_path(raw, path, value)
    assert any(p.startswith(f"{key}: ") for p in problems_of(raw))


# --------------------------------------------------------------------------- the fuzz
HUGE = st.sampled_from([BIG_INT, -BIG_INT, LONG_INT, -LONG_INT, 2**63, 1e308, -1e308, float("inf"), float("nan")])
SCALAR = st.one_of(
    st.integers(), st.integers(max_value=-1), st.floats(), st.floats(max_value=-1e-9), HUGE,
    st.text(max_size=12), st.sampled_from(["1e-3", "0", "-1", "nan", "inf", "yes", "none", ""]),
    st.booleans(), st.none(),
)
VALUE = st.one_of(SCALAR, st.lists(SCALAR, max_size=3), st.dictionaries(st.text(max_size=5), SCALAR, max_size=3))
UNKNOWN = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)

Mutation = tuple[str, str, Any]  # (kind, dotted path, value)


@st.composite
def mutations(draw: st.DrawFn) -> Mutation:
    kind = draw(st.sampled_from(["delete", "unknown", "value", "section"]))
    if kind == "delete":
        return kind, draw(st.sampled_from(LEAVES + SECTIONS)), None
    if kind == "unknown":
        parent = draw(st.sampled_from(["", *SECTIONS]))
        name = draw(UNKNOWN.filter(lambda n: f"{parent}.{n}".lstrip(".") not in KNOWN))
        return kind, f"{parent}.{name}".lstrip("."), draw(VALUE)
    if kind == "value":
        return kind, draw(st.sampled_from(LEAVES)), draw(VALUE)
    return kind, draw(st.sampled_from(SECTIONS)), draw(st.one_of(SCALAR, st.lists(SCALAR, max_size=3)))


def set_path(raw: dict, path: str, value: Any) -> None:
    """Set ``raw[a][b] = value`` for path ``a.b``; a parent that is no mapping any more is left alone."""
    *parents, last = path.split(".")
    for key in parents:
        raw = raw.get(key) if isinstance(raw, dict) else None
    if isinstance(raw, dict):
        raw[last] = value


def delete_path(raw: dict, path: str) -> None:
    *parents, last = path.split(".")
    for key in parents:
        raw = raw.get(key) if isinstance(raw, dict) else None
    if isinstance(raw, dict):
        raw.pop(last, None)


def lookup(raw: Any, path: str) -> bool:
    """Whether ``path`` is still there in ``raw`` (a later mutation may have replaced a parent)."""
    for key in path.split("."):
        if not isinstance(raw, dict) or key not in raw:
            return False
        raw = raw[key]
    return True


def apply(raw: dict, mutation: Mutation) -> None:
    kind, path, value = mutation
    if kind == "delete":
        delete_path(raw, path)
    else:
        set_path(raw, path, value)


def must_be_named(raw: dict, muts: list[Mutation]) -> set[str]:
    """The mutated paths still in ``raw`` that no loader may accept: unknown keys, and sections made
    scalars or lists (a null section means "all defaults", like an empty one)."""
    named = set()
    for kind, path, _ in muts:
        if lookup(raw, path) and (kind == "unknown" or (kind == "section" and get(raw, path) is not None)):
            named.add(path)
    return named


def get(raw: Any, path: str) -> Any:
    for key in path.split("."):
        raw = raw[key]
    return raw


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(300), deadline=None)
@given(st.lists(mutations(), min_size=1, max_size=4))
@example([("value", "train.lr", BIG_INT)])
@example([("value", "model.n_heads", -LONG_INT)])
@example([("section", "model", None)])
def test_mutated_params_load_or_fail_naming_dotted_keys(muts: list[Mutation]) -> None:
    raw = copy.deepcopy(BASE)
    for mutation in muts:
        apply(raw, mutation)
    named = must_be_named(raw, muts)
    try:
        params_from_dict(raw)
    except ConfigError as e:
        assert e.problems, "a ConfigError lists its problems"
        for problem in e.problems:
            assert PROBLEM.match(problem), problem
            key = problem.split(": ", 1)[0]
            assert key in KNOWN or any(key == path for _, path, _ in muts), problem
            assert problem in str(e)
        for path in named:
            assert any(p.startswith(f"{path}: ") for p in e.problems), (path, e.problems)
    else:
        assert not named, f"accepted {named}"


# --------------------------------------------------------------------------- through a stage
@pytest.mark.parametrize(("edits", "keys"), [
    ({"train.lr": -1.0, "model.dropout": 1.0, "evaluate.beam_size": 0, "model.d_modle": 8, "export": [1]},
     ["train.lr", "model.dropout", "evaluate.beam_size", "model.d_modle", "export"]),
    ({"train.lr": "__HUGE__"}, ["train.lr"]),
    ({"train.lr": "__LONG__"}, []),  # YAML itself cannot read a 5000-digit number: the message names the file
], ids=["five_problems", "400_digits", "5000_digits"])
def test_a_stage_given_mutated_params_exits_2_without_a_traceback(tmp_path: Path, edits: dict, keys: list[str]) -> None:
    raw = copy.deepcopy(BASE)
    for path, value in edits.items():
        set_path(raw, path, value)
    text = yaml.safe_dump(raw).replace("__HUGE__", "1" * 400).replace("__LONG__", "1" * 5000)  # PyYAML cannot dump them
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pipeline.download"], cwd=tmp_path, env=env, check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: params.yaml: ") and "Traceback" not in proc.stderr
    for key in keys:
        assert f"\n  {key}: " in proc.stderr
    assert len(proc.stderr) < 2000  # a huge value is not echoed whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no work was done
