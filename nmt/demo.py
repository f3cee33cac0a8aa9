"""`nmt demo`: a web page (Gradio, on 127.0.0.1) that puts an exported model beside its baseline.

A description goes in; out come the model's n-best code lines with their scores, the retrieval
baseline's answer (the code of the nearest training description, :mod:`nmt.retrieval`), and the
description with the words the best line reuses highlighted (:func:`highlight`).

What the highlight can honestly say: the decoder does not return the pointer's attention weights
(a :class:`~nmt.decoding.search.Hypothesis` is tokens and a score), so a plain word in the output
may have been copied by the pointer or generated from the vocabulary; the page does not tell them
apart. A placeholder is different: the model never saw that word or literal, only ``_STR:i_`` /
``_ID:i_`` (:mod:`nmt.placeholders`), so its presence in the output means the model wrote the
placeholder and the translator restored it.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nmt.data.pairs import read_pair_file
from nmt.decoding.rerank import WORD, words
from nmt.decoding.translator import Translator
from nmt.errors import DataError, ModelFileError, fail
from nmt.layout import RAW
from nmt.placeholders import description_spans, mask_description
from nmt.retrieval import PAIRS_FILE, RetrievalBaseline

PLACEHOLDER = "placeholder copied"  # masked as _STR:i_ / _ID:i_, and the best line holds it
IN_OUTPUT = "word in output"  # any other description word the best line holds (pointer or generated)
COLORS = {PLACEHOLDER: "#f4a261", IN_OUTPUT: "#8ecae6"}
HIGHLIGHT_NOTE = (f"**{PLACEHOLDER}**: a quoted literal or name the model saw only as a placeholder (`_STR:i_`, `_ID:i_`) "
                  f"and wrote back into its best line. **{IN_OUTPUT}**: another word of the description that the best "
                  "line holds; the pointer may have copied it or the decoder generated it (the pointer's attention "
                  "weights are not exposed, so the page cannot say which).")
DEFAULT_PAIRS = RAW / "train.jsonl"  # where a repository keeps them, for exports made before they carried them


@dataclass
class Answer:
    n_best: list[list]  # [rank, score, code], best first
    retrieval: str  # the nearest training pair's code
    neighbour: str  # ... and its description
    highlight: list[tuple[str, str | None]]  # the description in pieces, each with its label or None


class Demo:
    """A translator and the retrieval baseline over its training pairs, answering one description at a time."""

    def __init__(self, translator: Translator, pairs: list[tuple[str, str]], n_best: int):
        self.translator = translator
        beam = max(translator.defaults.beam_size, n_best)  # the model's own search, widened to show n lines
        self.settings = translator.settings(beam_size=beam, n_best=n_best)
        self.settings.check()
        self.pairs = pairs
        self.baseline = RetrievalBaseline().fit([nl for nl, _ in pairs], [code for _, code in pairs])

    def answer(self, description: str) -> Answer:
        result = self.translator.translate([description], self.settings)[0]
        rows = [[rank, round(score, 4), code] for rank, (code, score) in enumerate(result.n_best, 1)]
        nearest = self.baseline.nearest([description])[0]
        nl, code = self.pairs[nearest]
        return Answer(rows, code, nl, highlight(description, result.text, self.translator.tokenizer))


def highlight(description: str, code: str, tokenizer) -> list[tuple[str, str | None]]:
    """``description`` cut into pieces that join back to it, each labelled :data:`PLACEHOLDER`,
    :data:`IN_OUTPUT` or None (see the module docstring for what the labels can claim)."""
    masked = mask_description(description, tokenizer.name_placeholders, tokenizer.common_words) \
        if tokenizer.string_placeholders else None
    names = set(masked.names) if masked is not None else set()
    literals = set(masked.literals) - names if masked is not None else set()
    in_code = set(words(code))
    marks: list[tuple[int, int, str]] = []  # (start, end, label), in order, not overlapping
    spans = description_spans(description) if literals else []
    for start, end in spans:
        if description[start:end] in code:
            marks.append((start, end, PLACEHOLDER))
    for m in WORD.finditer(description):  # the words rerank compares, with positions
        if m.group(0) in in_code and not any(s <= m.start() < e for s, e in spans):
            marks.append((m.start(), m.end(), PLACEHOLDER if m.group(0) in names else IN_OUTPUT))
    return _pieces(description, sorted(marks))


def _pieces(text: str, marks: list[tuple[int, int, str]]) -> list[tuple[str, str | None]]:
    out, last = [], 0
    for start, end, label in marks:
        if start > last:
            out.append((text[last:start], None))
        out.append((text[start:end], label))
        last = end
    if last < len(text):
        out.append((text[last:], None))
    return out


def load_pairs(model_dir: Path, pairs_file: Path | None) -> tuple[list[tuple[str, str]], Path]:
    """The retrieval baseline's training pairs: ``pairs_file`` if given, else the export's
    :data:`~nmt.retrieval.PAIRS_FILE`, else data/raw/train.jsonl. Raises DataError naming the fix."""
    path = pairs_file or next((p for p in (model_dir / PAIRS_FILE, DEFAULT_PAIRS) if p.is_file()), None)
    if path is None:
        raise DataError(f"{model_dir / PAIRS_FILE}: missing (exports before the demo lack it), and no "
                        f"{DEFAULT_PAIRS} here: re-export the model (dvc repro export) or pass --pairs TRAIN.jsonl")
    if not path.is_file():
        raise DataError(f"{path}: no such file (--pairs: the training pairs, JSON lines with 'nl' and 'code')")
    rows = read_pair_file(path)
    return rows, path


def check_port(port: int) -> None:
    """Exit 1 naming the port when something already listens on it (before the slow model load)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            fail(f"port {port} on 127.0.0.1 is not free ({e.strerror}): pick another with --port", 1)


