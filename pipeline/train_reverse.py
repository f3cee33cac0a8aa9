"""Stage train_reverse: data/tokenized -> models/reverse/ (a code -> description model for reranking)."""

from nmt.stages.runner import run_stage
from nmt.stages.train import train_reverse

if __name__ == "__main__":
    run_stage(train_reverse)
