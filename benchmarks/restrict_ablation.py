"""What decoding restricted to the source's own placeholders is worth, on an exported model.

    .venv/bin/python -m benchmarks.restrict_ablation MODEL_DIR DATA.jsonl [--beam-size 1]

A model trained with ``tokenize.placeholder_tokens`` decodes with ``restrict_to_source`` on: an
output may only use the placeholders (``_ID:i_``, ``_STR:i_``) of its own description. This
decodes ``DATA.jsonl`` twice with the same weights, restricted and unrestricted, and prints
exact match, BLEU and syntax-valid rate for each, and how many outputs hold a placeholder left
without a literal (one that restoring cannot fill).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nmt import metrics
from nmt.data.pairs import read_jsonl
from nmt.decoding.translator import Translator
from nmt.placeholders import PATTERN


def run(model_dir: Path, data: Path, beam_size: int) -> dict[str, dict[str, float]]:
    translator = Translator.from_pretrained(model_dir, device="cpu")
    if not translator.tokenizer.placeholder_ids:
        raise SystemExit(f"{model_dir}: trained without tokenize.placeholder_tokens; nothing to compare")
    rows = read_jsonl(data)
    nl, refs = [r["nl"] for r in rows], [r["code"] for r in rows]
    restriction = translator.model.source_only.clone()
    results = {}
    for name, mask in (("restricted", restriction), ("unrestricted", restriction & False)):
        translator.model.source_only.copy_(mask)
        hyps = [t.text for t in translator.translate(nl, beam_size=beam_size)]
        results[name] = {**metrics.score(hyps, refs), "unfilled_placeholders": sum(bool(PATTERN.search(h)) for h in hyps)}
    translator.model.source_only.copy_(restriction)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path, help="an exported model (models/export)")
    ap.add_argument("data", type=Path, help='JSON lines of {"nl", "code"}')
    ap.add_argument("--beam-size", type=int, default=1, help="1 = greedy")
    args = ap.parse_args()
    print("| decoding | exact match | BLEU | syntax-valid | outputs with an unfilled placeholder |")
    print("|---|---|---|---|---|")
    for name, r in run(args.model_dir, args.data, args.beam_size).items():
        print(f"| {name} | {r['exact_match']:.1f} | {r['bleu']:.1f} | {r['syntax_valid']:.1f} | "
              f"{r['unfilled_placeholders']} |")


if __name__ == "__main__":
    main()
