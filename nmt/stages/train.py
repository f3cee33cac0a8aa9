"""The train and train_reverse stages: data/tokenized -> the best checkpoint, metrics, curve, plot.

A run killed earlier continues from its resume checkpoint, in its MLflow run. Otherwise the
MLflow run is opened first, so an unreachable tracking store fails the stage before any work; its
id goes to ``models/mlflow_run.json`` for the evaluate and export stages. The training itself is
:class:`nmt.training.loop.Trainer`'s.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys

from nmt.config import Params
from nmt.device import resolve_device
from nmt.io import atomic_write_text
from nmt.layout import REVERSE, TrainLayout
from nmt.signals import raise_on_sigterm
from nmt.tracking.provenance import directory_sha256
from nmt.tracking.run import Run
from nmt.training import distributed, resume
from nmt.training.distributed import Dist
from nmt.training.loop import Trainer
from nmt.training.precision import Precision


def find_resume_state(params: Params, paths: TrainLayout, data_sha: str, d: Dist = Dist()) -> dict | None:
    """The resume checkpoint a killed run left, if any and if ``train.resume`` (refused when incompatible)."""
    path = paths.resume_state
    if not path.exists():
        return None
    if not params.train.resume:
        if d.is_main:
            print(f"train.resume is false: starting over (removing {path})", file=sys.stderr)
            resume.remove(path)
        return None
    return resume.load_state(path, resume.fingerprint(params, data_sha))


def train(params: Params, paths: TrainLayout = TrainLayout(), reverse: bool = False) -> dict:
    """Train a model on ``paths.data``; write the best checkpoint, metrics, run facts, curve and plot.

    ``reverse`` trains on the pairs swapped: code -> description (:func:`train_reverse`). Returns
    the run's measurements and facts.
    """
    raise_on_sigterm()
    device = resolve_device(params.train.device, distributed.from_environment().local_rank, "train.device")
    precision = Precision.of(params.train.precision, device)  # fp16 on a CPU: refused before any work
    d = distributed.setup(device, params.train.dist_timeout_s)
    try:
        data_sha = directory_sha256(paths.data)
        state = find_resume_state(params, paths, data_sha, d)
        if not d.is_main:
            run = Run()  # rank 0 alone talks to MLflow
        elif state is not None and state.get("mlflow_run_id"):
            run = Run.reopen(state["mlflow_run_id"], params.mlflow, system_metrics=params.mlflow.system_metrics)
        else:
            name = os.environ.get("DVC_EXP_NAME")
            run = Run.start(params.mlflow, run_name=f"{name or 'train'}-reverse" if reverse else None)
        with run:
            trainer = Trainer(params, paths, run, data_sha, device, d, precision, reverse)
            trainer.start(state)
            result = trainer.fit()
        # The trainer's DDP wrapper holds the process group; if the trainer sits in a reference cycle,
        # `del` alone leaves it to the collector, which may run only at exit, after the group was
        # destroyed: its gloo threads then die joinable ("terminate called without an active
        # exception", SIGABRT on a rank of a run that had succeeded; seen twice in fresh-clone CI).
        del trainer
        gc.collect()
        distributed.finish(d)
        return result
    finally:
        distributed.teardown()


def train_reverse(params: Params, paths: TrainLayout = REVERSE) -> dict:
    """The reverse model: ``reverse.max_steps`` steps on the training pairs swapped (code -> description).

    Same architecture, optimizer and schedule as the forward model (the model and train sections);
    its own batch size (``reverse.batch_tokens``, 0 = the train section's) and R-Drop weight
    (``reverse.rdrop``), so a forward-only lever does not shrink the reverse model's data. One dev
    evaluation at the end on ``reverse.eval_examples`` pairs, its own MLflow run.
    Its log P(description | code) is the lexical reranker's reconstruction score (Yin & Neubig 2019:
    a hypothesis that cannot give its description back has likely lost part of it). With
    ``reverse.max_steps`` 0 it writes only a README saying there is no reverse model.
    """
    paths.models.mkdir(parents=True, exist_ok=True)
    steps = params.reverse.max_steps
    if steps == 0:
        for stale in (paths.best_weights, paths.best_config, paths.run_file, paths.run_facts):
            stale.unlink(missing_ok=True)
        atomic_write_text(paths.models / "README.md", "No reverse model: reverse.max_steps is 0.\n")
        return {}
    (paths.models / "README.md").unlink(missing_ok=True)
    rev = params.reverse
    cfg = dataclasses.replace(params.train, max_steps=steps, eval_every=steps, patience=0,
                              eval_examples=rev.eval_examples, rdrop=rev.rdrop,
                              batch_tokens=rev.batch_tokens or params.train.batch_tokens)
    return train(dataclasses.replace(params, train=cfg), paths, reverse=True)
