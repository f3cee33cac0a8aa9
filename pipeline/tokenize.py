"""Stage tokenize: data/raw -> compact cl100k vocabulary and id files in data/tokenized."""

from pathlib import Path

from nmt.encode_data import tokenize_dataset
from nmt.stage import run_stage

if __name__ == "__main__":
    run_stage(lambda params: tokenize_dataset(Path("data/raw"), Path("data/tokenized"), params.tokenize))
