"""Stage download: data.source -> data/raw/{train,dev,test}.jsonl + stats.json."""

from pathlib import Path

from nmt.data.prepare import prepare_data
from nmt.stage import run_stage

if __name__ == "__main__":
    run_stage(lambda params: prepare_data(params.data, Path("data/raw")))
