"""Int8 decoding (nmt.decoding.quantize): really int8 linears, real outputs, bad values refused clearly."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from nmt.cli import app
from nmt.config import ModelConfig
from nmt.decoding.quantize import quantize, quantized_linears
from nmt.decoding.translator import Translator
from nmt.errors import ModelFileError
from nmt.model import Transformer

from .conftest import synthetic_pairs, write_jsonl

runner = CliRunner()


def float_linears(model: nn.Module) -> int:
    return sum(type(m) is nn.Linear for m in model.modules())


def test_int8_swaps_every_linear_and_projects_the_output_through_an_int8_copy_of_the_table(trained_tiny_export):
    fp32 = Translator.from_pretrained(trained_tiny_export, device="cpu")
    linears = float_linears(fp32.model)
    assert linears > 0 and fp32.model.output_projection is None  # float32: tied to the embedding
    int8 = Translator.from_pretrained(trained_tiny_export, device="cpu", quantize="int8")
    assert int8.quantize == "int8"
    # every linear layer, the pointer-generator's 3 among them, and the output projection
    assert quantized_linears(int8.model) == linears + 1 and float_linears(int8.model) == 0
    assert quantized_linears(int8.model.pointer) == 3
    # The lookup keeps the float32 table; the projection is its int8 copy, one scale per vocabulary row.
    assert int8.model.embed.weight.dtype == torch.float32
    assert torch.equal(int8.model.embed.weight, fp32.model.embed.weight)
    weight = int8.model.output_projection.weight()  # (V, D) int8
    assert weight.qscheme() == torch.per_channel_affine and weight.q_per_channel_scales().numel() == weight.size(0)
    table = fp32.model.embed.weight
    assert (weight.dequantize() - table).abs().max() <= weight.q_per_channel_scales().max() / 2 + 1e-6
    h = torch.randn(2, 3, table.size(1))
    assert torch.allclose(int8.model.logits(h), fp32.model.logits(h), atol=0.1 * fp32.model.logits(h).abs().max().item())
    assert quantized_linears(fp32.model) == 0


def test_int8_translates_like_the_float_model_on_a_trained_model(trained_tiny_export):
    texts = [p["nl"] for p in synthetic_pairs(40, seed=5)]
    refs = [p["code"] for p in synthetic_pairs(40, seed=5)]
    fp32 = Translator.from_pretrained(trained_tiny_export, device="cpu").translate(texts, beam_size=3)
    int8 = Translator.from_pretrained(trained_tiny_export, device="cpu", quantize="int8").translate(texts, beam_size=3)
    assert len(int8) == len(texts) and all(isinstance(t.text, str) and t.text for t in int8)
    fp32_right = sum(t.text == r for t, r in zip(fp32, refs))
    assert fp32_right >= 30, "the fixture must have learned the templates for the comparison to mean anything"
    # int8 weights move scores a little, not the answers of a model that has learned them
    assert sum(a.text == b.text for a, b in zip(fp32, int8)) >= 36
    assert any(abs(a.score - b.score) > 0 for a, b in zip(fp32, int8)), "int8 scores equal to float32's: not quantized"


def test_generate_and_evaluate_take_quantize_int8(trained_tiny_export, tmp_path):
    result = runner.invoke(app, ["generate", "--model", str(trained_tiny_export), "--quantize", "int8",
                                 "return the sum of x and y", "print value"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2 and all(result.stdout.splitlines())
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(8, seed=1))
    result = runner.invoke(app, ["evaluate", "--model", str(trained_tiny_export), "--data", str(data),
                                 "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 8


@pytest.mark.parametrize("command", ["generate", "evaluate"])
def test_a_bad_quantize_value_exits_2_naming_the_flag_and_the_choices(trained_tiny_export, tmp_path, command):
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(2, seed=1))
    args = ["print x"] if command == "generate" else ["--data", str(data)]
    result = runner.invoke(app, [command, "--model", str(trained_tiny_export), "--quantize", "int4", *args])
    assert result.exit_code == 2
    assert "--quantize must be one of none, int8, got 'int4'" in result.output and "Traceback" not in result.output


def test_the_library_refuses_a_bad_value_before_reading_weights(tmp_path):
    with pytest.raises(ValueError, match="quantize must be one of none, int8, got 'fp16'"):
        Translator.from_pretrained(tmp_path / "no-such-model", quantize="fp16")


def test_int8_refuses_a_model_off_the_cpu_saying_to_load_it_there():
    """The int8 kernels are CPU-only; a model on another device (meta here: no GPU needed) is refused."""
    model = Transformer(ModelConfig(d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ff=32), 20).to("meta")
    with pytest.raises(ModelFileError, match="CPU only.*--device cpu"):
        quantize(model, "int8")
    assert float_linears(model) > 0  # left as it was


def test_the_int8_benchmark_scores_both_decodes_of_the_same_inputs(trained_tiny_export, tmp_path):
    from benchmarks.int8 import int8_decoding

    data = write_jsonl(tmp_path / "test.jsonl", synthetic_pairs(40, seed=6))
    r = int8_decoding(trained_tiny_export, data, quick=True)
    i8 = r["int8"]
    assert i8["n"] == 40 and i8["fp32"]["exact_match"] >= 75  # the fixture knows its templates
    assert r["int8_exact_match_drop"] == pytest.approx(i8["fp32"]["exact_match"] - i8["int8"]["exact_match"], abs=0.01)
    assert r["int8_decode_speedup"] == pytest.approx(i8["int8"]["tok_s"] / i8["fp32"]["tok_s"], rel=0.01)
    assert all(i8[k]["output_tokens"] > 40 and i8[k]["seconds"] > 0 for k in ("fp32", "int8"))


def test_the_int8_benchmark_says_why_it_did_not_run_without_a_model(tmp_path):
    from benchmarks.int8 import int8_decoding

    r = int8_decoding(tmp_path / "models/export", tmp_path / "test.jsonl", quick=True)
    assert r == {"int8": f"not run: {tmp_path}/models/export/config.json not found "
                         "(make repro writes it, or pass --model / --data)"}


REPO = Path(__file__).resolve().parents[1]


def test_the_decode_ab_benchmark_times_two_commits_on_the_same_work(trained_tiny_export, tmp_path):
    """HEAD against itself, each in its own worktree and worker: the same outputs, both timed."""
    from benchmarks.decode_ab import compare

    data = write_jsonl(tmp_path / "test.jsonl", synthetic_pairs(12, seed=6))
    r = compare("HEAD", "HEAD", trained_tiny_export, data, n=12, rounds=2, quantize=["none", "int8"], repo=REPO)
    for how in ("none", "int8"):
        assert r[how]["same_outputs"] is True and r[how]["old_s"] > 0 and r[how]["new_s"] > 0
        assert r[how]["speedup"] == pytest.approx(r[how]["old_s"] / r[how]["new_s"], rel=0.01)
    worktrees = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True).stdout
    assert "decode-ab-" not in worktrees  # removed after the run


def test_the_decode_ab_benchmark_names_a_commit_it_cannot_check_out(trained_tiny_export, tmp_path, capsys):
    from benchmarks.decode_ab import compare

    data = write_jsonl(tmp_path / "test.jsonl", synthetic_pairs(4, seed=6))
    with pytest.raises(SystemExit) as exit_:
        compare("HEAD", "no-such-commit", trained_tiny_export, data, n=4, rounds=1, quantize=["none"], repo=REPO)
    assert exit_.value.code == 2
    assert "cannot check out 'no-such-commit'" in capsys.readouterr().err
    worktrees = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True).stdout
    assert "decode-ab-" not in worktrees  # the first commit's worktree is removed too
