"""Training throughput and MFU of the train stage per ``train.precision`` (and with ``train.compile``).

    python -m benchmarks.precision               # on the GPU if there is one, else the CPU
    python -m benchmarks.precision --steps 20    # shorter

The real training loop (:func:`nmt.stages.train.train`: autocast, GradScaler, pinned batches, the MFU it
writes to ``metrics/train.json``) on the default model shape, over synthetic pairs (the tests'
templates), with 16,384-token batches and MLflow off. One JSON line per setting. On a CPU fp16 is
skipped (the train stage refuses it) and so is compiling (minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from nmt.layout import TrainLayout
from nmt.params import params_from_dict
from nmt.stages.train import train
from tests.conftest import tokenized_data

SETTINGS = ({"precision": "fp32"}, {"precision": "auto"}, {"precision": "bf16"}, {"precision": "fp16"},
            {"precision": "auto", "compile": True})
KEYS = ("precision", "device", "train_tokens_per_s", "train_flops_per_s", "peak_flops", "mfu", "data_wait_share",
        "train_seconds", "scaler_skipped_steps", "best_dev_bleu")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-tokens", type=int, default=16384)
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    root = Path(tempfile.mkdtemp())
    data = tokenized_data(root, (4000, 50, 12))
    for i, setting in enumerate(SETTINGS):
        if not cuda and (setting["precision"] == "fp16" or setting.get("compile")):
            continue
        params = params_from_dict({
            "seed": 0, "model": {"max_len": 128}, "mlflow": {"enabled": False},
            "train": {"max_steps": args.steps, "batch_tokens": args.batch_tokens, "eval_every": args.steps,
                      "eval_examples": 50, "eval_max_len": 24, "checkpoint_every": 10**6, **setting},
        })
        out = root / f"run{i}"
        start = time.perf_counter()
        summary = train(params, TrainLayout(data=data, models=out / "models", metrics=out / "metrics",
                                            plots=out / "plots"))
        print(json.dumps({"setting": setting, "wall_s": round(time.perf_counter() - start, 1),
                          **{k: summary[k] for k in KEYS}}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
