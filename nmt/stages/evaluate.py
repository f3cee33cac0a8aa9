"""The evaluate stage: decode the test split, score it, and set it beside a retrieval baseline."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from nmt import metrics, plots
from nmt.config import Params
from nmt.data.pairs import read_jsonl
from nmt.data.source import language_of
from nmt.decoding.settings import DecodeSettings
from nmt.decoding.translator import Translator
from nmt.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from nmt.layout import EvaluateLayout
from nmt.retrieval import RetrievalBaseline
from nmt.tracking.run import Run


def test_decodings(settings: DecodeSettings) -> dict[str, DecodeSettings]:
    """What the stage decodes the test split with: its settings (returning the whole beam when a
    reranker chooses, so the beam's own top hypothesis is there too), and greedy beside them."""
    reranked = settings.rerank != "none" and settings.beam_size > 1
    return {"chosen": replace(settings, n_best=settings.beam_size if reranked else 1),
            "greedy": replace(settings, beam_size=1, n_best=1, rerank="none")}


def example_rows(nl: list[str], refs: list[str], preds: list[str], n: int, seed: int) -> list[dict[str, str]]:
    """A fixed sample: the same rows for the same seed and test split."""
    picked = sorted(random.Random(seed).sample(range(len(nl)), min(n, len(nl))))
    return [{"input": nl[i], "reference": refs[i], "prediction": preds[i]} for i in picked]


def markdown_table(rows: list[dict[str, str]]) -> str:
    def cell(s: str) -> str:
        s = s.replace("|", "\\|").replace("\n", "<br>")
        return f"`{s}`" if s and "`" not in s else s

    lines = ["| description | generated | reference |", "|---|---|---|"]
    lines += [f"| {r['input'].replace('|', chr(92) + '|')} | {cell(r['prediction'])} | {cell(r['reference'])} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def evaluate(params: Params, paths: EvaluateLayout = EvaluateLayout()) -> dict:
    train = read_jsonl(paths.raw / "train.jsonl")
    test = read_jsonl(paths.raw / "test.jsonl")
    nl, refs = [r["nl"] for r in test], [r["code"] for r in test]

    cfg = params.evaluate
    settings = DecodeSettings.from_config(cfg)  # built once, passed whole
    translator = Translator.from_files(paths.weights, paths.config, paths.tokenizer, device=params.train.device,
                                       lexicon=paths.lexicon if settings.rerank == "lexical" else None,
                                       reverse=(paths.reverse_weights, paths.reverse_config)
                                       if settings.reconstructs else None, pairs=paths.raw / "train.jsonl")
    decodings = test_decodings(settings)
    # One decode serves both the reranked predictions and the beam's own top hypotheses: reranking
    # reorders the whole n-best and keeps the model's scores, so the best-scoring one is the beam's top.
    beam = translator.translate(nl, decodings["chosen"], batch_size=cfg.batch_size)
    predictions = [t.text for t in beam]
    baseline = RetrievalBaseline().fit([r["nl"] for r in train], [r["code"] for r in train]).predict(nl)

    # Measurements only: the beam size is a parameter (params.yaml), the pair count data/raw/stats.json's.
    language = language_of(paths.raw)
    scores = {k: v for k, v in metrics.score(predictions, refs, language).items() if k != "n"}
    if decodings["chosen"].n_best > 1:
        # The beam's best-scoring hypotheses beside the reranked ones: what reranking adds.
        top = [max(t.n_best, key=lambda c: c[1])[0] for t in beam]
        top_scores = metrics.score(top, refs, language)
        scores.update({f"top1_{k}": v for k, v in top_scores.items() if k != "n"})
    if cfg.beam_size > 1:
        # Greedy beside beam, so the report shows what the search adds.
        greedy = [t.text for t in translator.translate(nl, decodings["greedy"], batch_size=cfg.batch_size)]
        greedy_scores = metrics.score(greedy, refs, language)
        scores.update({f"greedy_{k}": v for k, v in greedy_scores.items() if k != "n"})
    base_scores = metrics.score(baseline, refs, language)
    scores.update({f"baseline_{k}": v for k, v in base_scores.items() if k != "n"})

    atomic_write_jsonl(paths.predictions, (
        {"nl": n, "code": r, "prediction": p, "baseline": b}
        for n, r, p, b in zip(nl, refs, predictions, baseline)
    ))
    rows = example_rows(nl, refs, predictions, params.evaluate.n_examples, params.seed)
    atomic_write_text(paths.examples_md, markdown_table(rows))
    plots.examples_table(rows, paths.examples_png)
    atomic_write_json(paths.metrics, {"split": "test", **scores})  # the reported split (stats.json: roles)
    with Run.resume(paths.run_file, params.mlflow) as run:  # the training run: one run, the whole story
        run.log_metrics({f"test_{k}": v for k, v in scores.items()})
        run.log_table({"nl": nl, "reference": refs, "prediction": predictions, "baseline": baseline},
                      "evaluation/predictions.json")
        for artifact in (paths.examples_md, paths.examples_png):
            run.log_artifact(artifact, "evaluation")
    return scores
