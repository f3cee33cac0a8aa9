"""Stage download: data.source -> data/raw/{train,dev,test}.jsonl + stats.json."""

from pathlib import Path

from nmt.stages.download import prepare_data
from nmt.stages.runner import run_stage

if __name__ == "__main__":
    run_stage(lambda params: prepare_data(params.data, Path("data/raw")))
