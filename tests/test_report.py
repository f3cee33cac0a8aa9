"""The README's measured tables are exactly what `make report` renders from the committed files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nmt import report

from .conftest import REPO


def test_the_readme_agrees_with_the_committed_result_files():
    text = (REPO / "README.md").read_text()
    assert set(report.RENDERERS) <= {m["name"] for m in report.MARKER.finditer(text)}  # every table is there
    assert report.render(text, REPO) == text, "README tables are stale: run `make report` and commit README.md"


def copy_results(tmp_path: Path) -> Path:
    for path in (report.EVAL, report.TRAIN, report.CURVE, report.EXAMPLES, report.ABLATION, report.README):
        if (REPO / path).is_file():
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / path, tmp_path / path)
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


def test_an_unknown_section_is_an_error(tmp_path: Path):
    with pytest.raises(KeyError, match="report:nope"):
        report.render("<!-- report:nope -->\nx\n<!-- /report:nope -->\n", tmp_path)
