"""params.yaml: every option declared once, unknown keys and bad values rejected before any work."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from nmt.errors import ConfigError
from nmt.params import describe, flatten, load_params, params_from_dict

from .conftest import REPO


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        params_from_dict(raw)
    return e.value.problems


def test_shipped_params_yaml_is_valid_and_lists_every_option():
    load_params(REPO / "params.yaml")
    in_file = set(flatten(yaml.safe_load((REPO / "params.yaml").read_text())))
    declared = {key for key, _, _ in describe()}
    assert in_file == declared


def test_wrong_type_names_the_key_and_the_value():
    assert problems_of({"train": {"lr": "abc"}}) == ["train.lr: expected float, got 'abc'"]


def test_yaml_style_exponent_strings_are_numbers():
    assert params_from_dict({"train": {"lr": "1e-3"}}).train.lr == pytest.approx(1e-3)


def test_unknown_keys_are_rejected_at_every_level():
    problems = problems_of({"trian": {}, "model": {"d_modle": 3}, "data": {"django": {"dir": "x"}}})
    assert any(p.startswith("trian: unknown key") for p in problems)
    assert any(p.startswith("model.d_modle: unknown key") for p in problems)
    assert any(p.startswith("data.django.dir: unknown key") for p in problems)


@pytest.mark.parametrize("raw, key", [
    ({"train": {"lr": -1.0}}, "train.lr"),
    ({"model": {"dropout": 1.0}}, "model.dropout"),
    ({"model": {"word_dropout": 1.0}}, "model.word_dropout"),
    ({"model": {"d_model": 100, "n_heads": 3}}, "model.n_heads"),
    ({"evaluate": {"beam_size": 0}}, "evaluate.beam_size"),
    ({"evaluate": {"max_len_a": -1.0}}, "evaluate.max_len_a"),
    ({"evaluate": {"max_len_b": 0}}, "evaluate.max_len_b"),
    ({"data": {"source": "github"}}, "data.source"),
    ({"train": {"max_steps": True}}, "train.max_steps"),
    ({"mlflow": {"enabled": "yes"}}, "mlflow.enabled"),
    ({"train": {"lr": float("nan")}}, "train.lr"),
    ({"data": {"source": "jsonl"}}, "data.jsonl.train"),
    ({"tokenize": {"string_placeholders": "yes"}}, "tokenize.string_placeholders"),
    ({"train": {"ema_decay": 1.0}}, "train.ema_decay"),
    ({"train": {"ema_decay": -0.5}}, "train.ema_decay"),
    ({"evaluate": {"rerank": "python"}}, "evaluate.rerank"),
    ({"evaluate": {"rerank": "syntax"}, "data": {"source": "concode"}}, "evaluate.rerank"),
])
def test_out_of_range_values_name_their_key(raw, key):
    assert any(p.startswith(key + ":") for p in problems_of(raw))


def test_every_problem_is_reported_at_once():
    assert len(problems_of({"train": {"lr": "x", "clip_norm": -1.0}, "seed": -5, "bogus": 1})) == 4


@pytest.mark.parametrize("stage", ["download", "tokenize", "train", "evaluate", "export"])
def test_a_stage_with_bad_params_exits_2_naming_the_key_before_any_work(tmp_path, stage):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["lr"] = "abc"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", f"pipeline.{stage}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "train.lr: expected float, got 'abc'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_missing_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "params.yaml")


def test_the_declared_defaults_are_the_values_params_yaml_runs_with():
    """One source of defaults: `nmt params` and a key left out of params.yaml give what a run uses."""
    in_file = flatten(yaml.safe_load((REPO / "params.yaml").read_text()))
    declared = {key: eval(default) for key, default, _ in describe()}  # repr() of each default
    assert {k: v for k, v in in_file.items() if declared[k] != v} == {}
