"""Every path the pipeline's stages read and write, in one place: the file contracts of dvc.yaml.

Each stage takes its layout as an argument with these defaults, so the tests (and the reverse
model, which trains into ``models/reverse``) point a stage at other directories without patching.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RAW = Path("data/raw")  # download: {train,dev,test}.jsonl, stats.json
TOKENIZED = Path("data/tokenized")  # tokenize: vocab.json, {split}.safetensors, stats.json, lexicon.json
RUN_FILE = Path("models/mlflow_run.json")  # train: the MLflow run id, for evaluate and export to log into


@dataclass
class TrainLayout:
    """Where the train stage (and train_reverse) reads and writes."""

    data: Path = TOKENIZED
    raw: Path = RAW  # stats.json: the code's language (Python dev lines also score the same syntax tree)
    models: Path = Path("models")
    metrics: Path = Path("metrics")
    plots: Path = Path("plots")
    # The resume checkpoint's folder lives under this one (models/resume/); it must not be a DVC output:
    # DVC deletes a stage's outputs before running it again, and a resumed run must find it.
    resume_root: Path | None = None

    @property
    def resume_state(self) -> Path:
        return (self.resume_root or self.models) / "resume" / "state.pt"

    @property
    def best_weights(self) -> Path:
        return self.models / "best.safetensors"

    @property
    def best_config(self) -> Path:
        return self.models / "best.json"

    @property
    def run_facts(self) -> Path:
        """Steps, epochs, best step, parameter count...: what the run was, apart from its metrics."""
        return self.models / "train_run.json"

    @property
    def run_file(self) -> Path:
        """The MLflow run id, handed to the evaluate and export stages."""
        return self.models / RUN_FILE.name


REVERSE = TrainLayout(models=Path("models/reverse"), metrics=Path("models/reverse"), plots=Path("models/reverse"),
                      resume_root=Path("models/reverse-resume"))


@dataclass
class EvaluateLayout:
    raw: Path = RAW
    tokenizer: Path = TOKENIZED / "vocab.json"
    lexicon: Path = TOKENIZED / "lexicon.json"
    weights: Path = Path("models/best.safetensors")
    config: Path = Path("models/best.json")
    reverse_weights: Path = REVERSE.best_weights
    reverse_config: Path = REVERSE.best_config
    predictions: Path = Path("data/eval/predictions.jsonl")
    metrics: Path = Path("metrics/eval.json")
    examples_md: Path = Path("plots/examples.md")
    examples_png: Path = Path("plots/examples.png")
    run_file: Path = RUN_FILE


@dataclass
class ExportLayout:
    weights: Path = Path("models/best.safetensors")
    config: Path = Path("models/best.json")
    tokenizer: Path = TOKENIZED / "vocab.json"
    lexicon: Path = TOKENIZED / "lexicon.json"
    reverse_weights: Path = REVERSE.best_weights  # absent when reverse.max_steps is 0
    reverse_config: Path = REVERSE.best_config
    data_stats: Path = RAW / "stats.json"
    train_pairs: Path = RAW / "train.jsonl"  # the retrieval baseline's pairs, carried for `nmt demo`
    train_metrics: Path = Path("metrics/train.json")
    train_facts: Path = Path("models/train_run.json")
    eval_metrics: Path = Path("metrics/eval.json")
    out: Path = Path("models/export")
    run_file: Path = RUN_FILE
