"""`nmt`: the command line. The same functions the pipeline uses, for people."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from nmt.errors import NmtError
from nmt.stage import fail

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Translate natural language into code with a from-scratch Transformer.")

ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="exported model directory")]
BeamOpt = Annotated[int, typer.Option("--beam", min=1, help="beam width (1 = greedy)")]
MaxLenOpt = Annotated[int, typer.Option("--max-len", min=1, help="longest output, in tokens")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda")]
LpOpt = Annotated[float, typer.Option("--length-penalty", min=0.0, help="GNMT alpha for beam search")]


def _load(model: Path, device: str):
    from nmt.translator import Translator

    if device not in ("auto", "cpu", "cuda"):
        fail(f"--device must be auto, cpu or cuda, got {device!r}")
    return Translator.from_pretrained(model, device=device)


def _stdin_lines() -> list[str]:
    data = sys.stdin.buffer.read()
    text = data.decode("utf-8", errors="replace")
    if "\ufffd" in text and b"\xef\xbf\xbd" not in data:
        print("warning: stdin is not valid UTF-8; undecodable bytes were replaced by U+FFFD", file=sys.stderr)
    return text.splitlines()


@app.command()
def generate(
    texts: Annotated[Optional[list[str]], typer.Argument(help="descriptions to translate; none = read stdin, one a line")] = None,
    model: ModelOpt = Path("models/export"),
    beam: BeamOpt = 1,
    n_best: Annotated[int, typer.Option("--n-best", min=1, help="hypotheses to print per input (<= --beam)")] = 1,
    max_len: MaxLenOpt = 200,
    length_penalty: LpOpt = 0.6,
    device: DeviceOpt = "auto",
) -> None:
    """Translate each description into code and print it, one per line (n-best: score TAB code)."""
    if n_best > beam:
        fail(f"--n-best ({n_best}) must not exceed --beam ({beam})")
    try:
        translator = _load(model, device)
        inputs = texts if texts else _stdin_lines()
        results = translator.translate(inputs, beam_size=beam, n_best=n_best, max_len=max_len,
                                       length_penalty=length_penalty)
    except NmtError as e:
        fail(str(e), e.exit_code)
    for lineno, result in enumerate(results, start=1):
        if result.truncated:
            print(f"warning: input {lineno} is longer than the model's maximum source length and was truncated",
                  file=sys.stderr)
        if n_best == 1:
            print(result.text)
        else:
            for code, score in result.n_best:
                print(f"{score:.4f}\t{code}")
            print()


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option("--data", help="JSON lines with 'nl' and 'code'")],
    model: ModelOpt = Path("models/export"),
    output: Annotated[Optional[Path], typer.Option("--output", help="write predictions here (JSON lines)")] = None,
    beam: BeamOpt = 1,
    max_len: MaxLenOpt = 200,
    length_penalty: LpOpt = 0.6,
    language: Annotated[str, typer.Option(help="python (adds syntax_valid), java or unknown")] = "python",
    device: DeviceOpt = "auto",
) -> None:
    """Score a model on any {"nl", "code"} file; print the metrics as JSON."""
    from nmt import metrics
    from nmt.io import atomic_write_jsonl, read_jsonl

    try:
        rows = read_jsonl(data)
        if not rows:
            fail(f"{data}: no pairs to evaluate")
        translator = _load(model, device)
        preds = [t.text for t in translator.translate([r["nl"] for r in rows], beam_size=beam, max_len=max_len,
                                                       length_penalty=length_penalty)]
    except NmtError as e:
        fail(str(e), e.exit_code)
    scores = metrics.score(preds, [r["code"] for r in rows], language)
    if output is not None:
        atomic_write_jsonl(output, ({**r, "prediction": p} for r, p in zip(rows, preds)))
    print(json.dumps(scores, indent=2))


@app.command()
def train(params: Annotated[Path, typer.Option(help="parameters file")] = Path("params.yaml")) -> None:
    """Run the train stage outside DVC (reads data/tokenized, writes models/ and metrics/)."""
    from nmt.stage import run_stage
    from nmt.train import train as train_model

    run_stage(train_model, params)


@app.command("params")
def show_params() -> None:
    """List every option of params.yaml with its default and help text."""
    from nmt.config import describe

    for key, default, help_text in describe():
        print(f"{key:<28} {default:<16} {help_text}")


@app.command("check-metrics")
def check_metrics(
    tolerance: Annotated[float, typer.Option(min=0.0, help="largest allowed move, in points (metrics are 0-100)")] = 1.0,
    rev: Annotated[str, typer.Option(help="git revision holding the committed metrics")] = "HEAD",
) -> None:
    """Compare the workspace's metrics/ with the committed ones (`dvc metrics diff`); exit 1 on a move."""
    import subprocess

    from nmt.regression import metric_moves

    proc = subprocess.run(["dvc", "metrics", "diff", "--json", "--all", rev], capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"`dvc metrics diff` failed: {proc.stderr.strip()}")
    problems, compared = metric_moves(json.loads(proc.stdout or "{}"), tolerance)
    if compared == 0:
        fail("no committed metrics to compare with (run `make repro` and commit metrics/ first)", 1)
    for p in problems:
        print(f"moved: {p}", file=sys.stderr)
    if problems:
        raise typer.Exit(1)
    print(f"{compared} metrics within {tolerance} of {rev}")


if __name__ == "__main__":
    app()
