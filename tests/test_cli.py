"""`nmt` commands through typer's runner and as real subprocesses, good input and bad."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nmt.cli import app
from nmt.decoding.translator import Translator

from .conftest import REPO, synthetic_pairs, write_jsonl

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
    (["--sample", "--top-p", "0"], "--top-p"),
    (["--sample", "--top-p", "1.5"], "--top-p"),
    (["--sample", "--temperature", "0"], "--temperature"),
    (["--sample", "--temperature", "nan"], "--temperature"),
    (["--sample", "--top-k", "-1"], "--top-k"),
    (["--sample", "--beam", "2"], "--beam"),
    (["--top-p", "0.9"], "--top-p"),  # sampling options need --sample
    (["--seed", "1"], "--seed"),
    (["--max-len", "0"], "--max-len"),
    (["--max-len-a", "-1"], "--max-len-a"),
    (["--length-penalty", "inf"], "--length-penalty"),
    (["--batch-size", "0"], "--batch-size"),
    (["--jsonl"], "--jsonl"),  # with a description as argument
])
def test_generate_bad_options_exit_2_naming_the_option(tiny_export, args, message):
    result = runner.invoke(app, ["generate", "--model", str(tiny_export), *args, "x"])
    assert result.exit_code == 2
    assert message in result.output


def translations(tiny_export, texts: list[str], **kwargs):
    return Translator.from_pretrained(tiny_export, device="cpu").translate(texts, **kwargs)


def test_generate_jsonl_echoes_each_object_with_code_score_and_n_best(tiny_export, tmp_path):
    rows = [{"nl": "print x", "id": 7}, {"nl": "return the sum of x and y", "tags": ["a"]}]
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")  # blank lines are skipped
    result = runner.invoke(app, ["generate", "--model", str(tiny_export), "--jsonl", "--input", str(data),
                                 "--sample", "--seed", "5", "--n-best", "3", "--max-len", "8"])
    assert result.exit_code == 0, result.output
    out = [json.loads(l) for l in result.stdout.splitlines()]
    expected = translations(tiny_export, [r["nl"] for r in rows], sample=True, seed=5, n_best=3, max_len_b=8)
    assert len(out) == 2
    for row, o, t in zip(rows, out, expected):
        assert o == {**row, "code": t.text, "score": pytest.approx(t.score),
                     "n_best": [{"code": c, "score": pytest.approx(sc)} for c, sc in t.n_best]}
        assert len(o["n_best"]) == 3


def test_generate_sampling_is_repeatable_with_a_seed_and_honours_the_length_options(tiny_export):
    args = ["generate", "--model", str(tiny_export), "--sample", "--seed", "1", "--top-k", "50", "--top-p", "0.95",
            "--temperature", "1.5", "--max-len", "2", "--max-len-a", "0.5", "print x", "return the length of items"]
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout
    expected = translations(tiny_export, ["print x", "return the length of items"], sample=True, seed=1, top_k=50,
                            top_p=0.95, temperature=1.5, max_len_a=0.5, max_len_b=2)
    assert first.stdout == "".join(t.text + "\n" for t in expected)


@pytest.mark.parametrize("stdin, where, what", [
    ('{"nl": "x"}\n{"nl": "y"\n', "stdin:2", "invalid JSON"),
    ('{"nl": "x"}\n\n{"text": "y"}\n', "stdin:3", "'nl'"),
    ('{"nl": 3}\n', "stdin:1", "'nl'"),
    ('["nl"]\n', "stdin:1", "object"),
    (b'{"nl": "x"}\n{"nl": "\xff"}\n', "stdin:2", "UTF-8"),
])
def test_generate_jsonl_bad_line_exits_2_naming_the_line(tiny_export, stdin, where, what):
    result = runner.invoke(app, ["generate", "--model", str(tiny_export), "--jsonl"], input=stdin)
    assert result.exit_code == 2
    assert where in result.stderr and what in result.stderr and "Traceback" not in result.output


# empty, blank, control characters (some of which str.splitlines would split on), emoji, 100 KB, bad UTF-8
HOSTILE = [b"", b"   \t ", "\x00\x07\x1b[31m\x1c\x85\u2028".encode(), "😀🎉 \u202e".encode(), b"x " * 50_000,
           b"\xff\xfe not utf-8", b"print x"]


def test_generate_survives_hostile_input_and_names_the_truncated_line(tiny_export):
    result = runner.invoke(app, ["generate", "--model", str(tiny_export), "--max-len", "3"],
                           input=b"\n".join(HOSTILE) + b"\n")
    assert result.exit_code == 0, result.output
    lines = [line.decode("utf-8", errors="replace") for line in HOSTILE]
    assert result.stdout == "".join(t.text + "\n" for t in translations(tiny_export, lines, max_len_b=3))
    warned = [line for line in result.stderr.splitlines() if "longer than" in line]
    assert warned == ["warning: stdin line 5: longer than the model's maximum source length; truncated"]
    assert "not valid UTF-8" in result.stderr and "Traceback" not in result.output


def test_generate_jsonl_keeps_one_output_per_hostile_input(tiny_export):
    texts = [line.decode("utf-8", errors="replace") for line in HOSTILE] + ["\udcff lone surrogate"]
    stdin = "".join(json.dumps({"nl": t}) + "\n" for t in texts)
    result = runner.invoke(app, ["generate", "--model", str(tiny_export), "--jsonl", "--max-len", "3"], input=stdin)
    assert result.exit_code == 0, result.output
    assert [json.loads(l)["nl"] for l in result.stdout.splitlines()] == texts
    assert "stdin line 5:" in result.stderr


@pytest.mark.parametrize("args, stdin, where", [
    (["print x", "x " * 500], None, "argument 2"),
    ([], "print x\n" + "x " * 500 + "\n", "stdin line 2"),
])
def test_generate_strict_refuses_an_overlong_input_naming_it(tiny_export, args, stdin, where):
    result = runner.invoke(app, ["generate", "--model", str(tiny_export), "--strict", *args], input=stdin)
    assert result.exit_code == 2
    assert where in result.stderr and "--strict" in result.stderr and result.stdout == ""


def test_progress_bar_only_for_many_inputs_on_a_terminal(monkeypatch):
    from nmt import cli

    assert cli._progress(1000).disable  # the runner's stderr is no terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert cli._progress(cli.PROGRESS_MIN_INPUTS).disable
    with cli._progress(cli.PROGRESS_MIN_INPUTS + 1) as bar:
        assert not bar.disable


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


def test_params_command_shows_the_values_a_run_would_use(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["max_steps"] = 4321
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    result = runner.invoke(app, ["params", "--params", str(tmp_path / "p.yaml")])
    assert result.exit_code == 0
    [line] = [l for l in result.stdout.splitlines() if l.startswith("train.max_steps ")]
    assert "4321" in line and "(built-in default" in line
    params["train"]["max_steps"] = "many"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    result = runner.invoke(app, ["params", "--params", str(tmp_path / "p.yaml")])
    assert result.exit_code == 2 and "train.max_steps" in result.output
