"""The whole DVC pipeline in a real temporary DVC repo, on a tiny params override."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nmt.config import DECODING_KEYS
from nmt.translator import Translator

from .conftest import REPO, synthetic_pairs, write_jsonl

TINY = {
    "data": {"source": "jsonl", "max_code_tokens": 64},
    "tokenize": {"min_freq": 1},
    "model": {"d_model": 32, "n_heads": 2, "enc_layers": 1, "dec_layers": 1, "d_ff": 64, "max_len": 64},
    "train": {"max_steps": 40, "batch_tokens": 600, "warmup_steps": 10, "lr": 3e-3, "eval_every": 20,
              "eval_max_len": 16, "threads": 1},
    "evaluate": {"max_len_b": 16, "n_examples": 3},
}


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) else v
    return out


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("pipeline")
    for name in ("nmt", "pipeline"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root)
    inputs = root / "inputs"
    for split, n, seed in (("train", 120, 0), ("dev", 12, 1), ("test", 12, 2)):
        write_jsonl(inputs / f"{split}.jsonl", synthetic_pairs(n, seed))
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    params["data"]["jsonl"] = {s: f"inputs/{s}.jsonl" for s in ("train", "dev", "test")}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "DVC_NO_ANALYTICS": "1"}
    run(["git", "init", "-q"], root, env)
    run(["dvc", "init", "-q"], root, env)
    run(["dvc", "repro"], root, env)
    return root, env


def test_repro_writes_every_declared_output(repo):
    root, _ = repo
    for path in ["data/raw/train.jsonl", "data/raw/stats.json", "data/tokenized/vocab.json",
                 "data/tokenized/train.safetensors", "models/best.safetensors", "models/best.json",
                 "metrics/train.json", "metrics/train_curve.csv", "plots/bleu.png", "metrics/eval.json",
                 "data/eval/predictions.jsonl", "plots/examples.md", "plots/examples.png",
                 "models/export/model.safetensors", "models/export/config.json",
                 "models/export/tokenizer.json", "models/export/README.md", "dvc.lock"]:
        assert (root / path).is_file(), path
    evaluation = json.loads((root / "metrics/eval.json").read_text())
    for key in ("bleu", "codexglue_bleu", "chrf", "exact_match", "n",
                "baseline_bleu", "baseline_exact_match"):
        assert key in evaluation
    assert evaluation["n"] == 12
    assert evaluation["beam_size"] > 1  # the shipped default decodes with beam search ...
    assert {"greedy_bleu", "greedy_exact_match"} <= set(evaluation)  # ... and greedy stands beside it
    predictions = [json.loads(l) for l in (root / "data/eval/predictions.jsonl").read_text().splitlines()]
    test = [json.loads(l) for l in (root / "inputs/test.jsonl").read_text().splitlines()]
    assert [p["nl"] for p in predictions] == [t["nl"] for t in test]  # one per test pair, in test order
    curve = (root / "metrics/train_curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,") and len(curve) == 3  # header + evaluations at steps 20 and 40


def test_second_repro_is_a_no_op(repo):
    root, env = repo
    proc = run(["dvc", "repro"], root, env)
    assert "up to date" in proc.stdout.lower()
    assert "Running stage" not in proc.stdout


def test_exported_model_loads_and_translates(repo):
    root, _ = repo
    translator = Translator.from_pretrained(root / "models/export", device="cpu")
    out = translator.translate(["print x"], max_len_b=8)
    assert isinstance(out[0].text, str)
    # The evaluate stage's decoding settings travel with the export, as its defaults.
    evaluate = yaml.safe_load((root / "params.yaml").read_text())["evaluate"]
    assert translator.decoding == {k: evaluate[k] for k in DECODING_KEYS}
    assert json.loads((root / "models/export/config.json").read_text())["decoding"]["beam_size"] == 4


def test_training_run_is_in_the_mlflow_store_with_params_and_metrics(repo):
    root, _ = repo
    db = sqlite3.connect(root / "mlflow.db")
    runs = db.execute("select run_uuid, status from runs").fetchall()
    assert len(runs) == 1 and runs[0][1] == "FINISHED"
    params = dict(db.execute("select key, value from params where run_uuid = ?", (runs[0][0],)).fetchall())
    assert params["model.d_model"] == "32" and params["train.max_steps"] == "40"
    keys = {k for (k,) in db.execute("select distinct key from metrics where run_uuid = ?", (runs[0][0],))}
    assert {"train_loss", "lr", "dev_loss", "dev_bleu", "dev_exact_match"} <= keys


def test_changing_an_evaluate_param_reruns_only_what_depends_on_it(repo):
    root, env = repo
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["evaluate"]["n_examples"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run(["dvc", "repro"], root, env)
    ran = {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")}
    # The example table changed; the scores did not, so export (which reads them) is skipped too.
    assert ran == {"evaluate"}
    assert len((root / "plots/examples.md").read_text().splitlines()) == 2 + 2


def test_the_levers_run_through_the_pipeline(repo):
    """String placeholders, weight averaging and reranking on: every stage reruns and uses them."""
    root, env = repo
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tokenize"]["string_placeholders"] = True
    params["train"]["ema_decay"] = 0.9
    params["evaluate"]["rerank"] = "syntax"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run(["dvc", "repro"], root, env)
    ran = {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"tokenize", "train", "evaluate", "export"}
    assert json.loads((root / "data/tokenized/vocab.json").read_text())["string_placeholders"] is True
    assert (root / "data/tokenized/literals.json").is_file()
    evaluation = json.loads((root / "metrics/eval.json").read_text())
    assert {"top1_exact_match", "greedy_exact_match", "exact_match"} <= set(evaluation)
    export = Translator.from_pretrained(root / "models/export", device="cpu")
    assert export.tokenizer.string_placeholders and export.decoding["rerank"] == "syntax"
