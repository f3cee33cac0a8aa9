"""``make report``: the README's measured tables, rendered from committed result files.

A table lives in README.md between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->``; the
renderer for NAME rewrites what lies between them, and ``tests/test_report.py`` fails whenever the
README differs from a fresh rendering. No figure is typed by hand: each comes from

- ``metrics/eval.json``, ``metrics/train.json``, ``metrics/train_curve.csv``, ``plots/examples.md``:
  the default pipeline's committed outputs (``dvc repro``);
- ``results/default-ablation.json``: ``python -m benchmarks.ablation``.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nmt.io import atomic_write_text, read_json

README = Path("README.md")
EVAL, TRAIN, CURVE = Path("metrics/eval.json"), Path("metrics/train.json"), Path("metrics/train_curve.csv")
EXAMPLES, ABLATION = Path("plots/examples.md"), Path("results/default-ablation.json")
MARKER = re.compile(r"(<!-- report:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /report:(?P=name) -->)", re.S)
SCORES = (("exact_match", "exact match %"), ("bleu", "BLEU"), ("chrf", "chrF"), ("syntax_valid", "syntax-valid %"))


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    return "\n".join([_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]) + "\n"


def _scores(metrics: dict, prefix: str = "") -> list[str]:
    return [f"{metrics[prefix + key]:.1f}" for key, _ in SCORES]


def default_results(root: Path) -> str:
    """Test-split scores of the default model, each decoding beside the retrieval baseline."""
    ev, tr = read_json(root / EVAL), read_json(root / TRAIN)
    beam = ev["beam_size"]
    rows = [["model: beam " + str(beam) + " + lexical rerank (what `nmt generate` does)", *_scores(ev)]]
    if "top1_exact_match" in ev:
        rows.append([f"model: beam {beam}, its top hypothesis", *_scores(ev, "top1_")])
    if "greedy_exact_match" in ev:
        rows.append(["model: greedy", *_scores(ev, "greedy_")])
    rows.append(["retrieval baseline: code of the nearest training description (TF-IDF)", *_scores(ev, "baseline_")])
    ratio = ev["exact_match"] / max(ev["baseline_exact_match"], 1e-9)
    return (_table(["decoding", *(label for _, label in SCORES)], rows)
            + f"\n{ev['split']} split, {ev['n']:,} pairs. Exact match is {ratio:.2f}× the retrieval baseline's; "
            f"the model has {tr['parameters'] / 1e6:.1f} M parameters and trained {tr['steps']} steps "
            f"({tr['epochs']} epochs) in {tr['train_seconds']:.0f} s.\n")


def default_curve(root: Path) -> str:
    """The selection (dev) split during training: greedy decoding of its first pairs."""
    rows = list(csv.DictReader(io.StringIO((root / CURVE).read_text())))
    return _table(["step", "train loss", "dev loss", "dev BLEU", "dev exact match %"],
                  [[r["step"], f"{float(r['train_loss']):.3f}", f"{float(r['dev_loss']):.3f}",
                    f"{float(r['dev_bleu']):.1f}", f"{float(r['dev_exact_match']):.1f}"] for r in rows])


def default_examples(root: Path) -> str:
    """The evaluate stage's fixed sample of the test split, as it wrote it."""
    return (root / EXAMPLES).read_text()


def default_ablation(root: Path) -> str:
    """One row per variant of ``benchmarks.ablation``, each run from scratch at the default budget."""
    if not (root / ABLATION).is_file():
        return f"Not measured yet: run `python -m benchmarks.ablation` to write `{ABLATION}`.\n"
    result = read_json(root / ABLATION)
    rows = []
    for variant in result["variants"].values():
        ev, tr = variant["metrics/eval.json"], variant["metrics/train.json"]
        rows.append([variant["description"], f"{ev['exact_match']:.1f}", f"{ev['bleu']:.1f}",
                     f"{ev['greedy_exact_match']:.1f}", f"{tr['best_dev_exact_match']:.1f}",
                     f"{tr['best_dev_bleu']:.1f}", f"{tr['train_seconds']:.0f}", f"{variant['pipeline_seconds']:.0f}"])
    m = result["machine"]
    return (_table(["variant", "test EM %", "test BLEU", "test EM %, greedy", "dev EM % (selection)",
                    "dev BLEU (selection)", "train s", "whole `dvc exp run` s"], rows)
            + f"\n`{result['command']}` at commit {result['commit'][:7]}, on {m['cpu']} ({m['cores']} cores), "
            f"torch {m['torch']}.\n")


RENDERERS: dict[str, Callable[[Path], str]] = {
    "default-results": default_results,
    "default-curve": default_curve,
    "default-examples": default_examples,
    "default-ablation": default_ablation,
}


def render(text: str, root: Path) -> str:
    """``text`` with every marked section rendered anew; an unknown section name is an error."""
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise KeyError(f"README section <!-- report:{name} --> has no renderer (known: {', '.join(RENDERERS)})")
        return match.group(1) + RENDERERS[name](root) + match.group(4)

    return MARKER.sub(replace, text)


def main(root: Path = Path(".")) -> None:
    path = root / README
    text = path.read_text()
    new = render(text, root)
    if new != text:
        atomic_write_text(path, new)
    print(f"{path}: {'updated' if new != text else 'up to date'}", file=sys.stderr)


if __name__ == "__main__":
    main()
