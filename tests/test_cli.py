"""`nmt` commands through typer's runner and as real subprocesses, good input and bad."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nmt.cli import app
from nmt.translator import Translator

from .conftest import synthetic_pairs, write_jsonl

runner = CliRunner()


def test_generate_prints_one_translation_per_input(tiny_export):
    result = runner.invoke(app, ["generate", "--model", str(tiny_export), "--max-len", "8",
                                 "return the sum of x and y", "print value"])
    assert result.exit_code == 0, result.output
    expected = Translator.from_pretrained(tiny_export, device="cpu").translate(
        ["return the sum of x and y", "print value"], max_len_b=8)
    assert result.stdout.split("\n")[:2] == [t.text for t in expected]


def test_generate_reads_stdin_one_input_a_line(tiny_export):
    result = runner.invoke(app, ["generate", "--model", str(tiny_export), "--max-len", "5"],
                           input="print x\n\nreturn the length of items\n")
    assert result.exit_code == 0, result.output
    expected = Translator.from_pretrained(tiny_export, device="cpu").translate(
        ["print x", "", "return the length of items"], max_len_b=5)
    assert result.stdout == "".join(t.text + "\n" for t in expected)


def test_generate_n_best_prints_scores_best_first(tiny_export):
    result = runner.invoke(app, ["generate", "--model", str(tiny_export), "--beam", "3", "--n-best", "2",
                                 "--max-len", "6", "print x"])
    assert result.exit_code == 0, result.output
    lines = [l for l in result.stdout.splitlines() if l]
    scores = [float(l.split("\t")[0]) for l in lines]
    assert len(scores) == 2 and scores[0] >= scores[1]


@pytest.mark.parametrize("args, message", [
    (["--beam", "0"], "--beam"),
    (["--beam", "2", "--n-best", "3"], "--n-best"),
    (["--device", "tpu"], "--device"),
])
def test_generate_bad_options_exit_2_naming_the_option(tiny_export, args, message):
    result = runner.invoke(app, ["generate", "--model", str(tiny_export), *args, "x"])
    assert result.exit_code == 2
    assert message in result.output


def test_generate_with_a_missing_model_file_names_the_file(tiny_export, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model.safetensors", "config.json"):
        (broken / name).write_bytes((tiny_export / name).read_bytes())
    result = runner.invoke(app, ["generate", "--model", str(broken), "x"])
    assert result.exit_code == 2
    assert "tokenizer.json" in result.output


def test_generate_with_truncated_weights_is_a_clear_error(tiny_export, tmp_path):
    broken = tmp_path / "truncated"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (broken / name).write_bytes((tiny_export / name).read_bytes())
    (broken / "model.safetensors").write_bytes((tiny_export / "model.safetensors").read_bytes()[:100])
    result = runner.invoke(app, ["generate", "--model", str(broken), "x"])
    assert result.exit_code == 2
    assert "model.safetensors" in result.output and "Traceback" not in result.output


def test_evaluate_scores_a_file_and_writes_predictions(tiny_export, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(6, seed=1))
    out = tmp_path / "pred.jsonl"
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_export), "--data", str(data),
                                 "--output", str(out), "--max-len", "8"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["n"] == 6 and {"bleu", "exact_match", "chrf", "codexglue_bleu", "syntax_valid"} <= set(scores)
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 6 and all("prediction" in r for r in rows)


def test_evaluate_bad_data_names_file_and_line(tiny_export, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"nl": "a", "code": "b"}\n{"nl": "a"}\n')
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_export), "--data", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:2" in result.output and "code" in result.output


def test_nmt_console_script_runs_as_a_subprocess(tiny_export):
    exe = Path(sys.executable).parent / "nmt"
    proc = subprocess.run([str(exe), "generate", "--model", str(tiny_export), "--max-len", "4", "print x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) >= 1
    proc = subprocess.run([str(exe), "generate", "--model", "/nonexistent", "x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "/nonexistent" in proc.stderr and "Traceback" not in proc.stderr


def test_params_command_lists_every_option():
    result = runner.invoke(app, ["params"])
    assert result.exit_code == 0
    assert "train.lr" in result.stdout and "data.django.local_dir" in result.stdout
