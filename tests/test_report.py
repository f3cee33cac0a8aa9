"""Every measured table of the README and docs/ is exactly what `make report` renders from the committed files."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
import yaml

from nmt import report, results
from nmt.recipes import command

from .conftest import REPO


def test_every_document_agrees_with_the_committed_result_files():
    documents = report.documents(REPO)
    sections = {m["name"] for path in documents for m in report.MARKER.finditer(path.read_text())}
    assert set(report.RENDERERS) <= sections, "a renderer whose table appears nowhere"
    stale = [str(p.relative_to(REPO)) for p in documents if report.render(p.read_text(), REPO) != p.read_text()]
    assert not stale, f"tables are stale in {stale}: run `make report` and commit the rendered files"


def copy_results(tmp_path: Path) -> Path:
    for path in (report.EVAL, report.TRAIN, report.CURVE, report.EXAMPLES, report.ABLATION, report.README,
                 report.PARAMS, report.PUBLISHED, report.BENCH, report.SCALING):
        if (REPO / path).is_file():
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / path, tmp_path / path)
    shutil.copytree(REPO / report.DOCS, tmp_path / report.DOCS)
    for path in (REPO / results.RESULTS).glob("*.json"):
        shutil.copy(path, tmp_path / results.RESULTS / path.name)
    return tmp_path


def test_a_changed_figure_changes_the_rendered_readme(tmp_path: Path):
    root = copy_results(tmp_path)
    evaluation = json.loads((root / report.EVAL).read_text())
    evaluation["exact_match"] += 12.3
    (root / report.EVAL).write_text(json.dumps(evaluation))
    text = (root / report.README).read_text()
    rendered = report.render(text, root)
    assert rendered != text and f"{evaluation['exact_match']:.1f}" in rendered
    report.main(root)
    assert (root / report.README).read_text() == rendered


def test_a_recipe_result_file_is_rendered_and_the_newest_one_wins(tmp_path: Path):
    root = copy_results(tmp_path)
    for path in (root / results.RESULTS).glob("django-*.json"):
        path.unlink()
    assert "make django" in report.django_results(root)  # no file: the command that writes it, no figure
    for day, em in ((dt.date(2026, 1, 2), 61.5), (dt.date(2026, 3, 4), 77.7)):
        (root / "metrics").mkdir(exist_ok=True)
        (root / "metrics/eval.json").write_text(json.dumps(
            {"split": "test", "exact_match": em, "bleu": 70.0, "chrf": 80.0, "syntax_valid": 99.0,
             "greedy_exact_match": 60.0, "greedy_bleu": 65.0, "greedy_chrf": 75.0, "greedy_syntax_valid": 95.0,
             "baseline_exact_match": 20.0, "baseline_bleu": 18.0, "baseline_chrf": 30.0, "baseline_syntax_valid": 100.0}))
        (root / "metrics/train.json").write_text(json.dumps({"split": "dev", "best_dev_bleu": 60.0,
                                                             "train_seconds": 5000.0}))
        (root / "metrics/train_curve.csv").write_text(
            "step,train_loss,dev_loss,dev_bleu,dev_exact_match\n1000,2.5,1.9,55.25,50.5\n")
        results.write_recipe_result("django", {"evaluate": {"beam_size": 10}}, ["dvc", "exp", "run"], 5500.0,
                                    root, day)
    table = report.django_results(root)
    assert "77.7" in table and "61.5" not in table and "beam 10" in table and "91 min 40 s" in table
    assert "`make django` at commit" in table  # nothing set beyond the recipe
    # a setting given on the command line beside the recipe's is the one the run decoded with
    newest = results.latest_result("django", root)
    result = json.loads(newest.read_text())
    result["command"] += ["-S", "evaluate.beam_size=10", "-S", "evaluate.beam_size=4"]
    newest.write_text(json.dumps(result))
    assert "beam 4" in report.django_results(root) and "beam 10" not in report.django_results(root)
    # ... and the footer says what ran: the settings beyond the recipe's own (a lever's run it adopted)
    assert "`make django EXP_ARGS='-S evaluate.beam_size=4'` at commit" in report.django_results(root)
    # a run stopped and resumed from its checkpoint says so beside its (summed) wall time
    assert "in two parts" not in report.django_results(root)
    result["wall_seconds"].update(dvc_exp_run=9000.0, resumed_after=3000.0)
    newest.write_text(json.dumps(result))
    footer = report.django_results(root)
    assert "the whole `dvc exp run` 150 min 00 s" in footer and "in two parts: stopped after 50 min 00 s and resumed" in footer
    assert "| 1,000 | 2.500 | 1.900 | 55.2 | 50.5 |" in report.django_curve(root)


def test_a_missing_result_file_renders_the_command_that_writes_it(tmp_path: Path):
    root = copy_results(tmp_path)
    (root / report.SCALING).unlink(missing_ok=True)
    assert report.scaling(root) == "Not measured yet: `bash benchmarks/ddp_scaling.sh` writes `results/scaling.json`.\n"


def test_an_unknown_section_is_an_error(tmp_path: Path):
    with pytest.raises(KeyError, match="report:nope"):
        report.render("<!-- report:nope -->\nx\n<!-- /report:nope -->\n", tmp_path)


def test_the_deployment_rows_show_each_figure_with_its_target():
    """int8 decoding and the served model (benchmarks/int8.py, serve_load.py) in the benchmarks table."""
    from nmt.report import benchmarks_table

    base = json.loads((REPO / "benchmarks/results.json").read_text())
    measured = base | {
        "int8_decode_speedup": 1.62, "int8_exact_match_drop": 1.3,
        "int8": {"n": 1000, "fp32": {"tok_s": 100.0, "exact_match": 58.7}, "int8": {"tok_s": 162.0, "exact_match": 57.4}},
        "serve_requests_per_s": 2.5, "serve_p50_ms": 3100.0, "serve_p99_ms": 5200.0, "serve_errors": 0,
        "serve_load": {"clients": 8, "seconds": 60.4, "requests": 151}, "serve_max_batch": 32, "serve_max_wait_ms": 10.0,
        "serve_unbatched": {"serve_requests_per_s": 1.25, "serve_p50_ms": 6200.0, "serve_p99_ms": 9100.0,
                            "serve_errors": 2, "serve_load": {"clients": 8, "seconds": 61.0, "requests": 76}},
        "serve_batching_speedup": 2.0, "serve_same_output": 0.9973}
    table = benchmarks_table(measured)
    assert "100 / 162" not in table and "162 / 100 = **1.62×** | ≥ 1.5×: met" in table
    assert "58.7 − 57.4 = **1.3** | ≤ 1.0 point: missed" in table
    assert "each decoded apart (before): requests/s, latency p50 / p99 | **1.25**/s, 6,200 / 9,100 ms" in table
    assert "up to 32, waiting ≤ 10 ms for them (after; the registered model): requests/s, latency p50 / p99 | " \
        "**2.50**/s, 3,100 / 5,200 ms" in table
    assert "| **2.00×**; 99.7% |" in table
    assert "**2** of 229 | 0: missed" in table  # errors of both runs, of all their requests
    # a results file from before batching shows what it has and says the comparison is not in it
    old = {k: v for k, v in measured.items() if k not in {"serve_unbatched", "serve_batching_speedup"}}
    assert "**2.50**/s, 3,100 / 5,200 ms" in benchmarks_table(old) and "decoded together: before / after | not in" \
        in benchmarks_table(old)
    # a run that could not measure them records why, in place of the figures
    unmeasured_keys = {"int8_decode_speedup", "int8_exact_match_drop", "serve_requests_per_s", "serve_p50_ms",
                       "serve_p99_ms", "serve_errors", "serve_batching", "serve_unbatched", "serve_max_batch", "serve_max_wait_ms",
                       "serve_batching_speedup", "serve_same_output"}
    stripped = {k: v for k, v in base.items() if k not in unmeasured_keys}
    unmeasured = benchmarks_table(stripped | {"int8": "not run: models/export/config.json not found"})
    assert "| int8 decoding: tok/s int8 / float32 | not run: models/export/config.json not found | ≥ 1.5× |" in unmeasured


def test_a_missing_profiles_file_renders_the_command_that_writes_it(tmp_path: Path):
    assert report.profiles(tmp_path) == ("Not measured yet: `python -m benchmarks.profiles` writes "
                                         "`results/profiles.json`.\n")


def test_a_lever_run_is_rendered_step_by_step_beside_the_recipe(tmp_path: Path):
    (tmp_path / "results").mkdir()
    assert "python -m nmt.recipes django --run -S" in report.django_levers(tmp_path)  # no files: the command
    recipe = json.loads(next((REPO / "results").glob("django-20*.json")).read_text())
    recipe["command"] = command("django", recipe["overrides"])
    (tmp_path / "results/django-2026-01-01.json").write_text(json.dumps(recipe))
    lever = json.loads(json.dumps(recipe))
    lever["command"] += ["-S", "model.d_model=384", "-S", "train.max_steps=2000", "train"]
    lever["curve"] = [dict(r, dev_exact_match=r["dev_exact_match"] + 0.5) for r in recipe["curve"][:2]]
    lever["metrics"]["train"]["train_tokens_per_s"] = recipe["metrics"]["train"]["train_tokens_per_s"] * 2
    (tmp_path / "results/lever-django-wide.json").write_text(json.dumps(lever))
    table = report.django_levers(tmp_path)
    assert "| `model.d_model=384`, `train.max_steps=2000` | training tok/s |" in table
    assert "(**2.00×**)" in table
    first, second = recipe["curve"][:2]
    assert (f"| step 1,000: dev exact match % / dev loss / dev BLEU | {first['dev_exact_match']:.1f} / "
            f"{first['dev_loss']:.3f} / {first['dev_bleu']:.1f} | {first['dev_exact_match'] + 0.5:.1f} /") in table
    assert f"step {second['step']:,.0f}:" in table and "step 3,000" not in table  # only the steps both ran
    # once the recipe adopts the lever, the lever file names the run it was measured against
    adopted = json.loads(json.dumps(recipe))
    adopted["command"] += ["-S", "model.d_model=384"]
    adopted["commit"] = "f" * 40
    adopted["curve"] = [dict(r, dev_exact_match=99.0) for r in recipe["curve"]]
    (tmp_path / "results/django-2026-02-01.json").write_text(json.dumps(adopted))
    (tmp_path / "results/django-fp32-2026-01-01.json").write_text(json.dumps(recipe))
    lever["baseline"] = "results/django-fp32-2026-01-01.json"
    (tmp_path / "results/lever-django-wide.json").write_text(json.dumps(lever))
    assert report.django_levers(tmp_path) == table


def test_a_stopped_lever_run_says_where_and_compares_speed_on_one_machine(tmp_path: Path):
    (tmp_path / "results").mkdir()
    recipe = json.loads(next((REPO / "results").glob("django-20*.json")).read_text())
    recipe["command"] = command("django", recipe["overrides"])
    (tmp_path / "results/django-2026-01-01.json").write_text(json.dumps(recipe))
    lever = json.loads(json.dumps(recipe))
    lever["command"] += ["-S", "tokenize.neighbour_code=true", "-S", "seed=7"]
    lever["curve"] = recipe["curve"][:3]
    lever["metrics"] = {}  # a stopped run wrote no metrics files
    lever["speed"] = {"machine": "Some CPU", "recipe_tok_s": 2000, "lever_tok_s": 1500}
    lever["stopped"] = {"at_step": 3000, "of_steps": 12000, "why": "behind at every step"}
    (tmp_path / "results/lever-django-neighbour.json").write_text(json.dumps(lever))
    table = report.django_levers(tmp_path)
    assert ("| `tokenize.neighbour_code=true`, `seed=7` | training tok/s on one machine (`benchmarks.recipe_speed`) "
            "| 2,000 (Some CPU) | 1,500 (**0.75×**) |") in table
    # a setting the baseline ran as params.yaml's value, listed by the lever's command only, changes nothing
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"seed": 7, "tokenize": {"neighbour_code": False}}))
    assert "| `tokenize.neighbour_code=true` | training tok/s on one machine" in report.django_levers(tmp_path)
    ran = recipe["run"]["train"]["steps"]
    assert f"| stopped | ran to step {ran:,} | at step 3,000 of 12,000: behind at every step |" in table
    assert "step 3,000:" in table and "step 4,000" not in table


def test_every_recipe_run_is_a_row_in_date_order_the_replaced_one_included(tmp_path: Path):
    (tmp_path / "results").mkdir()
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    assert "make django" in report.django_runs(tmp_path)  # no files: the command
    recipe = json.loads(next((REPO / "results").glob("django-20*.json")).read_text())
    recipe["command"] = command("django", recipe["overrides"])  # the recipe's settings only
    older = json.loads(json.dumps(recipe))
    older["date"], older["commit"] = "2026-01-01", "a" * 40
    older["command"] += ["-S", "evaluate.rerank_missing=1.5"]  # the run's own -S: the weights it decoded with
    older["run"]["train"] = {k: v for k, v in older["run"]["train"].items() if k != "precision"}  # before it was recorded
    older["metrics"]["train"] |= {"best_dev_exact_match": 60.04, "best_dev_bleu": 65.0}
    older["wall_seconds"] = {"dvc_exp_run": 6000.0, "train": 4800.0}  # no reverse model
    (tmp_path / "results/django-old-2026-01-01.json").write_text(json.dumps(older))
    (tmp_path / "results/django-2026-02-01.json").write_text(json.dumps(recipe | {"date": "2026-02-01"}))
    table = report.django_runs(tmp_path)
    old_row, new_row = (line for line in table.splitlines() if line.startswith("| `django-"))
    weights = yaml.safe_load((REPO / "params.yaml").read_text())["evaluate"] | recipe["overrides"].get("evaluate", {})
    weights |= {"rerank_missing": 1.5}
    shown = ", ".join(f"{weights[k]:g}" for k in ("rerank_missing", "rerank_unexplained", "rerank_repeated",
                                                   "rerank_reconstruction"))
    facts, ev = recipe["run"]["train"], recipe["metrics"]["eval"]
    best = f" (best {facts['best_step']:,})" if "best_step" in facts else ""
    tree = f"{ev['exact_match_ast']:.1f}" if "exact_match_ast" in ev else "–"
    # the setting beyond the recipe's own is named beside the file: what really ran
    assert old_row == (f"| `django-old-2026-01-01.json` `-S evaluate.rerank_missing=1.5` | aaaaaaa | fp32 | {facts['steps']:,}{best} | {shown} "
                       f"| 60.0 / 65.0 "
                       f"| {ev['exact_match']:.1f} / {tree} / {ev['bleu']:.1f} "
                       f"| 80 + 0 | 100 |")
    assert new_row.startswith(f"| `django-2026-02-01.json` | {recipe['commit'][:7]} | "
                              f"{recipe['run']['train'].get('precision', 'fp32')} |")


def test_a_days_recipe_runs_are_rows_in_the_order_they_ran(tmp_path: Path):
    (tmp_path / "results").mkdir()
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    recipe = json.loads(next((REPO / "results").glob("django-20*.json")).read_text()) | {"date": "2026-03-01"}
    recipe["command"] = command("django", recipe["overrides"])  # whichever run the glob gives, its settings only
    names = ["django-kept-2026-03-01.json", "django-2026-03-01.json", "django-2026-03-01-2.json",
             "django-2026-03-01-10.json"]  # -10 after -2: the run's number, not the name's characters
    for name in reversed(names):
        (tmp_path / "results" / name).write_text(json.dumps(recipe))
    rows = [line.split(" | ")[0][3:-1] for line in report.django_runs(tmp_path).splitlines()
            if line.startswith("| `django-")]
    assert rows == names


def test_the_curves_show_the_same_syntax_tree_where_dev_scored_it(tmp_path: Path):
    root = copy_results(tmp_path)
    (root / report.CURVE).write_text("step,train_loss,dev_loss,dev_bleu,dev_exact_match,dev_exact_match_ast,lr\n"
                                     "325,3.0,1.9,20.5,21.0,24.5,0.001\n650,2.5,1.6,30.0,33.0,,0.001\n")
    table = report.default_curve(root)
    assert "| 325 | 3.000 | 1.900 | 20.5 | 21.0 | 24.5 |" in table
    assert "| 650 | 2.500 | 1.600 | 30.0 | 33.0 | – |" in table  # a row without it (resumed from an older run)


def test_a_seed_comparison_renders_each_seed_the_means_and_the_rules_verdict(tmp_path: Path):
    root = copy_results(tmp_path)
    run = {"commit": "c" * 40, "step": 1300, "dev_loss": 1.5, "dev_exact_match": 40.0, "dev_bleu": 45.0,
           "test_exact_match": 55.0, "test_bleu": 48.0}
    comparison = {"command": "python -m benchmarks.seeds x", "question": "Does it cost quality?", "date": "2026-11-30",
                  "machine": results.machine(), "rule": {"max_loss_rise": 0.005, "max_exact_match_drop": 1.0},
                  "arms": {"old": {"commit": "a" * 40, "runs": {"1": run, "2": run | {"dev_exact_match": 44.0}}},
                           "new": {"commit": "b" * 40, "runs": {"1": run | {"test_exact_match": 54.0}, "2": run}}},
                  "seeds": [1, 2], "means": {"old": run | {"dev_exact_match": 42.0}, "new": run | {"test_exact_match": 54.5}},
                  "dev_loss_rise": 0.0, "dev_exact_match_drop": 2.0, "test_exact_match_lower_on": 1, "adopted": False}
    for path in (root / "results").glob("seeds-*.json"):
        path.unlink()
    (root / "results/seeds-x.json").write_text(json.dumps(comparison))
    text = report.seed_comparisons(root)
    assert "| 2 | 1.5000 | 44.0 | 55.0 | 1.5000 | 40.0 | 55.0 |" in text
    assert "| mean of 2 | 1.5000 | 42.0 | 55.0 | 1.5000 | 40.0 | 54.5 |" in text
    assert "old (aaaaaaa): dev loss" in text and "**new not adopted**, old kept" in text
    assert "lower with new on 1 of 2 seeds" in text and "step 1,300" in text
    (root / "results/seeds-x.json").write_text(json.dumps(comparison | {"adopted": True}))
    assert "**new adopted**" in report.seed_comparisons(root)
    (root / "results/seeds-x.json").unlink()
    assert "python -m benchmarks.seeds NAME" in report.seed_comparisons(root)  # no file: the command that writes one


def test_a_reranker_study_renders_the_grid_and_each_retrieval_key(tmp_path: Path):
    from nmt.io import atomic_write_json

    root = tmp_path
    assert "python -m benchmarks.rerank_weights" in report.django_reranking(root)  # no file: the command
    grid = {"cross_validated_mean": 68.84}
    atomic_write_json(root / "results/rerank-django-x.json", {
        "command": "python -m benchmarks.rerank_weights models/export data/raw/dev.jsonl --neighbour words",
        "data": "data/raw/dev.jsonl", "pairs": 1000, "beam_size": 10, "top_hypothesis": 66.7, "ceiling": 72.9,
        "model_weights_exact_match": 67.7, "grid": grid,
        "neighbour": {"words": {"retrieval_baseline": 16.7, "retrieved_line_right": 19.4,
                                "retrieved_line_right_beyond_ceiling": 0.7, "grid": {"cross_validated_mean": 68.76}}}})
    text = report.django_reranking(root)
    assert "ceiling (the reference in the n-best) 72.9" in text and "| 68.84 |" in text
    assert "| + agreement with the nearest training pair's shape, pairs compared by their words | 16.7 | 19.4 | 0.7 | 68.76 |" in text
    assert "an ensemble of" not in text  # a file without members, or written before the field existed

    atomic_write_json(root / "results/rerank-django-y.json", {
        "command": "python -m benchmarks.rerank_weights models/export data/raw/dev.jsonl --ensemble b.safetensors:b.json",
        "data": "data/raw/dev.jsonl", "pairs": 1000, "beam_size": 10, "ensemble": ["b.safetensors:b.json"],
        "top_hypothesis": 68.0, "ceiling": 75.0, "model_weights_exact_match": 70.0, "grid": grid, "neighbour": {}})
    assert "`rerank-django-y.json`: 1,000 pairs of `data/raw/dev.jsonl`, beam 10, an ensemble of 2 models: top" \
        in report.django_reranking(root)
