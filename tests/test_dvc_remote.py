"""Sharing the pipeline's outputs as a team does: `dvc push` to a remote from the repo that ran the
pipeline, `git clone` + `dvc pull` where it did not run, and the model fetched by name
(`dvc artifacts get`, `dvc.api`) from the artifacts section of dvc.yaml. The remote is a local directory."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

from nmt.metrics import is_valid_python

from .conftest import build_pipeline_repo, run

# 300 steps learn the synthetic templates (40, the other pipeline tests' budget, print nothing yet);
# MLflow is off: it is no part of what travels through the remote, and its logging takes most of a run.
TRAINED = {"train": {"max_steps": 300, "eval_every": 100}, "mlflow": {"enabled": False},
           "export": {"register": False}}
DESCRIPTION = "return the length of key"  # one of the training templates (conftest.TEMPLATES)
MODEL, DATASET = "nmt-text2code", "text2code-pairs"  # the names of dvc.yaml's artifacts section
VERSION = "v1.0.0"


def nmt(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """The nmt command line of the repo at ``cwd`` (its own copy of the package, not the installed one)."""
    return subprocess.run([sys.executable, "-m", "nmt.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def same_files(a: Path, b: Path) -> bool:
    """The two directories hold the same file names with the same bytes."""
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return not mismatch and not errors


def workspace(root: Path) -> dict[str, int]:
    """Every file of a checkout outside .git and .dvc, with its modification time (ns)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] not in (".git", ".dvc")}


