"""benchmarks.seeds: two commits of the pipeline trained seed by seed, judged by a rule fixed up front."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from benchmarks import seeds
from tests.conftest import REPO_ENV, build_pipeline_repo


def write_run(run: Path, dev: list[tuple[float, float]], test_em: float, commit: str = "a" * 40) -> None:
    """A run directory as `benchmarks.seeds` keeps it: ``dev`` is (dev loss, dev exact match) per evaluation."""
    run.mkdir(parents=True)
    rows = "".join(f"{100 * (i + 1)},2.0,{loss},40.0,{em},0.001\n" for i, (loss, em) in enumerate(dev))
    (run / "train_curve.csv").write_text("step,train_loss,dev_loss,dev_bleu,dev_exact_match,lr\n" + rows)
    (run / "eval.json").write_text(json.dumps({"exact_match": test_em, "bleu": 50.0}))
    (run / "train.json").write_text("{}")
    (run / "commit").write_text(commit + "\n")


def test_the_verdict_is_on_the_means_of_the_last_evaluation_over_common_seeds():
    def run(loss: float, em: float, test_em: float) -> dict:
        return {"dev_loss": loss, "dev_exact_match": em, "dev_bleu": 0.0, "test_exact_match": test_em, "test_bleu": 0.0}

    old = {1: run(1.40, 50.0, 60.0), 2: run(1.50, 46.0, 58.0), 3: run(9.0, 0.0, 0.0)}  # seed 3: old only
    new = {1: run(1.41, 49.0, 61.0), 2: run(1.50, 45.0, 57.0)}
    verdict = seeds.compare({"old": old, "new": new}, max_loss_rise=0.005, max_exact_match_drop=1.0)
    assert verdict["seeds"] == [1, 2]
    assert verdict["means"]["old"]["dev_loss"] == pytest.approx(1.45) and verdict["means"]["new"]["dev_loss"] == pytest.approx(1.455)
    assert verdict["dev_loss_rise"] == pytest.approx(0.005) and verdict["dev_exact_match_drop"] == pytest.approx(1.0)
    assert verdict["adopted"]  # both exactly at their limits
    assert verdict["test_exact_match_lower_on"] == 1
    assert not seeds.compare({"old": old, "new": new}, 0.004, 1.0)["adopted"]  # the loss rose too much
    assert not seeds.compare({"old": old, "new": new}, 0.005, 0.9)["adopted"]  # exact match fell too far


def test_collect_reads_the_last_evaluation_and_writes_the_verdict(tmp_path: Path):
    runs = tmp_path / "runs"
    for seed, (old_em, new_em) in {7: (50.0, 44.0), 8: (48.0, 43.0)}.items():
        write_run(runs / f"old-{seed}", [(1.9, 20.0), (1.45, old_em)], 58.0)
        write_run(runs / f"new-{seed}", [(1.8, 30.0), (1.45, new_em)], 55.0, commit="b" * 40)
    out = tmp_path / "seeds.json"
    seeds.main(["mask", "--arm", "old=aaaa", "--arm", "new=bbbb", "--seeds", "7", "8", "--runs", str(runs),
                "--collect", "--question", "does it cost quality?", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["arms"]["new"]["runs"]["7"] == {"commit": "b" * 40, "step": 200, "dev_loss": 1.45,
                                                  "dev_exact_match": 44.0, "dev_bleu": 40.0,
                                                  "test_exact_match": 55.0, "test_bleu": 50.0}
    assert result["dev_exact_match_drop"] == pytest.approx(5.5) and not result["adopted"]
    assert result["rule"] == {"max_loss_rise": 0.005, "max_exact_match_drop": 1.0}
    assert result["command"].startswith("python -m benchmarks.seeds mask --arm old=aaaa")


def test_collect_names_a_missing_run_and_writes_nothing(tmp_path: Path, capsys):
    write_run(tmp_path / "old-1", [(1.5, 40.0)], 50.0)
    out = tmp_path / "seeds.json"
    with pytest.raises(SystemExit) as exit_:
        seeds.main(["x", "--arm", "old=a", "--arm", "new=b", "--seeds", "1", "--runs", str(tmp_path), "--collect",
                    "--out", str(out)])
    assert exit_.value.code == 1
    assert str(tmp_path / "new-1") in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("arms", [["old=a"], ["old=a", "old=b"], ["old", "new=b"]])
def test_anything_but_two_named_arms_is_refused(arms, tmp_path: Path, capsys):
    argv = ["x", "--seeds", "1", "--runs", str(tmp_path), "--collect"]
    for arm in arms:
        argv += ["--arm", arm]
    with pytest.raises(SystemExit) as exit_:
        seeds.main(argv)
    assert exit_.value.code == 2
    assert "--arm" in capsys.readouterr().err


def test_two_arms_at_one_commit_train_the_same_model_and_a_rerun_trains_nothing(tmp_path: Path, monkeypatch):
    """The real path: a clone per arm, `dvc exp run -S seed=N evaluate` in it, the metrics kept."""
    repo = tmp_path / "repo"
    env = build_pipeline_repo(repo)
    for key in (*REPO_ENV, "MLFLOW_TRACKING_URI"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.chdir(repo)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    argv = ["same", "--arm", f"a={head[:7]}", "--arm", f"b={head}", "--seeds", "3"]
    seeds.main(argv)
    result = json.loads((repo / "results/seeds-same.json").read_text())
    a, b = result["arms"]["a"]["runs"]["3"], result["arms"]["b"]["runs"]["3"]
    assert a == b and a["commit"] == head  # training is deterministic: the same commit and seed, the same model
    assert result["dev_loss_rise"] == 0 and result["adopted"]
    params = (repo / ".seeds/same/clone-a/params.yaml").read_text()
    assert "seed: 3" in params  # the run trained with the seed asked for
    os.remove(repo / "results/seeds-same.json")
    monkeypatch.setenv("PATH", "/nonexistent")  # no dvc, no git: a second run may only read what is kept
    seeds.main(argv + ["--collect"])
    assert json.loads((repo / "results/seeds-same.json").read_text())["arms"] == result["arms"]
