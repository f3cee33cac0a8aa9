"""benchmarks.profiles on tiny shapes: each missed target's profile adds up, its bounds follow from it,
a section without its inputs says why, and the report renders the file. No timing targets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import profiles
from nmt import report
from nmt.config import ModelConfig
from nmt.decoding.translator import Translator
from nmt.flops import measure_peak_flops, train_step_flops

from .conftest import synthetic_pairs, write_jsonl

# The benchmarks' layout (pre-LN, dropout on, copy off) at a size that profiles in a second.
TINY = ModelConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ff=64, dropout=0.1, max_len=64, copy=False)
TINY_VOCAB, TINY_BATCH, LENGTHS = 60, 4, (6, 10)
INT8_OP = "quantized::linear_dynamic"


@pytest.fixture(scope="module")
def sections(trained_tiny_export: Path, tmp_path_factory) -> dict:
    """Every section, run once in quick mode on tiny shapes (the int8 one on the trained fixture export)."""
    data = write_jsonl(tmp_path_factory.mktemp("profiles") / "test.jsonl", synthetic_pairs(12, seed=6))
    peak = measure_peak_flops(torch.device("cpu"), n=128, repeats=2, warmup_s=0.05)
    return {
        "training": profiles.training(True, lengths=LENGTHS, peak=peak, cfg=TINY, vocab=TINY_VOCAB, batch=TINY_BATCH),
        "beam_vs_ctranslate2": profiles.beam_vs_ctranslate2(True, batch=4, beam=2, cfg=TINY, vocab=TINY_VOCAB, steps=4),
        "int8": profiles.int8(True, trained_tiny_export, data, n=12),
    }


def check_breakdown(b: dict) -> None:
    """Matmuls + the rest = the operators' time, within the profiled wall time; shares in [0, 1]; top ops ranked."""
    assert b["matmul_ms"] + b["rest_ms"] == pytest.approx(b["op_ms"], abs=2e-3)
    assert 0 < b["matmul_ms"] <= b["op_ms"] <= b["profiled_wall_ms"] * 1.01  # one thread records them all
    assert b["outside_ops_ms"] == pytest.approx(b["profiled_wall_ms"] - b["op_ms"], abs=2e-3)
    assert 0 < b["matmul_share"] <= b["op_share"] <= 1.01
    assert b["wall_ms"] > 0
    assert b["profiler_inflation"] == pytest.approx(b["profiled_wall_ms"] / b["wall_ms"], rel=0.01, abs=1e-3)
    top = b["top_ops"]
    assert 0 < len(top) <= profiles.TOP_OPS and [o["ms"] for o in top] == sorted((o["ms"] for o in top), reverse=True)
    assert all(0 <= o["share"] <= 1 for o in top) and sum(o["share"] for o in top) <= b["op_share"] + 1e-3


def test_each_training_step_splits_into_matmuls_and_the_rest(sections):
    t = sections["training"]
    assert list(t["by_length"]) == [str(n) for n in LENGTHS] and t["runs"] == profiles.QUICK_RUNS
    for length, r in zip(LENGTHS, t["by_length"].values()):
        check_breakdown(r["ours"])
        check_breakdown(r["torch"])
        # ours with no time outside its matmuls can only be faster than ours as it is
        assert r["bound_vs_torch"] >= r["speedup_vs_torch"] > 0
        assert r["gap"] and all(g["op"] not in profiles.MATMULS for g in r["gap"])
        assert [g["ours_ms"] for g in r["gap"]] == sorted((g["ours_ms"] for g in r["gap"]), reverse=True)
        m = r["mfu"]
        assert m["model_flops"] == train_step_flops(TINY, TINY_VOCAB, TINY_BATCH, length, length)
        assert m["executed_matmul_flops"] > 0
        assert m["matmul_share_of_step"] == pytest.approx(r["ours"]["matmul_share"], abs=1e-4)
        assert m["mfu"] == pytest.approx(m["matmul_share_of_step"] * m["matmul_efficiency"] * m["useful_share"],
                                         rel=0.01)
        assert m["mfu_if_only_matmuls"] >= m["mfu"] * 0.99  # the matmul share is at most 1


