"""The evaluate stage: decode the test split, score it, and set it beside a retrieval baseline."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from nmt import metrics, plots
from nmt.config import Params, decoding_of
from nmt.io import (
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    read_json,
    read_jsonl,
)
from nmt.retrieval import RetrievalBaseline
from nmt.tracking.run import Run
from nmt.decoding.translator import DecodeSettings, Translation, Translator


@dataclass
class Paths:
    raw: Path = Path("data/raw")
    tokenizer: Path = Path("data/tokenized/vocab.json")
    lexicon: Path = Path("data/tokenized/lexicon.json")
    weights: Path = Path("models/best.safetensors")
    config: Path = Path("models/best.json")
    reverse_weights: Path = Path("models/reverse/best.safetensors")
    reverse_config: Path = Path("models/reverse/best.json")
    predictions: Path = Path("data/eval/predictions.jsonl")
    metrics: Path = Path("metrics/eval.json")
    examples_md: Path = Path("plots/examples.md")
    examples_png: Path = Path("plots/examples.png")
    run_file: Path = Path("models/mlflow_run.json")


def language_of(raw_dir: Path) -> str:
    """Python for the stdlib and Django sources, Java for CONCODE; unknown for the user's own files."""
    source = read_json(raw_dir / "stats.json").get("source")
    return {"stdlib": "python", "django": "python", "concode": "java"}.get(source, "unknown")


def predict(translator: Translator, nl: list[str], params: Params, beam_size: int, n_best: int = 1,
            rerank: str = "none") -> list[Translation]:
    """Decode with the evaluate settings (and the translator's reranking weights, set from them)."""
    cfg = params.evaluate
    return translator.translate(nl, beam_size=beam_size, n_best=n_best, max_len_a=cfg.max_len_a,
                                max_len_b=cfg.max_len_b, length_penalty=cfg.length_penalty,
                                batch_size=cfg.batch_size, rerank=rerank, literal_prefixes=cfg.literal_prefixes)


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


def evaluate(params: Params, paths: Paths = Paths()) -> dict:
    train = read_jsonl(paths.raw / "train.jsonl")
    test = read_jsonl(paths.raw / "test.jsonl")
    nl, refs = [r["nl"] for r in test], [r["code"] for r in test]

    cfg = params.evaluate
    decoding = decoding_of(cfg)
    settings = DecodeSettings(**decoding)  # what the reranking needs loaded: the translator's rule
    translator = Translator.from_files(paths.weights, paths.config, paths.tokenizer, device=params.train.device,
                                       lexicon=paths.lexicon if settings.rerank == "lexical" else None,
                                       reverse=(paths.reverse_weights, paths.reverse_config)
                                       if settings.reconstructs else None)
    translator.decoding.update(decoding)  # the reranking weights, as the export will record them
    reranked = cfg.rerank != "none" and cfg.beam_size > 1
    # One decode serves both the reranked predictions and the beam's own top hypotheses: reranking
    # reorders the whole n-best and keeps the model's scores, so the best-scoring one is the beam's top.
    beam = predict(translator, nl, params, cfg.beam_size, n_best=cfg.beam_size if reranked else 1, rerank=cfg.rerank)
    predictions = [t.text for t in beam]
    baseline = RetrievalBaseline().fit([r["nl"] for r in train], [r["code"] for r in train]).predict(nl)

    # Measurements only: the beam size is a parameter (params.yaml), the pair count data/raw/stats.json's.
    scores = {k: v for k, v in metrics.score(predictions, refs, language_of(paths.raw)).items() if k != "n"}
    if reranked:
        # The beam's best-scoring hypotheses beside the reranked ones: what reranking adds.
        top = [max(t.n_best, key=lambda c: c[1])[0] for t in beam]
        top_scores = metrics.score(top, refs, language_of(paths.raw))
        scores.update({f"top1_{k}": v for k, v in top_scores.items() if k != "n"})
    if cfg.beam_size > 1:
        # Greedy beside beam, so the report shows what the search adds.
        greedy = [t.text for t in predict(translator, nl, params, 1)]
        greedy_scores = metrics.score(greedy, refs, language_of(paths.raw))
        scores.update({f"greedy_{k}": v for k, v in greedy_scores.items() if k != "n"})
    base_scores = metrics.score(baseline, refs, language_of(paths.raw))
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
