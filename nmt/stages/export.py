"""The export stage: a self-contained model directory that `Translator.from_pretrained` loads.

It also carries the training pairs (``retrieval.jsonl.gz``) so that `nmt demo` can show the
retrieval baseline's answer beside the model's.

Its config.json is the trained model's plus a ``"decoding"`` object: the evaluate stage's beam
size, length penalty, output length limits and reranking, which `nmt generate`, `nmt evaluate` and
`Translator.translate` use for every option their caller leaves out, so the directory is scored as
the pipeline scored it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from nmt.checkpoint import read_model_config
from nmt.config import Params
from nmt.data.pairs import iter_jsonl
from nmt.decoding.rerank import LEXICON_FILE
from nmt.decoding.settings import DecodeSettings
from nmt.decoding.translator import REVERSE_FILES
from nmt.io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from nmt.layout import ExportLayout
from nmt.params import to_dict
from nmt.retrieval import PAIRS_FILE, pairs_bytes
from nmt.tracking.registry import log_and_register_model, serving_config
from nmt.tracking.run import Run


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def model_card(params: Params, config: dict, data_stats: dict, train: dict, facts: dict, evaluation: dict) -> str:
    m = to_dict(config["model"])
    score_rows = "\n".join(
        f"| {key} | {evaluation[key]:.2f} | {evaluation.get('baseline_' + key, float('nan')):.2f} |"
        for key in ("bleu", "codexglue_bleu", "chrf", "exact_match", "exact_match_ast", "syntax_valid") if key in evaluation
    )
    splits = data_stats.get("counts", {})
    rerank = f", reranked by {params.evaluate.rerank}" if params.evaluate.rerank != "none" else ""
    if params.evaluate.rerank == "lexical" and params.evaluate.rerank_reconstruction > 0:
        rerank += f" with a reverse model's reconstruction score ({params.reverse.max_steps} steps, code -> description)"
    return f"""# {params.export.name}

An encoder-decoder Transformer trained from scratch (no pretrained weights) with the `nmt`
package, to translate a natural-language description into code.

## Data
Source `{data_stats.get('source')}`; pairs per split: {json.dumps(splits)}.
{data_stats.get('note', '')}

## Model
{m['enc_layers']}+{m['dec_layers']} layers, d_model {m['d_model']}, {m['n_heads']} heads, d_ff {m['d_ff']},
{m['positions']} positions{', pointer-generator copying' if m.get('copy') else ''}, vocabulary {config['vocab_size']} (compact cl100k_base + 256 byte fallback),
{facts.get('parameters', 0):,} parameters. Trained {facts.get('steps')} steps; best dev BLEU
{train.get('best_dev_bleu', 0):.2f} (greedy) at step {facts.get('best_step')}.

## Test scores ({splits.get('test')} pairs, beam {params.evaluate.beam_size}{rerank})
BLEU is sacrebleu corpus BLEU with tokenize='none' over whitespace-split code tokens; the
baseline copies the code of the training pair with the nearest description (TF-IDF).

| metric | model | retrieval baseline |
|---|---|---|
{score_rows}

## Use
```
nmt generate --model models/export "return the absolute value of x"
nmt evaluate --model models/export --data pairs.jsonl --output predictions.jsonl
```
Both decode as the scores above were decoded ({json.dumps(DecodeSettings.from_config(params.evaluate).recorded())}, recorded
in config.json); options given on the command line win.
```python
from nmt import Translator
t = Translator.from_pretrained("models/export")
print(t.translate(["return the absolute value of x"], beam_size=4, n_best=2)[0].text)
```
"""


def export(params: Params, paths: ExportLayout = ExportLayout()) -> Path:
    config = read_model_config(paths.config)  # validated before anything is written
    card = model_card(params, config, read_json(paths.data_stats), read_json(paths.train_metrics),
                      read_json(paths.train_facts), read_json(paths.eval_metrics))
    paths.out.mkdir(parents=True, exist_ok=True)
    _copy(paths.weights, paths.out / "model.safetensors")
    raw_config = read_json(paths.config)
    raw_config["decoding"] = DecodeSettings.from_config(params.evaluate).recorded()
    atomic_write_json(paths.out / "config.json", raw_config)
    _copy(paths.tokenizer, paths.out / "tokenizer.json")
    _copy(paths.lexicon, paths.out / LEXICON_FILE)
    atomic_write_bytes(paths.out / PAIRS_FILE, pairs_bytes((r["nl"], r["code"]) for r in iter_jsonl(paths.train_pairs)))
    reverse = (paths.reverse_weights, paths.reverse_config)
    for src, name in zip(reverse, REVERSE_FILES):
        if all(p.is_file() for p in reverse):
            _copy(src, paths.out / name)
        else:  # no reverse model this time: an earlier export's must not stay behind
            (paths.out / name).unlink(missing_ok=True)
    atomic_write_text(paths.out / "README.md", card)
    if params.export.register:
        register(params, paths)
    return paths.out


def register(params: Params, paths: ExportLayout) -> None:
    """Log the export as a pyfunc into the training run and register it (see nmt.tracking.registry)."""
    with Run.resume(paths.run_file, params.mlflow) as run:
        if not run.enabled:
            print("export: not registered in MLflow (no tracked training run)", file=sys.stderr)
            return
        decode_defaults = DecodeSettings.from_config(params.evaluate).recorded()
        run.log_artifact("dvc.lock")  # the lock of the stages that made this model (export's own comes after)
        select_bleu, test_bleu = read_json(paths.train_metrics)["best_dev_bleu"], read_json(paths.eval_metrics)["bleu"]
        result = run.guarded("the model", lambda: log_and_register_model(
            paths.out, params.export.name, select_bleu, test_bleu, decode_defaults,
            serving_config(params.export.serve_max_batch, params.export.serve_max_wait_ms)))
    if result is None:  # the store stopped answering and mlflow.required is false: warned already
        return
    verdict = ("is the new champion" if result["promoted"] else
               f"stays behind champion v{result['champion_version']} "
               f"(selection-split BLEU {result['champion_select_bleu']:.2f})")
    print(f"export: registered {result['name']} v{result['version']} ({result['model_uri']}); it {verdict}",
          file=sys.stderr)
