"""Every file a DVC stage imports is among its deps in dvc.yaml, so `dvc repro` never calls a stale output fresh."""

from __future__ import annotations

import yaml

from nmt.stages import deps

from .conftest import REPO


def test_every_stage_lists_exactly_the_code_it_imports():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    entries = deps.stage_entries(REPO)
    assert set(entries) == set(stages), "a stage whose command is not `python3 -m pipeline.<stage>`"
    for stage, entry in entries.items():
        listed = {d for d in stages[stage]["deps"] if deps.is_code(d)}
        imported = set(deps.code_deps(entry, REPO))
        assert not imported - listed, (f"{stage} imports {sorted(imported - listed)} but dvc.yaml does not list them: "
                                       "run `python -m nmt.stages.deps --write`")
        assert not listed - imported, (f"{stage} lists {sorted(listed - imported)}, which it does not import: "
                                       "run `python -m nmt.stages.deps --write`")


def test_imports_inside_functions_and_packages_on_the_way_count(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "nmt" / "sub").mkdir(parents=True)
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "stage.py").write_text("from nmt.sub import leaf\n")
    for name in ("nmt/__init__.py", "nmt/sub/__init__.py", "nmt/unused.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "nmt" / "sub" / "leaf.py").write_text("def f():\n    import nmt.lazy\n")
    (tmp_path / "nmt" / "lazy.py").write_text("import json\n")
    assert deps.code_deps("pipeline.stage", tmp_path) == [
        "nmt/__init__.py", "nmt/lazy.py", "nmt/sub/__init__.py", "nmt/sub/leaf.py", "pipeline/__init__.py",
        "pipeline/stage.py"]


def test_rewrite_replaces_only_the_code_deps():
    text = ("stages:\n  train:\n    cmd: python3 -m pipeline.train\n    deps:\n      - pipeline/train.py\n"
            "      - nmt/old.py\n      - data/tokenized\n    params:\n      - train\n")
    new = deps.rewrite(text, {"train": ["nmt/a.py", "pipeline/train.py"]})
    assert new == ("stages:\n  train:\n    cmd: python3 -m pipeline.train\n    deps:\n      - nmt/a.py\n"
                   "      - pipeline/train.py\n      - data/tokenized\n    params:\n      - train\n")


def test_a_packages_lazy_attribute_counts_only_where_it_is_imported(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "nmt").mkdir()
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    (tmp_path / "nmt" / "__init__.py").write_text(
        "def __getattr__(name):\n    if name == 'Heavy':\n        from nmt.heavy import Heavy\n        return Heavy\n")
    (tmp_path / "nmt" / "heavy.py").write_text("class Heavy: ...\n")
    (tmp_path / "nmt" / "light.py").write_text("")
    (tmp_path / "pipeline" / "a.py").write_text("import nmt.light\n")
    (tmp_path / "pipeline" / "b.py").write_text("from nmt import Heavy\n")
    assert "nmt/heavy.py" not in deps.code_deps("pipeline.a", tmp_path)
    assert "nmt/heavy.py" in deps.code_deps("pipeline.b", tmp_path)


def test_rewrite_leaves_the_artifacts_section_and_comments_as_they_are():
    text = ("# the story\nstages:\n  export:\n    cmd: python3 -m pipeline.export\n    deps:\n      - models/best.json\n"
            "      # the code it imports\n      - nmt/old.py\n    outs:\n      - models/export\n\n"
            "# shipped by name\nartifacts:\n  nmt-text2code:   # the model\n    path: models/export\n    type: model\n"
            "    labels: [pytorch]\n")
    new = deps.rewrite(text, {"export": ["nmt/a.py"]})
    assert new == text.replace("nmt/old.py", "nmt/a.py")


def test_writing_the_deps_leaves_the_committed_dvc_yaml_byte_identical():
    """`python -m nmt.stages.deps --write` on the committed dvc.yaml: a fixed point, artifacts and comments kept."""
    text = (REPO / "dvc.yaml").read_text()
    generated = {stage: deps.code_deps(entry, REPO) for stage, entry in deps.stage_entries(REPO).items()}
    assert deps.rewrite(text, generated) == text
    artifacts = yaml.safe_load(text)["artifacts"]
    assert artifacts["nmt-text2code"]["path"] == "models/export" and artifacts["nmt-text2code"]["type"] == "model"
    assert artifacts["text2code-pairs"]["path"] == "data/raw" and artifacts["text2code-pairs"]["type"] == "dataset"