def test_beam_search_is_profiled_beside_ctranslate2_at_the_same_work(sections):
    pytest.importorskip("ctranslate2", reason="CTranslate2 is not installed (`make install` installs it)")
    b = sections["beam_vs_ctranslate2"]
    assert (b["sources"], b["beam"], b["output_tokens"]) == (4, 2, 4)
    for kind in ("fp32", "int8"):
        r = b[kind]
        check_breakdown(r["ours"])
        assert r["ctranslate2_wall_ms"] > 0 and r["ctranslate2_setting"].endswith("max_batch_size all")
        assert r["ratio"] == pytest.approx(r["ctranslate2_wall_ms"] / r["ours"]["wall_ms"], rel=0.01)
        assert r["bound_matmul_only"] >= r["bound_no_overhead"] >= r["ratio"] * 0.99
    assert INT8_OP in {o["op"] for o in b["int8"]["ours"]["top_ops"]}  # the int8 search really ran int8 linears
    assert INT8_OP not in {o["op"] for o in b["fp32"]["ours"]["top_ops"]}


def test_beam_search_section_says_why_without_ctranslate2(monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # what an environment without the package sees
    r = profiles.beam_vs_ctranslate2(True, batch=2, beam=2, cfg=TINY, vocab=TINY_VOCAB, steps=2)
    assert r == {"skipped": "not run: CTranslate2 is not installed: `pip install ctranslate2` "
                            "(or `make install`, which installs the dev extra)"}


def test_int8_profile_gives_the_linear_share_and_its_amdahl_bound(sections):
    r = sections["int8"]
    assert r["n"] == 12 and r["decoding"]["beam_size"] >= 1
    for kind in ("fp32", "int8"):
        check_breakdown(r[kind])
        assert 0 < r[kind]["linear_share"] < 1 and r[kind]["linear_ms"] <= r[kind]["profiled_wall_ms"]
    assert r["amdahl_bound"] == pytest.approx(1 / (1 - r["fp32"]["linear_share"]), rel=0.01)
    assert r["amdahl_bound"] >= 1
    assert r["linear_time_ratio"] == pytest.approx(r["int8"]["linear_ms"] / r["fp32"]["linear_ms"], rel=0.01)
    assert INT8_OP in {o["op"] for o in r["int8"]["top_ops"]}
    assert r["speedup"] > 0


def test_int8_section_says_which_command_makes_its_inputs(tmp_path):
    r = profiles.int8(True, tmp_path / "models/export", tmp_path / "test.jsonl")
    assert r == {"skipped": f"not run: {tmp_path}/models/export/config.json not found "
                            "(make repro writes it, or pass --model / --data)"}


def test_linear_marks_cover_every_quantizable_layer_and_go_away(trained_tiny_export):
    translator = Translator.from_pretrained(trained_tiny_export, device="cpu", quantize="int8")
    model = translator.model
    with profiles.marked_linears(model):
        p = profiles.profile_ops(lambda: translator.translate(["print x"]), 1)
    assert p.ranges[profiles.LINEAR_MARK] > 0
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_the_results_file_renders_as_the_docs_table(sections, tmp_path):
    command = ["python", "-m", "benchmarks.profiles", "--quick"]
    result = profiles.record(sections, quick=True, seconds=12.5, command=command, root=Path(__file__).parents[1])
    assert result["command"] == " ".join(command) and len(result["commit"]) == 40 and result["machine"]["cores"]
    (tmp_path / "results").mkdir()
    (tmp_path / report.PROFILES).write_text(json.dumps(result))
    table = report.profiles(tmp_path)
    head = sections["training"]["by_length"][str(LENGTHS[-1])]
    assert table.startswith("| miss (this run) | what the profile shows | bound |")
    assert f"**{head['bound_vs_torch']:.2f}×** with nothing outside our matmuls" in table
    assert f"**{head['mfu']['mfu_if_only_matmuls']:.1%}** for a step of nothing but its matmuls" in table
    assert f"**{sections['int8']['amdahl_bound']:.2f}×** with infinitely fast linear layers" in table
    assert "`python -m benchmarks.profiles --quick` at commit" in table
    beam = sections["beam_vs_ctranslate2"]
    if "skipped" in beam:
        assert beam["skipped"] in table
    else:
        assert f"**{beam['fp32']['bound_matmul_only']:.2f}×** with matmuls only" in table
    sections_skipped = {**result, "int8": {"skipped": "not run: models/export/config.json not found"}}
    (tmp_path / report.PROFILES).write_text(json.dumps(sections_skipped))
    assert "| int8 decoding | not run: models/export/config.json not found |  |" in report.profiles(tmp_path)
