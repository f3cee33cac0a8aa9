"""Stage download: data.source -> data/raw/{train,dev,test}.jsonl + stats.json."""

from nmt.stages.download import download
from nmt.stages.runner import run_stage

if __name__ == "__main__":
    run_stage(download)
