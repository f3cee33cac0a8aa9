"""What kind of wrong: the wrong lines of an exported model on a split, sorted into kinds.

    .venv/bin/python -m benchmarks.error_analysis MODEL_DIR DATA.jsonl [--beam-size 10] [--examples 3]
                                                 [--out results/error-analysis-NAME.json]

Decodes ``DATA.jsonl`` as the model directory decodes (its recorded settings), keeping the whole
n-best list, and sorts every line whose output is not the reference (exact match on whitespace
tokens) two ways:

- **where the search failed**: the reference is in the n-best list but the reranked choice is
  another line (``ranked lower``), or the n-best list never holds it (``never in the n-best``,
  which no reranker can fix);
- **what is wrong in the output**, by comparing its Python token sequence with the reference's
  (:func:`kind_of`): only names differ (``name``: a missed or misspelt identifier), only literals
  differ (``literal``: a string or number), otherwise the shape of the line (``structure``: a call
  for an attribute, argument order, a missing clause).

Beside the table it reports what decides which lever can pay:

- the **ceiling**: the share of pairs whose reference the n-best holds (what a perfect reranker
  reaches), and the share of n-best lines that do not parse (slots a grammar-constrained search,
  ``evaluate.grammar``, could give to lines that do);
- **quote style only**: literal errors that differ from the reference only in ``'`` against ``"``,
  which the description does not say (``string 'title'`` for ``"title"``);
- with ``--train``, **neighbour has the shape**: wrong lines whose nearest training pair (the
  retrieval baseline's, :mod:`nmt.retrieval`) has the reference's shape (its tokens with names,
  strings and numbers abstracted): the most a retrieval-augmented input could fix by copying
  structure from a similar line.

Run it on the selection split (``data/raw/dev.jsonl``) to choose what to work on, never on the
split a figure reports, before and after each lever.
"""

from __future__ import annotations

import argparse
import io
import keyword
import tokenize
from collections import Counter
from pathlib import Path

from nmt.data.pairs import read_jsonl
from nmt.decoding.translator import Translator
from nmt.io import atomic_write_json
from nmt.metrics import same_tokens

KINDS = ("name", "literal", "structure")
WHERE = ("ranked lower", "never in the n-best")


def code_tokens(code: str) -> list[tuple[str, str]]:
    """(kind, text) of each Python token of one line: NAME, KEYWORD, STRING, NUMBER or OP; the
    whitespace-split tokens themselves when the line does not tokenize (an unclosed bracket)."""
    try:
        found = [(tokenize.tok_name[t.type], t.string)
                 for t in tokenize.generate_tokens(io.StringIO(code.strip() + "\n").readline)
                 if t.type in (tokenize.NAME, tokenize.STRING, tokenize.NUMBER, tokenize.OP)]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return [("RAW", t) for t in code.split()]
    return [("KEYWORD" if kind == "NAME" and keyword.iskeyword(text) else kind, text) for kind, text in found]


def kind_of(output: str, reference: str) -> str:
    """``name`` when the two lines differ only in identifiers, ``literal`` when only in strings or
    numbers, ``structure`` otherwise (also when names and literals both differ)."""
    out, ref = code_tokens(output), code_tokens(reference)
    if len(out) != len(ref) or [k for k, _ in out] != [k for k, _ in ref]:
        return "structure"
    differing = {k for (k, a), (_, b) in zip(out, ref) if a != b}
    if differing == {"NAME"}:
        return "name"
    if differing and differing <= {"STRING", "NUMBER"}:
        return "literal"
    return "structure"


def shape(code: str) -> list[str]:
    """The line's tokens with every name, string and number replaced by its kind."""
    return [text if kind in ("OP", "KEYWORD", "RAW") else kind for kind, text in code_tokens(code)]


def quote_style_only(output: str, reference: str) -> bool:
    """Whether the two lines differ, and only in which quote characters delimit their strings."""
    def unquoted(code: str) -> list[str]:
        return [t[1:-1] if kind == "STRING" and t[:1] in "'\"" and t[-1:] == t[:1] else t for kind, t in code_tokens(code)]
    return not same_tokens(output, reference) and unquoted(output) == unquoted(reference)


