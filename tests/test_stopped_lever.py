"""benchmarks.stopped_lever: a lever run stopped early becomes a result file `make report` renders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest

from benchmarks import stopped_lever
from nmt import report
from nmt.recipes import command, load_recipe

from .conftest import REPO


@pytest.fixture
def stopped_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with the recipes, a baseline result and an MLflow run stopped after two evaluations."""
    shutil.copy(REPO / "params.yaml", tmp_path)
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    (tmp_path / "results").mkdir()
    baseline = json.loads(next((REPO / "results").glob("django-20*.json")).read_text())
    (tmp_path / "results/django-2026-01-01.json").write_text(json.dumps(baseline))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("lever"))
    for step in range(1, 2001, 250):  # training metrics every 250 steps, evaluations every 1,000
        client.log_metric(run.info.run_id, "lr", 1e-3 - step * 1e-7, step=step)
        client.log_metric(run.info.run_id, "train_loss", 3.0 - step / 1000, step=step)
    for step, bleu in ((1000, 40.5), (2000, 50.25)):
        for name, value in (("dev_loss", 2.0 - step / 4000), ("dev_bleu", bleu), ("dev_exact_match", bleu - 3),
                            ("dev_exact_match_ast", bleu - 2), ("lr", 1e-3 - step * 1e-7)):
            client.log_metric(run.info.run_id, name, value, step=step)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/mlflow_run.json").write_text(json.dumps({"run_id": run.info.run_id}))
    (tmp_path / "speed.json").write_text(json.dumps({"machine": "Some CPU", "recipe_tok_s": 2000, "lever_tok_s": 1600}))
    return tmp_path


def test_the_curve_is_the_runs_evaluations_and_the_stop_is_the_last(stopped_repo: Path):
    stopped_lever.main(["rdrop", "--set", "train.rdrop=5", "train.batch_tokens=2048", "--wall", "1234.56",
                        "--why", "behind", "--baseline", "results/django-2026-01-01.json",
                        "--speed", str(stopped_repo / "speed.json"), "--root", str(stopped_repo)])
    result = json.loads((stopped_repo / "results/lever-django-rdrop.json").read_text())
    assert [r["step"] for r in result["curve"]] == [1000.0, 2000.0]  # training-only steps are not evaluations
    assert result["curve"][1] == {"step": 2000.0, "dev_loss": 1.5, "dev_bleu": 50.25, "dev_exact_match": 47.25,
                                  "dev_exact_match_ast": 48.25, "lr": pytest.approx(8e-4)}
    recipe_steps = load_recipe("django", stopped_repo)["train"]["max_steps"]
    assert result["stopped"] == {"at_step": 2000, "of_steps": recipe_steps, "why": "behind"}  # of_steps: the recipe's
    assert result["command"] == command("django", result["overrides"]) + [
        "-S", "train.rdrop=5", "-S", "train.batch_tokens=2048"]
    assert result["wall_seconds"] == {"until_stopped": 1234.6} and result["metrics"] == {}
    # make report renders it as a stopped lever beside its baseline
    table = report.django_levers(stopped_repo)
    assert "`train.rdrop=5`, `train.batch_tokens=2048`" in table
    assert f"at step 2,000 of {recipe_steps:,}: behind" in table
    assert "| 2,000 (Some CPU) | 1,600 (**0.80×**) |" in table


def test_a_set_max_steps_is_the_runs_budget(stopped_repo: Path):
    stopped_lever.main(["short", "--set", "train.max_steps=6000", "--wall", "60", "--why", "x",
                        "--baseline", "results/django-2026-01-01.json", "--speed", str(stopped_repo / "speed.json"),
                        "--root", str(stopped_repo)])
    result = json.loads((stopped_repo / "results/lever-django-short.json").read_text())
    assert result["stopped"]["of_steps"] == 6000  # the --set budget, not the recipe's
    assert result["speed"]["lever_tok_s"] == 1600


@pytest.mark.parametrize("args, message", [
    (["--set", "train.rdrop"], "expected KEY=VALUE"),
    (["--baseline", "results/nothing.json"], "no such file"),
    (["--speed", "empty.json"], "lacks machine, recipe_tok_s, lever_tok_s"),
    (["--speed", "nothing.json"], "nothing.json"),
])
def test_bad_input_names_the_problem_and_writes_nothing(stopped_repo: Path, capsys, args, message):
    (stopped_repo / "empty.json").write_text("{}")
    base = {"--wall": "1", "--why": "x", "--baseline": "results/django-2026-01-01.json", "--speed": "speed.json"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    base["--speed"] = str(stopped_repo / base["--speed"])
    argv = ["rdrop", *[a for kv in base.items() for a in kv], "--root", str(stopped_repo)]
    with pytest.raises(SystemExit) as exit_:
        stopped_lever.main(argv)
    assert exit_.value.code != 0 and message in capsys.readouterr().err
    assert not (stopped_repo / "results/lever-django-rdrop.json").exists()


def test_a_run_the_store_lacks_is_named(stopped_repo: Path, capsys):
    (stopped_repo / "models/mlflow_run.json").write_text(json.dumps({"run_id": "0123456789abcdef"}))
    with pytest.raises(SystemExit):
        stopped_lever.main(["gone", "--wall", "1", "--why", "x", "--baseline", "results/django-2026-01-01.json",
                            "--speed", str(stopped_repo / "speed.json"), "--root", str(stopped_repo)])
    assert "MLflow run 0123456789abcdef" in capsys.readouterr().err
    assert not (stopped_repo / "results/lever-django-gone.json").exists()


def test_a_run_stopped_before_any_evaluation_is_refused(stopped_repo: Path, capsys):
    client = mlflow.MlflowClient(f"sqlite:///{stopped_repo / 'mlflow.db'}")
    run = client.create_run(client.get_experiment_by_name("lever").experiment_id)
    (stopped_repo / "models/mlflow_run.json").write_text(json.dumps({"run_id": run.info.run_id}))
    with pytest.raises(SystemExit):
        stopped_lever.main(["early", "--wall", "1", "--why", "x", "--baseline", "results/django-2026-01-01.json",
                            "--speed", str(stopped_repo / "speed.json"), "--root", str(stopped_repo)])
    assert "logged no dev evaluation" in capsys.readouterr().err
    assert not (stopped_repo / "results/lever-django-early.json").exists()
