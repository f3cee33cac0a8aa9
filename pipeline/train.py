"""Stage train: data/tokenized -> models/best.*, metrics/train.json, metrics/train_curve.csv, plots/bleu.png."""

from nmt.stages.runner import run_stage
from nmt.stages.train import train

if __name__ == "__main__":
    run_stage(train)