def analyse(rows: list[dict], translations: list, examples: int, neighbours: list[str] | None = None) -> dict:
    """Counts of wrong lines by kind and by where the search failed, with a few examples of each;
    ``neighbours``: the nearest training pair's code for each row (the retrieval baseline's answer)."""
    from nmt.metrics import is_valid_python

    table: Counter[tuple[str, str]] = Counter()
    shown: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    ceiling = sum(any(same_tokens(text, row["code"]) for text, _ in t.n_best) for row, t in zip(rows, translations))
    hypotheses = [text for t in translations for text, _ in t.n_best]
    not_parsing = sum(not is_valid_python(text) for text in hypotheses)
    quotes = neighbour_shape = 0
    for i, (row, t) in enumerate(zip(rows, translations)):
        if same_tokens(t.text, row["code"]):
            continue
        quotes += quote_style_only(t.text, row["code"])
        neighbour_shape += neighbours is not None and shape(neighbours[i]) == shape(row["code"])
        where = WHERE[0] if any(same_tokens(text, row["code"]) for text, _ in t.n_best) else WHERE[1]
        kind = kind_of(t.text, row["code"])
        table[kind, where] += 1
        if len(shown[kind]) < examples:
            shown[kind].append({"nl": row["nl"], "output": t.text, "reference": row["code"], "where": where})
    wrong = sum(table.values())
    return {"pairs": len(rows), "wrong": wrong,
            "exact_match": round(100 * (len(rows) - wrong) / max(1, len(rows)), 2),
            "ceiling": round(100 * ceiling / max(1, len(rows)), 2),
            "n_best_not_parsing_pct": round(100 * not_parsing / max(1, len(hypotheses)), 2),
            "quote_style_only": quotes,
            "neighbour_has_shape": neighbour_shape if neighbours is not None else None,
            "counts": {kind: {where: table[kind, where] for where in WHERE} for kind in KINDS},
            "examples": shown}


def markdown(result: dict) -> str:
    lines = [f"{result['pairs']} pairs, {result['wrong']} wrong (exact match {result['exact_match']:.1f} %); "
             f"ceiling (reference in the n-best) {result['ceiling']:.1f} %; "
             f"{result['n_best_not_parsing_pct']:.1f} % of n-best lines do not parse; "
             f"{result['quote_style_only']} wrong only in quote style"
             + ("" if result["neighbour_has_shape"] is None else
                f"; {result['neighbour_has_shape']} whose nearest training pair has the reference's shape"), "",
             "| kind | " + " | ".join(WHERE) + " | all | share of wrong |", "|---|---|---|---|---|"]
    for kind in KINDS:
        counts = result["counts"][kind]
        total = sum(counts.values())
        lines.append(f"| {kind} | " + " | ".join(str(counts[w]) for w in WHERE)
                     + f" | {total} | {100 * total / max(1, result['wrong']):.1f} % |")
    for kind in KINDS:
        for e in result["examples"][kind]:
            lines.append(f"\n{kind} ({e['where']}): {e['nl']}\n  output:    {e['output']}\n  reference: {e['reference']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.error_analysis", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("data", type=Path, help="JSON lines with 'nl' and 'code' (the selection split)")
    parser.add_argument("--beam-size", type=int, default=None, help="beam width (default: the model's)")
    parser.add_argument("--examples", type=int, default=3, help="examples shown per kind")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    parser.add_argument("--train", type=Path, help="the training pairs (data/raw/train.jsonl): count the wrong lines "
                                                   "whose nearest training pair has the reference's shape")
    parser.add_argument("--grammar", action="store_true", help="decode with grammar-constrained beam search")
    args = parser.parse_args(argv)
    translator = Translator.from_pretrained(args.model_dir, device="cpu")
    beam = args.beam_size or translator.defaults.beam_size
    rows = read_jsonl(args.data)
    translations = translator.translate([r["nl"] for r in rows], beam_size=beam, n_best=beam,
                                        grammar=args.grammar or None)
    neighbours = None
    if args.train:
        from nmt.retrieval import RetrievalBaseline

        train = read_jsonl(args.train)
        neighbours = RetrievalBaseline().fit([r["nl"] for r in train], [r["code"] for r in train]).predict(
            [r["nl"] for r in rows])
    result = {"model_dir": str(args.model_dir), "data": str(args.data), "beam_size": beam,
              "grammar": translator.settings(grammar=args.grammar or None).grammar,
              **analyse(rows, translations, args.examples, neighbours)}
    print(markdown(result))
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
