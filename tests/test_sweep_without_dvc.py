"""benchmarks/sweep.py: variants of a recipe run through the real stages where DVC is not installed (the GPU machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import sweep

from .conftest import synthetic_pairs, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_nest_and_read_values_as_yaml():
    assert sweep.parse_overrides(["train.lr=1e-3", "model.copy=true", "export.name=x"]) == {
        "train": {"lr": 1e-3}, "model": {"copy": True}, "export": {"name": "x"}}
    with pytest.raises(SystemExit, match="not KEY=VALUE"):
        sweep.parse_overrides(["train.lr"])


def test_a_variant_with_a_bad_key_stops_before_any_run(tmp_path):
    with pytest.raises(Exception, match="bogus"):
        sweep.variant_params({}, {}, {"train": {"bogus": 1}})
    params = sweep.variant_params(sweep.load_recipe("django", ROOT), {}, {"tokenize": {"rare_words": 3}})
    assert params["tokenize"]["rare_words"] == 3 and params["data"]["source"] == "django"
    assert params["mlflow"]["enabled"] is False  # a sweep never writes into the project's MLflow store


def test_two_variants_run_the_stages_and_tabulate_their_scores(tmp_path):
    data = tmp_path / "data"
    for split, n, seed in (("train", 300, 0), ("dev", 20, 1), ("test", 10, 2)):
        write_jsonl(data / f"{split}.jsonl", synthetic_pairs(n, seed))
    common = ["data.source=jsonl", *(f"data.jsonl.{s}={data / s}.jsonl" for s in ("train", "dev", "test")),
              "model.d_model=32", "model.d_ff=64", "model.enc_layers=1", "model.dec_layers=1",
              "train.max_steps=4", "train.eval_every=4", "train.eval_examples=10", "train.threads=1",
              "evaluate.beam_size=1", "mlflow.enabled=true"]  # the sweep turns MLflow off whatever it is told
    out = tmp_path / "sweep.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.sweep", "none", "--root", str(tmp_path / "runs"), "--jobs", "2",
         "--out", str(out), "--set", *common, "--variant", "a", "--variant", "b", "train.lr=3e-3"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = {r["name"]: r for r in json.loads(out.read_text())}
    assert set(results) == {"a", "b"}
    for r in results.values():
        assert r["run"]["steps"] == 4 and 0.0 <= r["eval"]["exact_match"] <= 100.0
    assert "| a |" in proc.stdout and "| b |" in proc.stdout
    assert not (tmp_path / "runs" / "a" / "mlflow.db").exists()
