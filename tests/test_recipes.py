"""Recipes: recipes/django.yaml is valid over params.yaml, and its -S list means the same to DVC."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml
from dvc.utils.hydra import apply_overrides, to_hydra_overrides
from hypothesis import given, settings
from hypothesis import strategies as st

from nmt import recipes, results
from nmt.errors import ConfigError, DataError
from nmt.params import describe, flatten, load_params

from .conftest import REPO


def test_the_django_recipe_is_valid_over_params_yaml():
    recipe = recipes.load_recipe("django", REPO)
    assert set(flatten(recipe)) <= {key for key, _, _ in describe()}
    params = recipes.recipe_params(recipe, REPO / "params.yaml", "recipes/django.yaml")
    assert params.data.source == "django" and params.data.django.origin == "shipped"  # no ../shared needed
    assert params.tokenize.string_placeholders and params.train.ema_decay > 0 and params.evaluate.rerank == "lexical"
    assert params.train.eval_examples == 0  # the whole selection split


def test_the_concode_recipe_is_valid_and_reads_java_from_the_hub_or_a_local_dir():
    params = recipes.recipe_params(recipes.load_recipe("concode", REPO), REPO / "params.yaml", "recipes/concode.yaml")
    assert params.data.source == "concode" and params.data.concode.local_dir == ""  # the hub unless told
    assert params.model.copy and params.evaluate.rerank == "none"  # syntax reranking is Python's
    assert params.data.max_nl_tokens + 2 <= params.model.max_len


@pytest.mark.parametrize("name", ["django", "concode"])
def test_the_set_list_round_trips_through_dvcs_own_parser(tmp_path, name):
    recipe = recipes.load_recipe(name, REPO)
    args = recipes.set_args(recipe)
    assert args[0::2] == ["-S"] * len(flatten(recipe))
    params_file = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params_file)
    apply_overrides(params_file, args[1::2])  # what `dvc exp run -S ...` does to params.yaml
    applied = yaml.safe_load(params_file.read_text())
    assert {k: flatten(applied)[k] for k in flatten(recipe)} == flatten(recipe)
    assert load_params(params_file) == recipes.recipe_params(recipe, REPO / "params.yaml", "recipe")


def test_settings_are_read_back_from_a_command_line_as_dvc_applies_them(tmp_path):
    cmd = recipes.command("django", {"train": {"max_steps": 12000}}) + ["-S", "train.max_steps=6000",
                                                                        "-S", "data.jsonl.train=a=b.jsonl"]
    sets = recipes.settings(cmd)
    assert sets == ["train.max_steps=12000", "train.max_steps=6000", "data.jsonl.train=a=b.jsonl"]
    values = recipes.setting_values(sets)
    assert values == {"train.max_steps": "6000", "data.jsonl.train": "a=b.jsonl"}  # the last wins; '=' in a value kept
    params_file = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params_file)
    apply_overrides(params_file, sets[:2])  # DVC agrees: the last -S of a key is the one applied
    assert yaml.safe_load(params_file.read_text())["train"]["max_steps"] == int(values["train.max_steps"])


values = st.one_of(
    st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20).filter(lambda s: not ("'" in s and '"' in s) and "${" not in s),
    st.sampled_from(["none", "null", "true", "1e-3", "../shared/data/x", "a b", "", "x\\", "it's"]),
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_every_value_survives_hydras_grammar(value):
    parsed = to_hydra_overrides([f"k={recipes.hydra_value(value)}"])[0].value()
    assert parsed == value and type(parsed) is type(value)


def test_a_bad_recipe_names_every_bad_key(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "bad.yaml").write_text("train:\n  lr: abc\n  bogus: 1\n")
    with pytest.raises(ConfigError) as e:
        recipes.load_recipe("bad", tmp_path)
    assert e.value.source.endswith("bad.yaml")
    assert any(p.startswith("train.lr:") for p in e.value.problems)
    assert any(p.startswith("train.bogus: unknown key") for p in e.value.problems)
    with pytest.raises(DataError, match="known: bad"):
        recipes.load_recipe("nope", tmp_path)


def test_the_command_prints(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    recipes.main(["django"])
    printed = capsys.readouterr().out
    assert printed.startswith("dvc exp run -n django -S data.source=django -S data.django.origin=shipped")


def _recipe_repo(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x"],
                   cwd=tmp_path, check=True)
    return tmp_path


def test_a_run_writes_the_result_file_with_measurements_apart_from_settings(tmp_path, monkeypatch):
    root = _recipe_repo(tmp_path)
    monkeypatch.chdir(root)
    calls = []

    def fake_dvc(argv):  # what the pipeline leaves behind: metrics files, a curve, a reverse model's record
        calls.append(argv)
        with (root / "params.yaml").open("a") as f:  # dvc exp run sets the recipe's params in the workspace
            f.write("# the experiment's params\n")
        (root / "metrics").mkdir()
        (root / "models/reverse").mkdir(parents=True)
        (root / "metrics/train.json").write_text(json.dumps({"best_dev_bleu": 60.5, "steps": 7000,
                                                             "train_seconds": 5000.0}))
        (root / "metrics/eval.json").write_text(json.dumps({"split": "test", "exact_match": 71.2, "beam_size": 10}))
        (root / "models/reverse/train.json").write_text(json.dumps({"train_seconds": 1500.0}))
        (root / "metrics/train_curve.csv").write_text("step,dev_bleu\n1000,40.5\n2000,55.0\n")
        return 0

    monkeypatch.setattr(recipes.subprocess, "call", fake_dvc)
    recipes.main(["django", "--run", "-f"])
    assert calls[0][1:5] == ["exp", "run", "-n", "django"] and calls[0][-1] == "-f"
    assert calls[0][5:-1] == recipes.set_args(recipes.load_recipe("django"))
    [path] = (root / "results").glob("django-*.json")
    result = json.loads(path.read_text())
    assert result["recipe"] == "django" and result["overrides"] == recipes.load_recipe("django")
    assert result["commit"] == subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                              text=True).stdout.strip()
    assert result["metrics"]["eval"] == {"exact_match": 71.2}  # settings are not metrics
    assert result["run"]["eval"] == {"split": "test", "beam_size": 10} and result["run"]["train"] == {"steps": 7000}
    assert result["wall_seconds"]["train"] == 5000.0 and result["wall_seconds"]["reverse"] == 1500.0
    assert result["wall_seconds"]["dvc_exp_run"] >= 0 and result["machine"]["cores"] >= 1
    assert result["curve"] == [{"step": 1000.0, "dev_bleu": 40.5}, {"step": 2000.0, "dev_bleu": 55.0}]
    assert result["dirty"] is False  # the recipe's params.yaml and the stages' outputs are the run, not a change
    (root / "recipes" / "django.yaml").write_text("# edited\n")  # the code (here: the recipe) is not the commit's
    assert results.recipe_result("django", {}, [], 1.0, root)["dirty"] is True


def test_a_second_run_on_the_same_day_keeps_the_first_result_file(tmp_path):
    day = results.dt.date(2026, 11, 30)
    (tmp_path / "results").mkdir()
    first = tmp_path / "results" / "django-2026-11-30.json"
    first.write_text('{"the": "first run"}')
    (tmp_path / "results" / "django-fp32-2026-12-01.json").write_text("{}")  # another recipe's name, a later day
    assert results.latest_result("django", tmp_path) == first
    paths = [results.write_recipe_result("django", {}, ["dvc"], 1.0, tmp_path, day) for _ in range(10)]
    assert [p.name for p in paths] == [f"django-2026-11-30-{n}.json" for n in range(2, 12)]
    assert first.read_text() == '{"the": "first run"}'
    assert results.latest_result("django", tmp_path).name == "django-2026-11-30-11.json"  # 11 after 9, not before 2
    later = results.write_recipe_result("django", {}, ["dvc"], 1.0, tmp_path, results.dt.date(2026, 12, 1))
    assert later.name == "django-2026-12-01.json" and results.latest_result("django", tmp_path) == later


def test_a_failed_run_writes_no_result_file(tmp_path, monkeypatch, capsys):
    root = _recipe_repo(tmp_path)
    monkeypatch.chdir(root)
    monkeypatch.setattr(recipes.subprocess, "call", lambda argv: 3)
    with pytest.raises(SystemExit) as e:
        recipes.main(["django", "--run"])
    assert e.value.code == 3 and "no result file written" in capsys.readouterr().err
    assert not (root / "results").exists()
