"""The whole DVC pipeline in a real temporary DVC repo, on a tiny params override."""

from __future__ import annotations

import json

import yaml

from nmt.config import DECODING_KEYS
from nmt.decoding.translator import Translator

from .conftest import run


def test_repro_writes_every_declared_output(pipeline_repo):
    root, _ = pipeline_repo
    params = yaml.safe_load((root / "params.yaml").read_text())
    for path in ["models/train_run.json", "data/raw/train.jsonl", "data/raw/stats.json", "data/tokenized/vocab.json",
                 "data/tokenized/train.safetensors", "models/best.safetensors", "models/best.json",
                 "metrics/train.json", "metrics/train_curve.csv", "plots/bleu.png", "metrics/eval.json",
                 "data/eval/predictions.jsonl", "plots/examples.md", "plots/examples.png",
                 "models/export/model.safetensors", "models/export/config.json",
                 "models/export/tokenizer.json", "models/export/README.md", "models/export/lexicon.json",
                 "models/export/retrieval.jsonl.gz",
                 "data/tokenized/lexicon.json", "models/reverse/README.md", "dvc.lock"]:
        assert (root / path).is_file(), path
    assert not (root / "models/export/reverse.safetensors").exists()  # reverse.max_steps is 0 by default
    evaluation = json.loads((root / "metrics/eval.json").read_text())
    for key in ("bleu", "codexglue_bleu", "chrf", "exact_match", "baseline_bleu", "baseline_exact_match"):
        assert key in evaluation
    # Settings are not metrics: `dvc metrics diff` must never report a beam size or a count as a result.
    train_metrics = json.loads((root / "metrics/train.json").read_text())
    for measured in (evaluation, train_metrics):
        assert not {"beam_size", "n", "steps", "best_step", "epochs", "parameters", "world_size",
                    "mlflow_run_id", "device", "precision"} & set(measured)
    facts = json.loads((root / "models/train_run.json").read_text())
    assert facts["steps"] == params["train"]["max_steps"] and facts["parameters"] > 0 and facts["world_size"] == 1
    # Each metrics file names the split it scores; stats.json says which one selects and which reports.
    assert evaluation["split"] == "test"
    assert json.loads((root / "metrics/train.json").read_text())["split"] == "dev"
    assert json.loads((root / "data/raw/stats.json").read_text())["roles"] == {
        "train": "training", "dev": "selection", "test": "report"}
    assert params["evaluate"]["beam_size"] > 1  # the shipped default decodes with beam search ...
    assert {"greedy_bleu", "greedy_exact_match"} <= set(evaluation)  # ... and greedy stands beside it
    predictions = [json.loads(l) for l in (root / "data/eval/predictions.jsonl").read_text().splitlines()]
    test = [json.loads(l) for l in (root / "inputs/test.jsonl").read_text().splitlines()]
    assert [p["nl"] for p in predictions] == [t["nl"] for t in test]  # one per test pair, in test order
    curve = (root / "metrics/train_curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,") and len(curve) == 3  # header + evaluations at steps 20 and 40


def test_second_repro_is_a_no_op(pipeline_repo):
    root, env = pipeline_repo
    proc = run(["dvc", "repro"], root, env)
    assert "up to date" in proc.stdout.lower()
    assert "Running stage" not in proc.stdout


def test_exported_model_loads_and_translates(pipeline_repo):
    root, _ = pipeline_repo
    translator = Translator.from_pretrained(root / "models/export", device="cpu")
    out = translator.translate(["print x"], max_len_b=8)
    assert isinstance(out[0].text, str)
    # The evaluate stage's decoding settings travel with the export, as its defaults.
    evaluate = yaml.safe_load((root / "params.yaml").read_text())["evaluate"]
    assert translator.defaults.recorded() == {k: evaluate[k] for k in DECODING_KEYS}
    assert json.loads((root / "models/export/config.json").read_text())["decoding"]["beam_size"] == 4


def test_changing_an_evaluate_param_reruns_only_what_depends_on_it(pipeline_repo):
    root, env = pipeline_repo
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["evaluate"]["n_examples"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run(["dvc", "repro"], root, env)
    ran = {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")}
    # The example table changed; the scores did not, so export (which reads them) is skipped too.
    assert ran == {"evaluate"}
    assert len((root / "plots/examples.md").read_text().splitlines()) == 2 + 2


def test_the_levers_run_through_the_pipeline(pipeline_repo):
    """String placeholders, weight averaging, lexical reranking with a reverse model's reconstruction
    score and literal prefixes on: every stage reruns and uses them, and the export decodes as the
    evaluate stage did."""
    root, env = pipeline_repo
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tokenize"]["string_placeholders"] = True
    params["train"]["ema_decay"] = 0.9
    params["reverse"]["max_steps"] = 20
    params["evaluate"].update(rerank="lexical", literal_prefixes=True, rerank_reconstruction=0.5)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run(["dvc", "repro"], root, env)
    ran = {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"tokenize", "train", "train_reverse", "evaluate", "export"}
    assert json.loads((root / "models/reverse/train_run.json").read_text())["steps"] == 20
    assert not (root / "models/reverse/README.md").exists()
    assert json.loads((root / "data/tokenized/vocab.json").read_text())["string_placeholders"] is True
    assert (root / "data/tokenized/literals.json").is_file()
    evaluation = json.loads((root / "metrics/eval.json").read_text())
    assert {"top1_exact_match", "greedy_exact_match", "exact_match"} <= set(evaluation)
    export = Translator.from_pretrained(root / "models/export", device="cpu")
    assert export.tokenizer.string_placeholders and export.defaults.rerank == "lexical"
    assert export.defaults.literal_prefixes is True and export.lexicon is not None
    assert export.reverse is not None and export.defaults.rerank_reconstruction == 0.5
    predictions = [json.loads(l) for l in (root / "data/eval/predictions.jsonl").read_text().splitlines()]
    again = export.translate([p["nl"] for p in predictions])
    assert [t.text for t in again] == [p["prediction"] for p in predictions]
