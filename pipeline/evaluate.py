"""Stage evaluate: decode the test split -> metrics/eval.json, data/eval/predictions.jsonl, plots/examples.*."""

from nmt.stages.evaluate import evaluate
from nmt.stages.runner import run_stage

if __name__ == "__main__":
    run_stage(evaluate)
