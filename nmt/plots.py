"""Pictures of a run: the BLEU curve and the example-translation table."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, none opened
import matplotlib.pyplot as plt  # noqa: E402

from nmt.io import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        # Fixed metadata: the same figure gives the same bytes, so DVC sees no change.
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def bleu_curve(steps: Sequence[int], bleu: Sequence[float], em: Sequence[float], path: Path,
               baseline_bleu: float | None = None) -> None:
    """Dev BLEU and exact match (real decoding, greedy by default) against training steps."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(steps, bleu, marker="o", label="dev BLEU")
    ax.plot(steps, em, marker="s", label="dev exact match %")
    if baseline_bleu is not None:
        ax.axhline(baseline_bleu, linestyle="--", color="grey", label="retrieval baseline BLEU")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("score (0-100)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("BLEU during training")
    _save(fig, path)


def _wrap(text: str, width: int, max_lines: int = 12) -> str:
    """Wrap each line on its own, so code keeps its line breaks and indentation."""
    lines = [wrapped for line in (text.splitlines() or [""])
             for wrapped in (textwrap.wrap(line, width, replace_whitespace=False) or [""])]
    return "\n".join(lines[:max_lines] + (["..."] if len(lines) > max_lines else []))


def examples_table(rows: Sequence[dict[str, str]], path: Path, width: int = 46) -> None:
    """A picture of the markdown example table: input, reference, prediction."""
    cols = ["input", "reference", "prediction"]
    wrapped = [[_wrap(r[c], width) for c in cols] for r in rows]
    heights = [max(cell.count("\n") + 1 for cell in row) for row in wrapped]
    fig_h = 0.6 + 0.19 * (sum(heights) + len(rows))
    fig, ax = plt.subplots(figsize=(14, fig_h))
    ax.axis("off")
    table = ax.table(cellText=wrapped, colLabels=cols, loc="upper center", cellLoc="left", colLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (r, _), cell in table.get_celld().items():
        lines = 1 if r == 0 else heights[r - 1]
        cell.set_height((lines * 0.19 + 0.12) / fig_h)
        cell.get_text().set_family("monospace")
    _save(fig, path)