def page(demo: Demo):
    """The Gradio page: a description box, then the n-best table, the baseline's answer and the highlight."""
    import gradio as gr

    def run(description: str):
        if not description.strip():
            raise gr.Error("type a description first")
        a = demo.answer(description)
        return a.n_best, a.retrieval, a.neighbour, a.highlight

    with gr.Blocks(title="nmt demo") as blocks:
        gr.Markdown("# nmt: description → code\nThe model's n-best lines, the retrieval baseline beside them.")
        with gr.Row():
            text = gr.Textbox(label="description", elem_id="description", scale=4, lines=2)
            submit = gr.Button("Translate", variant="primary", elem_id="submit", scale=1)
        with gr.Row():
            table = gr.Dataframe(headers=["rank", "score", "code"], label=_table_label(demo.settings),
                                 elem_id="nbest", interactive=False, scale=3)
            with gr.Column(scale=2):
                retrieval = gr.Textbox(label="retrieval baseline: code of the nearest training description",
                                       elem_id="retrieval", interactive=False)
                neighbour = gr.Textbox(label="... that description", elem_id="neighbour", interactive=False)
        copied = gr.HighlightedText(label="description words the best line reuses", elem_id="copied",
                                    color_map=COLORS, show_legend=True, combine_adjacent=False)
        gr.Markdown(HIGHLIGHT_NOTE)
        outputs = [table, retrieval, neighbour, copied]
        submit.click(run, text, outputs)
        text.submit(run, text, outputs)
    return blocks


def _table_label(s) -> str:
    """What the n-best table shows: the search, what the score is and what orders the rows."""
    score = "log-probability" if s.beam_size == 1 else "length-normalised log-probability"
    order = "best score first" if s.rerank == "none" else f"ordered by the {s.rerank} reranker, not by score"
    return f"model: {s.n_best}-best, beam {s.beam_size}; score = {score}; {order}"


def serve(model_dir: Path, port: int, pairs_file: Path | None, device: str, n_best: int) -> None:
    """Load everything, then serve the page on 127.0.0.1:``port`` until Ctrl-C or SIGTERM."""
    check_port(port)
    started = time.perf_counter()
    try:
        translator = Translator.from_pretrained(model_dir, device=device)
        pairs, source = load_pairs(model_dir, pairs_file)
        demo = Demo(translator, pairs, n_best)
    except (DataError, ModelFileError) as e:
        fail(str(e), e.exit_code)
    except ValueError as e:  # DecodeSettings.check: --n-best out of range
        fail(f"--n-best: {e}")
    print(f"demo: model {model_dir}, {len(pairs)} retrieval pairs from {source}", file=sys.stderr)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: the page is local
    blocks = page(demo)
    try:
        blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    except OSError as e:
        fail(f"could not serve on 127.0.0.1:{port} ({e}): pick another port with --port", 1)
    print(f"demo ready in {time.perf_counter() - started:.1f} s: http://127.0.0.1:{port}/", flush=True)
    try:
        blocks.block_thread()
    finally:
        blocks.close()