def clone(origin: Path, to: Path, env: dict) -> dict:
    """``git clone`` of ``origin`` (no DVC data: only what git holds), and its environment."""
    run(["git", "clone", "-q", str(origin), str(to)], to.parent, env)
    return {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{to / 'mlflow.db'}"}


@pytest.fixture(scope="module")
def pushed(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A repo that ran the tiny pipeline, a local directory as its default remote, `dvc push`ed,
    committed, and its model registered as version v1.0.0 (the git tag `nmt-text2code@v1.0.0`)."""
    base = tmp_path_factory.mktemp("team")
    origin, remote = base / "origin", base / "remote"
    env = build_pipeline_repo(origin, TRAINED)
    run(["dvc", "remote", "add", "-d", "store", str(remote)], origin, env)
    proc = run(["dvc", "push"], origin, env)
    assert "files pushed" in proc.stdout
    run(["git", "add", "-A"], origin, env)
    run(["git", "commit", "-q", "-m", "the pipeline's run, pushed to the remote"], origin, env)
    run(["gto", "register", MODEL, "--version", VERSION], origin, env)
    return origin, remote, env


def test_a_clone_pulls_the_model_and_generates_without_running_a_stage(pushed, tmp_path):
    origin, remote, env = pushed
    assert any(p.is_file() for p in remote.rglob("*"))
    here = tmp_path / "clone"
    clone_env = clone(origin, here, env)
    assert not (here / "models/export").exists() and not (here / "data/raw").exists()  # DVC outputs: not in git

    proc = run(["dvc", "pull"], here, clone_env)
    assert "Running stage" not in proc.stdout
    assert same_files(here / "models/export", origin / "models/export")
    assert same_files(here / "data/raw", origin / "data/raw")
    before = workspace(here)

    out = nmt(["generate", "--model", "models/export", DESCRIPTION], here, clone_env)
    assert out.returncode == 0, out.stderr
    code = out.stdout.strip()
    assert code and is_valid_python(code)  # a line of Python ...
    assert code == nmt(["generate", "--model", "models/export", DESCRIPTION], origin, env).stdout.strip()  # ... the trained one's

    # Nothing ran: no file of the checkout was written or added (no training log, metrics or MLflow
    # store), the metrics are the pushing repo's, and DVC finds every stage up to date.
    assert workspace(here) == before
    assert not (here / "mlflow.db").exists()
    for name in ("metrics/train.json", "metrics/eval.json", "models/train_run.json", "dvc.lock"):
        assert (here / name).read_bytes() == (origin / name).read_bytes(), name
    assert "Data and pipelines are up to date." in run(["dvc", "status"], here, clone_env).stdout


def test_artifacts_get_fetches_the_registered_model_by_name(pushed, tmp_path):
    """`dvc artifacts get REPO NAME` with no DVC Studio: it finds the version through the git tag
    and the files through the repo's remote (a clone that never pulled has no cache of its own)."""
    origin, _, env = pushed
    fresh = tmp_path / "fresh"
    clone(origin, fresh, env)
    for repo, out in ((origin, "from-origin"), (fresh, "from-remote")):
        proc = run(["dvc", "artifacts", "get", str(repo), MODEL, "-o", out], tmp_path, env)
        assert "Downloaded" in proc.stdout
        assert same_files(tmp_path / out, origin / "models/export"), out
    run(["dvc", "artifacts", "get", str(origin), MODEL, "--rev", VERSION, "-o", "v1"], tmp_path, env)
    assert same_files(tmp_path / "v1", origin / "models/export")


def test_an_unregistered_artifact_is_fetched_by_path(pushed, tmp_path):
    """The dataset has no version tag: `dvc artifacts get` cannot find it by name, `dvc get` by path can."""
    origin, _, env = pushed
    proc = subprocess.run(["dvc", "artifacts", "get", str(origin), DATASET], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and f"Unable to find artifact '{DATASET}'" in proc.stderr
    run(["dvc", "get", str(origin), "data/raw", "-o", "pairs"], tmp_path, env)
    assert same_files(tmp_path / "pairs", origin / "data/raw")


def test_dvc_api_shows_and_reads_the_model(pushed, tmp_path):
    import dvc.api

    origin, _, env = pushed
    found = dvc.api.artifacts_show(MODEL, repo=str(origin))
    head = run(["git", "rev-parse", "HEAD"], origin, env).stdout.strip()
    assert found == {"rev": head, "path": "models/export"}
    config = dvc.api.read(f"{found['path']}/config.json", repo=str(origin), rev=found["rev"])
    assert config == (origin / "models/export/config.json").read_text()
    dvc.api.DVCFileSystem(str(origin), rev=found["rev"]).get(found["path"], str(tmp_path / "model"), recursive=True)
    assert same_files(tmp_path / "model", origin / "models/export")


def test_pulling_without_its_remote_fails_naming_the_fix(pushed, tmp_path):
    origin, _, env = pushed
    here = tmp_path / "clone"
    clone_env = clone(origin, here, env)
    missing = tmp_path / "unmounted"
    run(["dvc", "remote", "modify", "store", "url", str(missing)], here, clone_env)

    # dvc's own words say that files are missing, not that the remote is.
    proc = subprocess.run(["dvc", "pull"], cwd=here, env=clone_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "failed to pull data from the cloud" in proc.stderr
    out = nmt(["pull"], here, clone_env)
    assert out.returncode == 2
    assert f"DVC remote 'store' is the directory {missing}, which does not exist" in out.stderr
    assert "dvc remote modify store url" in out.stderr

    missing.mkdir()  # there, but empty: nothing was pushed to it
    out = nmt(["pull", "models/export"], here, clone_env)
    assert out.returncode == 2 and "`dvc pull` from remote 'store'" in out.stderr and "dvc push -r store" in out.stderr

    run(["dvc", "remote", "remove", "store"], here, clone_env)
    out = nmt(["pull"], here, clone_env)
    assert out.returncode == 2 and "no DVC remote is configured" in out.stderr and "dvc remote add -d" in out.stderr
    out = nmt(["pull", "--remote", "elsewhere"], here, clone_env)
    assert out.returncode == 2 and "no DVC remote named 'elsewhere'" in out.stderr
    assert not (here / "models/export").exists() and not (here / "data/raw").exists()  # nothing half-pulled
