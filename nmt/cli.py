"""`nmt`: the command line. The same functions the pipeline uses, for people."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from nmt.errors import NmtError, fail

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Translate natural language into code with a from-scratch Transformer.")

# Decoding options left out take the model directory's defaults (config.json "decoding", written
# by the export stage from params.yaml's evaluate section), else the built-in ones.
MODEL_DEFAULT = "; default: the model's (config.json 'decoding'), else "
ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="exported model directory")]
BeamOpt = Annotated[Optional[int], typer.Option("--beam", show_default=False,
                                                help=f"beam width (1 = greedy){MODEL_DEFAULT}1")]
MaxLenOpt = Annotated[Optional[int], typer.Option("--max-len", show_default=False,
                                                  help=f"longest output, in tokens (max_len_b){MODEL_DEFAULT}200")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda")]
QuantizeOpt = Annotated[str, typer.Option(
    "--quantize", help="int8: decode with int8 linear layers (dynamic quantization; CPU only; faster, a little "
                       "less exact: docs/benchmarks.md); none: the model's float32 weights")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="inputs decoded together")]
PROGRESS_MIN_INPUTS = 64  # fewer inputs than this: no progress bar
MaxLenAOpt = Annotated[Optional[float], typer.Option(
    "--max-len-a", show_default=False, help=f"longest output = a * source tokens + --max-len{MODEL_DEFAULT}0")]
LpOpt = Annotated[Optional[float], typer.Option(
    "--length-penalty", show_default=False, help=f"GNMT alpha for beam search (>= 0){MODEL_DEFAULT}0.6")]
RerankOpt = Annotated[Optional[str], typer.Option(
    "--rerank", show_default=False,
    help=f"none; syntax: the best hypothesis of the beam that is valid Python; lexical: the same, weighing "
         f"each against its description's words (needs the export's lexicon.json){MODEL_DEFAULT}none")]
PrefixOpt = Annotated[Optional[bool], typer.Option(
    "--literal-prefixes/--no-literal-prefixes", show_default=False,
    help=f"put r (b) on a literal the description calls a raw (bytes) string{MODEL_DEFAULT}off")]
GrammarOpt = Annotated[Optional[bool], typer.Option(
    "--grammar/--no-grammar", show_default=False,
    help=f"beam search: keep only hypotheses that can still become valid Python (nmt/decoding/grammar.py)"
         f"{MODEL_DEFAULT}off")]
# The command line's name of each DecodeSettings field: its checks' messages name the flag.
FLAGS = {"beam_size": "--beam", "n_best": "--n-best", "max_len_a": "--max-len-a", "max_len_b": "--max-len",
         "length_penalty": "--length-penalty", "temperature": "--temperature", "top_k": "--top-k",
         "top_p": "--top-p", "rerank": "--rerank", "literal_prefixes": "--literal-prefixes",
         "grammar": "--grammar"}


def _settings(translator, sample: bool = False, **given):
    """The DecodeSettings of a command: the options given over the model's defaults, checked once
    (DecodeSettings.check); a bad one exits 2 naming its flag."""
    import re

    try:
        settings = translator.settings(sample, **given)
        settings.check()
    except ValueError as e:
        message = re.sub(r"\b(" + "|".join(FLAGS) + r")\b", lambda m: FLAGS[m[1]], str(e))
        if given.get("beam_size") is None and "--beam" in message:
            message += " (--beam not given: the model's default; pass --beam)"
        fail(message)
    return settings


def _load(model: Path, device: str, quantize: str = "none"):
    from nmt.decoding.quantize import QUANTIZE_CHOICES
    from nmt.decoding.translator import Translator

    if device not in ("auto", "cpu", "cuda"):
        fail(f"--device must be auto, cpu or cuda, got {device!r}")
    if quantize not in QUANTIZE_CHOICES:
        fail(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    return Translator.from_pretrained(model, device=device, quantize=quantize)


@dataclass
class Inputs:
    texts: list[str]
    labels: list[str]  # where each text came from, for messages: "argument 2", "stdin line 5"
    rows: list[dict] | None = None  # --jsonl: the objects read, echoed in the output


def _text_lines(data: bytes, source: str) -> list[str]:
    """One input per line (only "\n" ends a line: control characters stay inside their line)."""
    text = data.decode("utf-8", errors="replace")
    if "\ufffd" in text and b"\xef\xbf\xbd" not in data:
        print(f"warning: {source} is not valid UTF-8; undecodable bytes were replaced by U+FFFD", file=sys.stderr)
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _read_inputs(texts: list[str] | None, input_file: Path | None, jsonl: bool) -> Inputs:
    """The inputs of `generate`: arguments, else --input or stdin, as plain lines or JSON lines."""
    from nmt.data.pairs import parse_jsonl

    if texts:
        if input_file is not None or jsonl:
            fail("give descriptions as arguments, or use --input / --jsonl, not both")
        return Inputs(texts, [f"argument {i}" for i in range(1, len(texts) + 1)])
    source = str(input_file) if input_file is not None else "stdin"
    data = input_file.read_bytes() if input_file is not None else sys.stdin.buffer.read()
    if jsonl:
        numbered = parse_jsonl(data.split(b"\n"), source, required=("nl",))
        return Inputs([row["nl"] for _, row in numbered], [f"{source} line {n}" for n, _ in numbered],
                      [row for _, row in numbered])
    lines = _text_lines(data, source)
    return Inputs(lines, [f"{source} line {n}" for n in range(1, len(lines) + 1)])


def _check_sampling_flags(sample: bool, given: dict[str, bool]) -> None:
    """Exit 2 naming the flag when a sampling option (``given``: flag -> was it set) comes without --sample."""
    if not sample:
        for name, was_given in given.items():
            if was_given:
                fail(f"{name} only applies with --sample")


def _progress(total: int):
    """A progress bar on stderr, for many inputs and a terminal only."""
    from tqdm import tqdm

    quiet = total <= PROGRESS_MIN_INPUTS or not sys.stderr.isatty()
    return tqdm(total=total, unit="input", file=sys.stderr, disable=quiet, leave=False)


def _print_results(results: list, rows: list[dict] | None, n_best: int) -> None:
    if rows is not None:
        for row, t in zip(rows, results):
            n_best_list = [{"code": code, "score": score} for code, score in t.n_best]
            print(json.dumps({**row, "code": t.text, "score": t.score, "n_best": n_best_list}))
    elif n_best == 1:
        for t in results:
            print(t.text)
    else:
        for t in results:
            for code, score in t.n_best:
                print(f"{score:.4f}\t{code}")
            print()


@app.command()
def generate(
    texts: Annotated[Optional[list[str]], typer.Argument(
        help="descriptions to translate; none = read --input or stdin, one a line")] = None,
    model: ModelOpt = Path("models/export"),
    input_file: Annotated[Optional[Path], typer.Option(
        "--input", exists=True, dir_okay=False, help="read inputs from this file instead of stdin")] = None,
    jsonl: Annotated[bool, typer.Option(
        "--jsonl", help='inputs are JSON lines {"nl": ...}; print each object with "code", "score", "n_best"')] = False,
    beam: BeamOpt = None,
    n_best: Annotated[int, typer.Option("--n-best",
                                        help="hypotheses per input (<= --beam), or samples with --sample")] = 1,
    sample: Annotated[bool, typer.Option("--sample", help="sample instead of greedy / beam search")] = False,
    temperature: Annotated[float, typer.Option("--temperature",
                                               help="--sample: divide the logits by this (> 0)")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="--sample: keep the k most likely tokens (0 = all)")] = 0,
    top_p: Annotated[float, typer.Option("--top-p",
                                         help="--sample: nucleus, smallest set with this mass, in (0, 1]")] = 1.0,
    seed: Annotated[Optional[int], typer.Option("--seed", help="--sample: seed, for repeatable samples")] = None,
    max_len: MaxLenOpt = None,
    max_len_a: MaxLenAOpt = None,
    length_penalty: LpOpt = None,
    rerank: RerankOpt = None,
    literal_prefixes: PrefixOpt = None,
    grammar: GrammarOpt = None,
    device: DeviceOpt = "auto",
    quantize: QuantizeOpt = "none",
    strict: Annotated[bool, typer.Option("--strict", help="an input too long for the model is an error (exit 2), "
                                                          "not truncated with a warning")] = False,
    batch_size: BatchOpt = 64,
) -> None:
    """Translate each description into code and print it, one per line (n-best: score TAB code)."""
    from nmt.errors import InputTooLongError

    _check_sampling_flags(sample, {"--temperature": temperature != 1.0, "--top-k": top_k != 0,
                                   "--top-p": top_p != 1.0, "--seed": seed is not None})
    try:
        inputs = _read_inputs(texts, input_file, jsonl)
        translator = _load(model, device, quantize)
        settings = _settings(translator, sample, beam_size=beam, n_best=n_best, max_len_a=max_len_a,
                             max_len_b=max_len, length_penalty=length_penalty, temperature=temperature,
                             top_k=top_k, top_p=top_p, rerank=rerank, literal_prefixes=literal_prefixes,
                             grammar=grammar)
        with _progress(len(inputs.texts)) as bar:
            results = translator.translate(inputs.texts, settings, batch_size=batch_size, seed=seed, strict=strict,
                                           on_batch=bar.update)
    except InputTooLongError as e:
        fail(f"{inputs.labels[e.index]}: {e.n_tokens} tokens, more than the model accepts ({e.limit}); "
             "without --strict it would be truncated")
    except NmtError as e:
        fail(str(e), e.exit_code)
    for label, result in zip(inputs.labels, results):
        if result.truncated:
            print(f"warning: {label}: longer than the model's maximum source length; truncated", file=sys.stderr)
    _print_results(results, inputs.rows, n_best)


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option("--data", help="JSON lines with 'nl' and 'code'")],
    model: ModelOpt = Path("models/export"),
    output: Annotated[Optional[Path], typer.Option("--output", help="write predictions here (JSON lines)")] = None,
    beam: BeamOpt = None,
    max_len: MaxLenOpt = None,
    max_len_a: MaxLenAOpt = None,
    length_penalty: LpOpt = None,
    rerank: RerankOpt = None,
    literal_prefixes: PrefixOpt = None,
    grammar: GrammarOpt = None,
    language: Annotated[str, typer.Option(help="python (adds syntax_valid), java or unknown")] = "python",
    device: DeviceOpt = "auto",
    quantize: QuantizeOpt = "none",
    batch_size: BatchOpt = 64,
) -> None:
    """Score a model on any {"nl", "code"} file; print the metrics as JSON.

    Decodes as the model directory says (config.json "decoding": the pipeline's own settings) unless
    an option is given.
    """
    from nmt import metrics
    from nmt.data.pairs import read_jsonl
    from nmt.io import atomic_write_jsonl

    try:
        rows = read_jsonl(data)
        if not rows:
            fail(f"{data}: no pairs to evaluate")
        translator = _load(model, device, quantize)
        settings = _settings(translator, beam_size=beam, max_len_a=max_len_a, max_len_b=max_len,
                             length_penalty=length_penalty, rerank=rerank, literal_prefixes=literal_prefixes,
                             grammar=grammar)
        translations = translator.translate([r["nl"] for r in rows], settings, batch_size=batch_size)
    except NmtError as e:
        fail(str(e), e.exit_code)
    preds = [t.text for t in translations]
    scores = metrics.score(preds, [r["code"] for r in rows], language)
    if output is not None:
        atomic_write_jsonl(output, ({**r, "prediction": p} for r, p in zip(rows, preds)))
    print(json.dumps(scores, indent=2))


@app.command()
def pull(
    targets: Annotated[Optional[list[str]], typer.Argument(
        help="outputs or stages to fetch, e.g. models/export (default: every output of dvc.lock)")] = None,
    remote: Annotated[Optional[str], typer.Option("--remote", "-r", help="DVC remote (default: the default remote)")] = None,
) -> None:
    """`dvc pull` with the remote checked first: fetch the pipeline's outputs instead of building them."""
    from nmt.dvc import DvcError
    from nmt.dvc import pull as dvc_pull

    try:
        print(dvc_pull(targets or [], remote), end="")
    except DvcError as e:
        fail(str(e), e.exit_code)


@app.command()
def train(params: Annotated[Path, typer.Option(help="parameters file")] = Path("params.yaml")) -> None:
    """Run the train stage outside DVC (reads data/tokenized, writes models/ and metrics/)."""
    from nmt.stages.runner import run_stage
    from nmt.stages.train import train as train_model

    run_stage(train_model, params)


@app.command("params")
def show_params(params: Annotated[Path, typer.Option(help="parameters file a run would read")] = Path("params.yaml"),
                ) -> None:
    """List every option with the value a run would use (PARAMS, validated), its help text, and the
    built-in default where the file sets another value."""
    from nmt.params import describe, flatten, load_params, to_dict

    try:
        values = flatten(to_dict(load_params(params))) if params.is_file() else {}
    except NmtError as e:
        fail(str(e), e.exit_code)
    if not params.is_file():
        print(f"{params}: no such file; showing the built-in defaults", file=sys.stderr)
    for key, default, help_text in describe():
        value = repr(values[key]) if key in values else default
        note = f" (built-in default {default})" if value != default else ""
        print(f"{key:<28} {value:<16} {help_text}{note}")


@app.command("check-metrics")
def check_metrics(
    tolerance: Annotated[float, typer.Option(min=0.0, help="largest allowed drop, in points (scores are 0-100)")] = 1.0,
    rev: Annotated[str, typer.Option(help="git revision holding the committed metrics")] = "HEAD",
    written_after: Annotated[Optional[float], typer.Option(
        help="Unix time the pipeline run began: fail unless every metrics file was written after it "
             "(outputs already up to date are not a pass)")] = None,
) -> None:
    """CI's gate: test exact match and BLEU may not fall more than TOLERANCE below the committed values."""
    from nmt.dvc import DvcError, metrics_diff
    from nmt.quality_gate import RUN_OUTPUTS, score_drops, stale_files

    problems = []
    if written_after is not None:
        problems += stale_files(RUN_OUTPUTS, written_after)
    try:
        diff = metrics_diff(rev)
    except DvcError as e:
        fail(str(e), e.exit_code)
    drops, checked = score_drops(diff, tolerance)
    for line in checked:
        print(f"ok: {line}")
    for p in problems + drops:
        print(f"failed: {p}", file=sys.stderr)
    if problems or drops:
        raise typer.Exit(1)
    print(f"{len(checked)} gated scores within {tolerance} of {rev} or above")


@app.command()
def runs(
    last: Annotated[int, typer.Option("--last", "-n", min=1, help="how many of the newest runs")] = 10,
    experiment: Annotated[Optional[str], typer.Option(help="MLflow experiment (default: mlflow.experiment of params.yaml)")] = None,
    params: Annotated[Path, typer.Option(help="parameters file")] = Path("params.yaml"),
) -> None:
    """Table of the newest training runs with key params and metrics, from the MLflow store."""
    from rich.console import Console
    from rich.table import Table

    from nmt.tracking.browse import RUN_COLUMNS, recent_runs
    from nmt.tracking.store import tracking_uri

    try:
        name = experiment or _experiment_name(params)
        rows = recent_runs(name, last)
    except NmtError as e:
        fail(str(e), e.exit_code)
    table = Table(title=f"MLflow experiment {name!r} ({tracking_uri()}), newest first")
    for header, column in RUN_COLUMNS:
        table.add_column(header, justify="right" if column.startswith(("metrics.", "params.train", "params.model")) else "left")
    for row in rows:
        table.add_row(*row.values())
    Console(width=200).print(table)


@app.command()
def ui(
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 5000,
    host: Annotated[str, typer.Option(help="interface to bind; 127.0.0.1 keeps it private to this machine")] = "127.0.0.1",
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="open the runs page in a browser when one is available")] = True,
    params: Annotated[Path, typer.Option(help="parameters file")] = Path("params.yaml"),
) -> None:
    """Start `mlflow ui` on this project's store, opening on the runs table of its experiment.

    With MLFLOW_TRACKING_URI naming a tracking server, that server is the UI: print (and open) its
    runs page instead of starting another.
    """
    from nmt.tracking.browse import prepare_ui, serve_ui, ui_url
    from nmt.tracking.store import connect, is_server, tracking_uri

    try:
        name = _experiment_name(params)
        server = tracking_uri() if is_server(tracking_uri()) else None
        if server:
            connect(Path.cwd())  # a clear error when it does not answer
        url = ui_url("127.0.0.1" if host in ("0.0.0.0", "::") else host, port, prepare_ui(name), base=server)
    except NmtError as e:
        fail(str(e), e.exit_code)
    if server:
        print(f"MLflow UI (the tracking server), experiment {name!r}: {url}", flush=True)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        return
    serve_ui(url, name, host, port, open_browser)


