"""The GPU benchmark of issue 26 (benchmarks/gpu.sh), run on the CPU with tiny shapes: Transformer-base's
variants and MFU, the recipes' tokens/s on their real configs and data, the merge into results.json, and the
README's GPU block both ways. No timing targets: these check that every code path runs and records what it
claims; the figures themselves come from a GPU (docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks import gpu_results, recipe_speed, transformer_base
from benchmarks.__main__ import PARTS
from benchmarks.__main__ import main as bench_main
from nmt import report
from nmt.errors import ConfigError, DataError
from nmt.flops import train_step_flops

from .conftest import REPO

CPU = torch.device("cpu")
SCRIPT = REPO / "benchmarks/gpu.sh"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> Path:
    """gpu.sh's CPU dry mode: tiny shapes, `make bench` with every part skipped but its peaks, the default
    recipe on synthetic batches; what it leaves in $OUT."""
    out = tmp_path_factory.mktemp("gpu_out")
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "OUT": str(out), "PYTHON": sys.executable,
           "WHEELS": str(out / "no-wheels"), "BENCH_SKIP": ",".join(PARTS), "RECIPES": "default",
           "RECIPE_DATA": "synthetic"}
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "exit 0" in proc.stdout and "exit 1" not in proc.stdout, proc.stdout
    return out


def test_the_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


# --------------------------------------------------------------------------- Transformer-base
def test_transformer_base_records_every_variant_with_its_mfu(dry_run: Path):
    r = json.loads((dry_run / "transformer_base.json").read_text())
    shape = transformer_base.Shape.of(quick=True)
    assert r["quick"] and r["precision"] == "bf16" and r["peak_flops_dtype"] == "bfloat16"
    assert r["theoretical_peak_flops"] is None  # a CPU: no datasheet figure is assumed
    assert list(r["variants"]) == [v.name for v in transformer_base.default_variants(CPU)] == ["eager-16k", "eager-32k"]
    for name, v in r["variants"].items():
        factor = transformer_base.BY_NAME[name].batch_factor
        assert v["batch"] == shape.batch * factor and v["tokens"] == v["batch"] * shape.length
        assert v["step_flops"] == train_step_flops(shape.model, shape.vocab, v["batch"], shape.length, shape.length)
        assert 0 < v["mfu"] <= 1
        assert v["mfu"] == pytest.approx(v["step_flops"] / v["step_s"] / r["peak_flops"], rel=1e-3)
        assert v["tok_s"] == pytest.approx(v["tokens"] / v["step_s"], rel=2e-3)  # step_s is recorded rounded
    best = max(r["variants"], key=lambda n: r["variants"][n]["mfu"])
    assert (r["best"], r["best_mfu"]) == (best, r["variants"][best]["mfu"])
    assert r["skipped"] == {} and r["failed"] == {}


def test_a_failing_variant_is_recorded_and_the_budget_skips_the_rest(tmp_path: Path):
    out = tmp_path / "tb.json"
    bad = transformer_base.Variant("bad-mode", 1, "no-such-mode")  # torch.compile refuses the mode
    r = transformer_base.run(CPU, quick=True, variants=[bad], budget_s=600, out=out)
    assert "no-such-mode" in r["failed"]["bad-mode"] and r["variants"] == {} and r["best"] is None
    assert json.loads(out.read_text()) == r
    r = transformer_base.run(CPU, quick=True, variants=list(transformer_base.VARIANTS[:2]), budget_s=-1)
    assert set(r["skipped"]) == {"eager-16k", "eager-32k"} and r["variants"] == {}


def test_an_unknown_variant_is_named_with_the_known_ones(capsys):
    with pytest.raises(SystemExit) as e:
        transformer_base.main(["--device", "cpu", "--variants", "eager-16k,turbo"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "turbo" in err and "compile-32k" in err


# --------------------------------------------------------------------------- the recipes
def test_each_recipe_is_params_yaml_with_the_recipes_keys():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    django = yaml.safe_load((REPO / "recipes/django.yaml").read_text())
    default, recipe = recipe_speed.recipe_of("default", REPO), recipe_speed.recipe_of("django", REPO)
    assert default.train.batch_tokens == params["train"]["batch_tokens"]
    assert recipe.train.batch_tokens == django["train"]["batch_tokens"]
    assert recipe.train.rdrop == django["train"]["rdrop"] != default.train.rdrop  # a key the recipe changes
    assert recipe.model.dropout == django["model"]["dropout"] and recipe.model.d_model == params["model"]["d_model"]
    assert default.train.precision == params["train"]["precision"]  # a key the recipe leaves keeps params.yaml's
    assert recipe.train.precision == django["train"]["precision"] == "bf16"


def test_set_changes_a_setting_over_the_recipe_and_an_unknown_key_is_named():
    lever = recipe_speed.recipe_of("django", REPO, {"tokenize": {"neighbour_code": True}})
    recipe = recipe_speed.recipe_of("django", REPO)
    assert lever.tokenize.neighbour_code and not recipe.tokenize.neighbour_code
    assert lever.model == recipe.model and lever.train == recipe.train  # the rest is the recipe's
    assert recipe_speed.recipe_of("default", REPO, {"train": {"lr": 0.01}}).train.lr == 0.01
    with pytest.raises(ConfigError, match="tokenize.neighbour_cod"):
        recipe_speed.recipe_of("django", REPO, {"tokenize": {"neighbour_cod": True}})


def test_an_unknown_set_key_exits_2_naming_it(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as e:
        recipe_speed.main(["--device", "cpu", "--recipes", "django", "--set", "model.d_modle=64"])
    assert e.value.code == 2 and "model.d_modle" in capsys.readouterr().err


def test_a_recipe_is_timed_on_its_real_tokenized_data(monkeypatch):
    monkeypatch.chdir(REPO)
    r = recipe_speed.run(CPU, ["django"], warmup=0, steps=1, data="real")["recipes"]["django"]
    stats_vocab = r["model"]["vocab"]
    assert r["data"].startswith("real: django train split") and f"vocabulary {stats_vocab:,}" in r["data"]
    django = yaml.safe_load((REPO / "recipes/django.yaml").read_text())
    assert r["batch_tokens"] == django["train"]["batch_tokens"] and r["model"]["copy"] is True
    assert r["precision"] == "bf16" and r["peak_flops_dtype"] == "bfloat16"  # the recipe's, its peak in that dtype
    assert r["compile"] is False  # train.compile is read: the recipe leaves it off
    assert 0 < r["tokens"] <= r["batch_tokens"] and r["tok_s"] == pytest.approx(r["tokens"] / r["seconds"], rel=2e-3)
    assert 0 < r["mfu"] <= 1


def test_synthetic_batches_say_so(dry_run: Path):
    r = json.loads((dry_run / "recipes.json").read_text())["recipes"]["default"]
    assert r["data"].startswith("synthetic") and r["model"]["vocab"] == 8000  # tokenize.max_vocab
    assert r["batch_tokens"] == 2048 and r["steps"] == 1 and 0 < r["mfu"] <= 1


def test_step_times_are_split_by_whether_the_batch_shape_came_before():
    shapes = [(4, 10, 9), (8, 5, 4), (4, 10, 9), (2, 30, 20), (8, 5, 4), (2, 30, 20)]  # 2 warm-up, 4 timed
    split = recipe_speed.step_time_split(shapes, [0.010, 0.300, 0.020, 0.030], warmup=2)
    assert split == {"distinct_shapes": 3, "new_shape_steps": 1, "new_shape_step_ms": 300.0,
                     "repeat_shape_steps": 3, "repeat_shape_step_ms": 20.0}
    with pytest.raises(ValueError):  # a step without its shape is a bug, not a shorter median
        recipe_speed.step_time_split(shapes, [0.01], warmup=2)


def test_the_probe_runs_the_django_recipe_without_pinning_then_without_cudnn_attention(dry_run: Path):
    nopin = json.loads((dry_run / "probe-nopin.json").read_text())["recipes"]["django"]
    nocudnn = json.loads((dry_run / "probe-nocudnn.json").read_text())["recipes"]["django"]
    assert (nopin["pinned"], nopin["sdpa"]) == (False, "any") and nocudnn["sdpa"] == "no-cudnn"
    for r in (nopin, nocudnn):
        assert r["steps"] == 2 and r["new_shape_steps"] + r["repeat_shape_steps"] == 2
        assert 1 <= r["distinct_shapes"] <= 3  # one warm-up step and two timed ones


def test_an_unknown_recipe_exits_2_naming_the_known_ones(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as e:
        recipe_speed.main(["--device", "cpu", "--recipes", "nope"])
    assert e.value.code == 2 and "known: concode, django" in capsys.readouterr().err


# --------------------------------------------------------------------------- results.json
def test_collect_names_the_entry_after_the_device_and_records_missing_parts(dry_run: Path, tmp_path: Path):
    gpu = json.loads((dry_run / gpu_results.GPU_FILE).read_text())["gpu"]
    (name, entry), = gpu.items()
    assert name == entry["device"] == json.loads((dry_run / "transformer_base.json").read_text())["device"]
    bench = entry["bench"]
    assert bench["skipped"] == list(PARTS) and bench["peak_flops"] > 0 and "mfu" not in bench
    shutil.copy(dry_run / "transformer_base.json", tmp_path)  # the other parts did not finish
    partial = gpu_results.collect(tmp_path)[name]
    assert "was not written" in partial["recipes"]["missing"] and "was not written" in partial["bench"]["missing"]
    with pytest.raises(DataError, match="nothing was measured"):
        gpu_results.collect(tmp_path / "empty")


def test_merge_keeps_every_other_key(dry_run: Path, tmp_path: Path):
    path = tmp_path / "results.json"
    shutil.copy(REPO / "benchmarks/results.json", path)
    before = json.loads(path.read_text())
    gpu_results.main(["merge", str(dry_run / gpu_results.GPU_FILE), "--into", str(path)])
    other = {"Other GPU": {"device": "Other GPU"}}
    gpu_results.merge(path, other)
    after = json.loads(path.read_text())
    assert {k: v for k, v in after.items() if k != "gpu"} == {k: v for k, v in before.items() if k != "gpu"}
    assert set(after["gpu"]) == {*before.get("gpu", {}), *json.loads((dry_run / gpu_results.GPU_FILE).read_text())["gpu"],
                                 "Other GPU"}
    assert all(after["gpu"][name] == entry for name, entry in before.get("gpu", {}).items())  # the repo's own kept
    # A rerun of one part (PARTS=base): the parts it did not run keep the first run's figures.
    (name, entry), = json.loads((dry_run / gpu_results.GPU_FILE).read_text())["gpu"].items()
    rerun = {**entry, "recipes": {"missing": "recipes.json was not written"}, "transformer_base": {"best": None}}
    gpu_results.merge(path, {name: rerun})
    assert json.loads(path.read_text())["gpu"][name] == {**rerun, "recipes": entry["recipes"]}
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        gpu_results.merge(path, other)
    assert path.read_text() == "{not json"  # nothing half-written


def test_a_cpu_make_bench_run_keeps_the_gpu_entries(tmp_path: Path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"mfu": 0.5, "gpu": {"Some GPU": {"device": "Some GPU"}}}))
    bench_main(["--device", "cpu", "--quick", "--skip", ",".join(PARTS), "--out", str(path)])
    r = json.loads(path.read_text())
    assert r["gpu"] == {"Some GPU": {"device": "Some GPU"}} and "mfu" not in r and r["skipped"] == list(PARTS)
    with pytest.raises(SystemExit):
        bench_main(["--skip", "kv_cache,warp_drive", "--out", str(path)])


# --------------------------------------------------------------------------- the README's GPU block
def test_without_gpu_entries_the_readme_says_gpu_figures_are_pending(tmp_path: Path):
    (tmp_path / "benchmarks").mkdir()
    results = json.loads((REPO / "benchmarks/results.json").read_text())
    results.pop("gpu", None)
    (tmp_path / report.BENCH).write_text(json.dumps(results))
    assert report.gpu(tmp_path) == report.GPU_PENDING
    assert "make bench" in report.gpu(tmp_path / "nowhere")  # no results file: the command that writes it


def test_a_gpu_entry_renders_its_table(dry_run: Path, tmp_path: Path):
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(REPO / "benchmarks/results.json", tmp_path / report.BENCH)
    gpu_results.merge(tmp_path / report.BENCH, json.loads((dry_run / gpu_results.GPU_FILE).read_text())["gpu"])
    text = report.gpu(tmp_path)
    (name,) = json.loads((dry_run / gpu_results.GPU_FILE).read_text())["gpu"]
    entry = json.loads((tmp_path / report.BENCH).read_text())["gpu"][name]
    base, recipe = entry["transformer_base"], entry["recipes"]["recipes"]["default"]
    met = "met" if base["best_mfu"] >= 0.4 else "missed"
    assert f"**{base['best_mfu']:.1%}** ({base['best']}, {base['best_tok_s']:,} tok/s, " in text
    assert f"≥ 40 %: {met}" in text and "--quick" in text
    assert f"**{recipe['tok_s']:,}** (MFU {report._small_share(recipe['mfu'])}; synthetic batches)" in text
    assert f"on {entry['device']}, torch {entry['versions']['torch']}" in text
    assert "pending" not in text
    block = "<!-- report:gpu -->\n<!-- /report:gpu -->"  # as the README marks it
    assert report.render(block, tmp_path) == f"<!-- report:gpu -->\n{text}<!-- /report:gpu -->"
    readme = (REPO / "README.md").read_text()
    assert readme.index("<!-- report:gpu -->") < readme.index("<!-- /report:gpu -->")


def test_a_gpu_peak_timed_before_cuda_events_is_not_judged_against_the_target(dry_run: Path):
    entry = json.loads((dry_run / gpu_results.GPU_FILE).read_text())["gpu"]
    entry = next(iter(entry.values()))
    base = entry["transformer_base"]
    best = base["variants"][base["best"]]
    base |= {"best_mfu": 0.9, "theoretical_peak_flops": 4 * best["step_flops"] / best["step_s"]}  # a GPU's entry
    assert "≥ 40 %: met" in report.gpu_table(entry)  # timed with CUDA events: judged
    del base["peak_timing"]  # as the H200 run of 2026-11-30 wrote it
    text = report.gpu_table(entry)
    assert "≥ 40 %: not judged" in text and "met" not in text
    assert "of the datasheet's peak, 25.0%" in text
