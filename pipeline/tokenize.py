"""Stage tokenize: data/raw -> compact cl100k vocabulary, id files and the reranker's lexicon in data/tokenized."""

from pathlib import Path

from nmt.stages.tokenize import tokenize_dataset
from nmt.decoding.rerank import LEXICON_FILE, write_lexicon
from nmt.stages.runner import run_stage

RAW, OUT = Path("data/raw"), Path("data/tokenized")


def tokenize(params) -> None:
    tokenize_dataset(RAW, OUT, params.tokenize)
    write_lexicon(RAW / "train.jsonl", OUT / LEXICON_FILE)


if __name__ == "__main__":
    run_stage(tokenize)