@app.command()
def demo(
    model: Annotated[Path, typer.Option("--model", "-m", help="exported model directory")],
    port: Annotated[int, typer.Option(min=1, max=65535, help="port on 127.0.0.1 to serve the page on")] = 7860,
    pairs: Annotated[Optional[Path], typer.Option(
        "--pairs", show_default=False, dir_okay=False,
        help="training pairs (JSON lines, nl and code) the retrieval baseline searches; default: the model's "
             "retrieval.jsonl.gz (written by the export stage), else data/raw/train.jsonl")] = None,
    n_best: Annotated[int, typer.Option("--n-best", min=1, help="code lines shown per description")] = 5,
    device: DeviceOpt = "auto",
) -> None:
    """Serve a web page on 127.0.0.1: a description in; the n-best code lines with scores, the retrieval
    baseline's answer, and the description words the best line reuses, out."""
    from nmt.demo import serve

    if device not in ("auto", "cpu", "cuda"):
        fail(f"--device must be auto, cpu or cuda, got {device!r}")
    serve(model, port, pairs, device, n_best)


def _experiment_name(params: Path) -> str:
    from nmt.params import load_params

    return load_params(params).mlflow.experiment


def main() -> None:
    """The `nmt` command: typer's app, with file system errors (disk full, read-only) as a message."""
    from nmt.errors import describe_os_error

    try:
        app()
    except OSError as e:
        if e.filename is None:
            raise
        fail(describe_os_error(e), 1)


if __name__ == "__main__":
    main()
